"""Metrics of delayed messages (served by ``streams relay``, which runs the pump)."""

from __future__ import annotations

from streams.metrics import counter, gauge, histogram

DELIVERED = counter(
    "streams_delayed_delivered_total",
    "Delayed messages published when due and acknowledged by the broker.",
    ("topic",),
)
LATENESS = histogram(
    "streams_delayed_lateness_seconds",
    "Time from a delayed message's due time to the broker's acknowledgement.",
)
PUBLISH_ERRORS = counter(
    "streams_delayed_publish_errors_total",
    "Delayed messages the broker did not acknowledge (kept, retried with backoff).",
)
PENDING = gauge(
    "streams_delayed_pending",
    "Delayed messages stored and not yet published (sampled once a minute).",
)
