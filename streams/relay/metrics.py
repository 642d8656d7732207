"""The relay's metrics (served by ``streams relay`` on ``STREAMS_METRICS_PORT``)."""

from __future__ import annotations

from streams.metrics import counter, gauge, histogram

ROWS_PUBLISHED = counter(
    "streams_relay_rows_published_total",
    "Outbox rows published and acknowledged by the broker, then deleted.",
    ("table",),
)
ROWS_COALESCED = counter(
    "streams_relay_rows_coalesced_total",
    "Older outbox rows deleted without being published (a newer row of the object was).",
    ("table",),
)
ROWS_DEAD_LETTERED = counter(
    "streams_relay_rows_dead_lettered_total",
    "Outbox rows that could not be encoded or produced, sent to dead-letters and deleted.",
    ("table",),
)
SHARDS_RESCHEDULED = counter(
    "streams_relay_shards_rescheduled_total",
    "Shards whose publish failed and that were pushed back with backoff.",
    ("table",),
)
OLDEST_PENDING = gauge(
    "streams_relay_oldest_pending_seconds",
    "Age of the oldest row still in the outbox table (0 when empty).",
    ("table",),
)
MAX_SHARD_DEPTH = gauge(
    "streams_relay_max_shard_depth",
    "Rows queued in the deepest shard of the outbox table.",
    ("table",),
)
QUEUED_ROWS = gauge("streams_relay_queued_rows", "Rows in the outbox table.", ("table",))
BATCH_SECONDS = histogram(
    "streams_relay_batch_seconds",
    "Time of one claim-publish-delete transaction.",
    ("table",),
)
