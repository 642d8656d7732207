"""Metrics of buffered increments (names listed in ``streams.metrics.MetricName``)."""

from __future__ import annotations

from streams.metrics import counter, gauge, histogram

INCREMENTS = counter(
    "streams_buffer_increments_total", "Increments taken into a flush window.", ("model",)
)
REPLAYED = counter(
    "streams_buffer_replayed_total",
    "Increments read again after a crash or rebalance and skipped: already applied.",
)
ROWS = counter(
    "streams_buffer_rows_flushed_total",
    "Rows flushed, by outcome (written, signalled, parked).",
    ("model", "outcome"),
)
STATEMENTS = counter(
    "streams_buffer_statements_total",
    "SQL statements executed by flushes: row = one UPDATE per row per window, "
    "mark = the flush-mark compare-and-set.",
    ("kind",),
)
FLUSHES = counter("streams_buffer_flushes_total", "Flush transactions, by outcome.", ("outcome",))
FLUSH_SECONDS = histogram("streams_buffer_flush_seconds", "Time of one flush transaction.")
PENDING_ROWS = gauge("streams_buffer_pending_rows", "Rows waiting in open flush windows.")
HELD = gauge(
    "streams_buffer_held_messages",
    "Consumed messages whose commit waits for their window's flush.",
)
