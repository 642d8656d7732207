"""Faust agents: one module per agent, each reading top to bottom: topic, tables, handler."""

from streams.silo import REGION_ONLY, SiloMode

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

# Agents whose spec says ``direct=True``: with STREAMS_DIRECT_CONSUMERS on (the default)
# each reads through librdkafka in its own group ``<app id>.<name>``
# (streams/agents/wrapper/direct.py), so the manifests' KEDA triggers name these groups
# too. tests/agents/test_direct.py checks this list against the installed specs.
DIRECT_AGENTS: dict[str, frozenset[SiloMode]] = {
    "invalidation": REGION_ONLY,
    "project-configs-served": REGION_ONLY,  # follows Faust's table assignment, no group
    "resource_changes": REGION_ONLY,
    "webhook_delivery": REGION_ONLY,
    "webhook_retry": REGION_ONLY,
}
