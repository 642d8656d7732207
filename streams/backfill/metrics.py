"""The backfill's metrics."""

from __future__ import annotations

import contextlib
import threading

from streams.metrics import counter, gauge

LOWER_BOUND = gauge(
    "streams_backfill_lower_bound",
    "Next id to backfill per table, labelled with the replication version being reached.",
    ("table", "version"),
)
BATCHES = counter(
    "streams_backfill_batches_total",
    "Backfill batches by outcome (emitted, processed, stale).",
    ("table", "outcome"),
)
ROWS = counter(
    "streams_backfill_rows_total", "Instances whose outbox row(s) the backfill wrote.", ("table",)
)

_versions: dict[str, str] = {}
_lock = threading.Lock()


def set_lower_bound(table: str, lower: int, version: int) -> None:
    """Set the gauge, dropping the series of the version the table has left."""
    v = str(version)
    with _lock:
        old = _versions.get(table)
        if old is not None and old != v:
            with contextlib.suppress(KeyError):
                LOWER_BOUND.remove(table, old)
        _versions[table] = v
    LOWER_BOUND.labels(table, v).set(lower)
