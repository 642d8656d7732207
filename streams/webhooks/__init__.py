"""Webhooks: payloads, signatures, the SSRF guard, the HTTP sender and the circuit breaker.

Nothing here imports Faust; the agents in ``streams.agents.resource_changes`` and
``streams.agents.webhook_delivery`` glue these pieces to the topics.
"""
