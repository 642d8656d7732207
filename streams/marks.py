"""Offset marks kept in PostgreSQL: recognising a log they were not written against,
and resolving a commit whose outcome was lost with its connection.

A mark (a buffer's flush mark, a replayed dead letter) names a position in one
partition's log. A broker restart on the embedded broker (docs/broker.md #6), or a
topic deleted and recreated in production, starts the partition at offset 0 again
while PostgreSQL keeps the marks: a mark then sits beyond the new log's end, and
new messages below it would look "already applied". ``beyond_end`` finds such marks
against the partition's *true* end (Tansu's reported end is short: docs/broker.md #2);
``report_reset`` makes each one loud (an error log, a metric, the alert
``StreamsOffsetMarkReset``). The caller then voids the mark and carries on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Protocol

from confluent_kafka import Consumer

from streams import kafka_config
from streams.metrics import counter
from streams.offsets import true_end_offsets
from streams.settings import Settings

log = logging.getLogger(__name__)

RESETS = counter(
    "streams_offset_mark_resets_total",
    "Offset marks kept in PostgreSQL found beyond their partition's end (a new log: "
    "broker restart, topic recreated) and voided, by kind of mark and topic.",
    ("kind", "topic"),
)
RESOLVED = counter(
    "streams_commit_outcomes_resolved_total",
    "Commits whose outcome was lost with the connection, resolved by re-reading the "
    "mark: outcome = committed or not_committed.",
    ("kind", "outcome"),
)


class LogEnds(Protocol):
    """The true end offset (one past the last record) of partitions of a topic."""

    async def __call__(self, topic: str, partitions: Sequence[int]) -> dict[int, int]: ...


class KafkaLogEnds:
    """``LogEnds`` read from the broker with a consumer of its own (assign only, no group)."""

    def __init__(self, settings: Settings, *, timeout: float = 5.0) -> None:
        self._settings = settings
        self._timeout = timeout
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None

    async def __call__(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        return await asyncio.to_thread(self.read, topic, partitions)

    def read(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        """Blocking form of the probe."""
        with self._lock:
            if self._consumer is None:
                group = f"{self._settings.app_id}-log-ends-{uuid.uuid4().hex[:8]}"
                self._consumer = Consumer(kafka_config.consumer(self._settings, group))
            try:
                ends = true_end_offsets(
                    self._consumer, [(topic, p) for p in partitions], self._timeout
                )
            except Exception:
                # A consumer that saw its broker vanish is not trusted again.
                self._consumer.close()
                self._consumer = None
                raise
        return {p: hi for (_, p), (_, hi) in ends.items()}

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


def beyond_end(marks: Mapping[int, int], ends: Mapping[int, int]) -> dict[int, int]:
    """Partitions whose mark is past the partition's true end: partition -> end.

    On the log a mark was written against the end never falls below it (offsets only
    grow), so a mark past the end belongs to another log.
    """
    return {p: ends[p] for p, mark in marks.items() if p in ends and mark > ends[p]}


def report_reset(kind: str, topic: str, partition: int, mark: int, end: int) -> None:
    """Log and count one voided mark (the caller voids it and carries on)."""
    RESETS.labels(kind, topic).inc()
    log.error(
        "marks.reset.detected",
        extra={
            "kind": kind,
            "topic": topic,
            "partition": partition,
            "mark": mark,
            "log_end": end,
            "action": "mark voided: the new log is applied from its start",
        },
    )


def resolved(kind: str, committed: bool) -> None:
    """Count one commit outcome learnt by re-reading the mark after a lost connection."""
    RESOLVED.labels(kind, "committed" if committed else "not_committed").inc()
    log.warning("marks.commit.resolved", extra={"kind": kind, "committed": committed})
