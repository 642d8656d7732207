"""Faust agents: one module per agent, each reading top to bottom: topic, tables, handler."""

# Modules whose ``install(app, runtime)`` the worker calls, in order.
BUILTIN_AGENT_MODULES: list[str] = [
    "streams.agents.backfill",
    "streams.agents.invalidation",
    "streams.agents.project_configs",
    "streams.agents.resource_changes",
    "streams.agents.webhook_delivery",
    "streams.agents.buffers",
    "streams.agents.jobs",
    "streams.agents.schedules",
]
