"""Offset marks kept in PostgreSQL: recognising a log they were not written against,
and resolving a commit whose outcome was lost with its connection.

A mark (a buffer's flush mark, a replayed dead letter) names a position in one
partition's log. A broker restart on the embedded broker (docs/broker.md #6), or a
topic deleted and recreated in production, starts the partition at offset 0 again
while PostgreSQL keeps the marks: a mark then sits beyond the new log's end, and
new messages below it would look "already applied". ``beyond_end`` finds such marks
against the partition's *true* end (Tansu's reported end is short: docs/broker.md #2).
A new log may also have grown past an old mark before anyone looked: a mark that
keeps the timestamp of the record just below it is recognised then too, by reading
that record (``other_record``). ``report_reset`` makes each one loud (an error log, a
metric, the alert ``StreamsOffsetMarkReset``). The caller then voids the mark and
carries on.
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
from streams.offsets import record_timestamps, true_end_offsets
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


class LogStamps(Protocol):
    """The timestamp (ms) of the record at an offset of each partition of a topic;
    None where there is no record to read (gone, or the log is shorter)."""

    async def __call__(self, topic: str, offsets: Mapping[int, int]) -> dict[int, int | None]: ...


class KafkaLogEnds:
    """``LogEnds`` (and ``LogStamps``: ``timestamps``) read from the broker with a
    consumer of its own (assign only, no group)."""

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
            consumer = self._open()
            try:
                ends = true_end_offsets(consumer, [(topic, p) for p in partitions], self._timeout)
            except Exception:
                self._drop()
                raise
        return {p: hi for (_, p), (_, hi) in ends.items()}

    async def timestamps(self, topic: str, offsets: Mapping[int, int]) -> dict[int, int | None]:
        return await asyncio.to_thread(self.read_timestamps, topic, offsets)

    def read_timestamps(self, topic: str, offsets: Mapping[int, int]) -> dict[int, int | None]:
        """Blocking form of ``timestamps``."""
        with self._lock:
            consumer = self._open()
            try:
                stamps = record_timestamps(
                    consumer, [(topic, p, o) for p, o in offsets.items()], self._timeout
                )
            except Exception:
                self._drop()
                raise
        return {p: ts for (_, p), ts in stamps.items()}

    def _open(self) -> Consumer:
        if self._consumer is None:
            group = f"{self._settings.app_id}-log-ends-{uuid.uuid4().hex[:8]}"
            self._consumer = Consumer(kafka_config.consumer(self._settings, group))
        return self._consumer

    def _drop(self) -> None:
        # A consumer that saw its broker vanish is not trusted again.
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

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


def other_record(
    marks: Mapping[int, int], stored: Mapping[int, int | None], found: Mapping[int, int | None]
) -> set[int]:
    """Partitions whose mark was written against another log although it is not past
    the end: the record just below the mark (offset mark - 1) is still in the log but
    has another timestamp than the one stored with the mark. A new log that has grown
    past an old mark before anyone looked is only recognisable this way."""
    return {
        p
        for p, mark in marks.items()
        if mark > 0
        and stored.get(p) is not None
        and found.get(p) is not None
        and found[p] != stored[p]
    }


def report_reset(
    kind: str, topic: str, partition: int, mark: int, end: int, *, why: str = "beyond_end"
) -> None:
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
            "evidence": why,
            "action": "mark voided: the new log is applied from its start",
        },
    )


def resolved(kind: str, committed: bool) -> None:
    """Count one commit outcome learnt by re-reading the mark after a lost connection."""
    RESOLVED.labels(kind, "committed" if committed else "not_committed").inc()
    log.warning("marks.commit.resolved", extra={"kind": kind, "committed": committed})
