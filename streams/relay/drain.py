"""Draining one id range of one outbox table: claim, publish, wait for acks, delete.

One transaction per batch: it claims shards (head-row locks), publishes their rows,
waits for the broker's acknowledgements, deletes what was acknowledged and pushes back
the shards that failed, then commits. A crash before the commit leaves the rows in
place, so they are published again, with the same outbox id (at least once, never lost).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from confluent_kafka import KafkaException
from psycopg_pool import ConnectionPool

from streams import metrics
from streams.dlq import dead_rows
from streams.dlq.headers import Failure, FailureReason, Letter
from streams.dlq.sink import KafkaDeadLetterSink
from streams.outbox.categories import OutboxTable
from streams.publisher import Publisher
from streams.relay import claim, outcome
from streams.relay import metrics as m
from streams.relay.acks import BatchAcks
from streams.relay.encode import BatchEncoder
from streams.relay.messages import Group, Row, ShardKey, coalesce, headers_for
from streams.relay.producer import PublisherSlot

log = logging.getLogger(__name__)

_SEND_RAW = Publisher.send_raw


@dataclass
class DrainStats:
    batches: int = 0
    published: int = 0
    coalesced: int = 0
    dead_lettered: int = 0
    rescheduled: int = 0
    regular_rows: int = 0
    backfill_rows: int = 0
    batch_seconds: list[float] = field(default_factory=list)  # one per batch transaction

    def add(self, other: DrainStats) -> None:
        """Add ``other``'s counts (not its batch timings: a relay's totals keep none)."""
        for name in self.__dataclass_fields__:
            if name != "batch_seconds":
                setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def work(self) -> int:
        return self.published + self.dead_lettered + self.coalesced + self.rescheduled


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


class Drainer:
    """Drains id ranges of one outbox table; safe to run in several threads at once."""

    def __init__(
        self,
        table: OutboxTable,
        pool: ConnectionPool,
        publishers: PublisherSlot,
        *,
        batch_size: int,
        publish_timeout: float,
        slot: str,
        stop: StopFlag | None = None,
        letters: PublisherSlot | None = None,
    ) -> None:
        self.table = table
        self.pool = pool
        self.publishers = publishers
        # Dead letters need a success report each (the sink counts them on it): they go
        # through a publisher that reports every delivery, unlike the outbox producer.
        self.letters = letters or publishers
        self.batch_size = batch_size
        self.publish_timeout = publish_timeout
        self.slot = slot
        self.stop = stop or threading.Event()
        self._prefix = publishers.get().settings.topic_prefix
        self._labels = table.name

    def drain_range(self, lo: int, hi: int, part: claim.Part = claim.WHOLE) -> DrainStats:
        """Drain every due shard of ``part`` with rows in [lo, hi] until none is left
        this pass (parts split the shards, so several drain one id range at once)."""
        total = DrainStats()
        excluded: set[ShardKey] = set()  # locked elsewhere, not due, or failed this pass
        cursor = lo
        while not self.stop.is_set():
            try:
                with self.pool.connection() as conn:
                    found, cursor, stats = self._batch(conn, cursor, hi, excluded, part)
            except outcome.CommitUnknown as lost:
                # Learnt on a new connection (the lost one went back to the pool broken).
                log.warning("relay.commit.unknown", extra={"error": repr(lost.error)})
                outcome.resolve(self.pool, self.table, lost.settled)
                found, cursor, stats = True, lost.cursor, lost.settled.stats
                with self.pool.connection() as conn:
                    self._count_drained(stats, conn)
            if stats is not None:
                total.add(stats)
                total.batch_seconds += stats.batch_seconds  # replayed by a worker's parent
                self._count(stats)
            if not found:
                break
        return total

    def _batch(
        self,
        conn: psycopg.Connection[Any],
        cursor: int,
        hi: int,
        excluded: set[ShardKey],
        part: claim.Part,
    ) -> tuple[bool, int, DrainStats | None]:
        """One claim-publish-delete transaction; returns (rows seen, next cursor, stats).

        Raises ``CommitUnknown`` when the connection was lost during its COMMIT.
        """
        done: list[outcome.Settled] = []  # filled once the batch's writes are issued
        try:
            with conn.transaction():
                sc = claim.scan(conn, self.table, cursor, hi, self.batch_size, part=part)
                if sc.last_id is None:
                    return False, cursor, None
                fresh = [s for s in sc.shards if s not in excluded]
                if not fresh:
                    return True, sc.last_id + 1, None
                cursor = min(sc.shards[s] for s in fresh)
                claimed = claim.lock_heads(conn, self.table, [sc.shards[s] for s in fresh])
                excluded.update(s for s in fresh if s not in claimed)
                if not claimed:
                    return True, cursor, None
                started = time.perf_counter()
                rows = claim.fetch_rows(
                    conn, self.table, claimed.values(), sc.last_id, self.batch_size
                )
                stats, failed, deletable, parked = self._publish(rows)
                excluded.update(failed)
                steps = (
                    claim.backoff_steps(conn, self.table, [claimed[s] for s in failed])
                    if failed
                    else {}
                )
                settled = outcome.Settled(stats, deletable, _kept(parked, deletable), steps)
                claim.delete(conn, self.table, settled.deletable)
                dead_rows.park(conn, settled.parked)
                claim.reschedule(conn, self.table, settled.reschedule)
                done.append(settled)
        except psycopg.OperationalError as exc:
            if not done:
                raise  # lost before COMMIT: nothing committed, the rows go out again
            raise outcome.CommitUnknown(done[0], cursor, exc) from exc
        stats.batch_seconds.append(time.perf_counter() - started)
        self._count_drained(stats, conn)
        return True, cursor, stats

    def _count_drained(self, stats: DrainStats, conn: psycopg.Connection[Any]) -> None:
        """Add the batch's rows to this minute's drained counts (the backfill budget)."""
        if stats.regular_rows or stats.backfill_rows:
            with conn.transaction():
                claim.count_drained(
                    conn, self.table, self.slot, stats.regular_rows, stats.backfill_rows
                )

    def _publish(
        self, rows: Sequence[Row]
    ) -> tuple[DrainStats, set[ShardKey], list[int], list[Letter]]:
        """Publish the batch, flush it once and settle it; the caller deletes, parks the
        dead letters too large for the topic (returned last) and reschedules."""
        publisher = self.publishers.get()
        encoder = BatchEncoder(
            self.table, publisher.codec, self._prefix, publisher.settings.producer_name
        )
        groups = coalesce(rows)
        acks = BatchAcks()
        sent: dict[int, str] = {}  # group -> topic, for the groups produced
        dead: set[int] = set()  # the groups dead-lettered
        parked: list[Letter] = []  # dead letters too large for the topic: kept in PostgreSQL
        send = publisher.send_raw
        # Straight to librdkafka unless a subclass wants to see every message (tests,
        # the latency benchmark); a full local queue falls back to send_raw's waiting.
        produce = publisher.producer.produce if type(publisher).send_raw is _SEND_RAW else None
        encode = encoder.encode_raw
        report = acks.reports(encoder.id_stem)
        reason: FailureReason
        error: BaseException
        for i, group in enumerate(groups):
            row = group.row
            try:
                topic, full_topic, key, value, headers = encode(row, i)
                report.producing = i
                if produce is None:
                    send(full_topic, value, key=key, headers=headers, on_delivery=report)
                else:
                    try:
                        produce(
                            full_topic, value=value, key=key, headers=headers, on_delivery=report
                        )
                    except BufferError:  # the local queue is full: send_raw waits for room
                        send(full_topic, value, key=key, headers=headers, on_delivery=report)
                sent[i] = topic
                continue
            except KafkaException as exc:
                reason, error = FailureReason.PRODUCE, exc
            except Exception as exc:  # routing or schema: this row can never be published
                reason, error = FailureReason.ENCODE, exc
            dead.add(i)
            self._dead_letter(i, row, reason=reason, exc=error, acks=acks, parked=parked)
        if not acks.wait(publisher.producer, self.publish_timeout + 5.0):
            log.warning("relay.batch.ack_timeout", extra={"table": self.table.name})
        if acks.fatal:
            self.publishers.renew(publisher)
        if acks.letters_fatal and not (acks.fatal and self.letters is self.publishers):
            self.letters.renew(self.letters.get())
        return (*self._settle(rows, groups, acks, sent, dead), parked)

    def _dead_letter(
        self,
        i: int,
        row: Row,
        *,
        reason: FailureReason,
        exc: BaseException,
        acks: BatchAcks,
        parked: list[Letter],
    ) -> None:
        """Enqueue the row (as JSON) to the dead letters; its ack settles like a publish.

        Not acknowledged means the shard is rescheduled and the row dead-lettered
        again on a later pass: the relay's way of trying until the broker has it. A
        letter too large for the dead-letter topic is never cut: it goes to ``parked``
        (settled at once), and the batch's transaction stores the row whole in
        ``relay_dead_rows`` as it deletes it.
        """
        log.warning(
            "relay.row.dead_letter",
            extra={
                "table": self.table.name,
                "outbox_id": row.id,
                "reason": reason.value,
                "error": repr(exc),
            },
        )
        letter = Letter(
            row.as_json(),
            f"{row.shard_scope}:{row.shard_identifier}".encode(),
            headers_for(row),
            Failure.of(reason, exc),
            self.table.name,
            -1,
            row.id,
            "relay",
        )
        if not dead_rows.fits(letter):
            log.warning(
                "relay.row.parked",
                extra={
                    "table": self.table.name,
                    "outbox_id": row.id,
                    "bytes": dead_rows.letter_size(letter),
                    "where": "relay_dead_rows",
                },
            )
            parked.append(letter)
            acks.settle_letter(i, None)
            return
        letters = self.letters.get()
        try:
            KafkaDeadLetterSink(letters, self._prefix).produce(letter, acks.on_letter(i))
        except KafkaException as dlq_exc:
            acks.settle_letter(i, f"dead-letter refused: {dlq_exc}")

    def _settle(
        self,
        rows: Sequence[Row],
        groups: list[Group],
        acks: BatchAcks,
        sent: dict[int, str],
        dead: set[int],
    ) -> tuple[DrainStats, set[ShardKey], list[int]]:
        """Delete what was acknowledged, shard by shard up to its first failure."""
        stats = DrainStats(batches=1)
        failed: set[ShardKey] = set()
        deletable: list[int] = []
        per_topic: dict[str, int] = {}
        for i, group in enumerate(groups):
            shard = group.row.shard
            if shard in failed:
                continue  # keep order: nothing after a shard's failure is deleted
            if not acks.ok(i):
                failed.add(shard)
                log.warning(
                    "relay.publish.failed",
                    extra={
                        "table": self.table.name,
                        "outbox_id": group.row.id,
                        "error": acks.error(i),
                    },
                )
                continue
            deletable.extend(group.covers)
            stats.coalesced += group.coalesced
            if i in dead:
                stats.dead_lettered += 1  # streams_dead_letters_total: counted by the sink
            else:
                stats.published += 1
                per_topic[sent[i]] = per_topic.get(sent[i], 0) + 1
        for topic, n in per_topic.items():
            metrics.PUBLISHED.labels(topic).inc(n)
        stats.rescheduled = len(failed)
        if len(deletable) == len(rows):  # the usual case: every claimed row went out
            stats.backfill_rows = sum(1 for r in rows if r.backfill)
        else:
            backfill = {r.id: r.backfill for r in rows}
            stats.backfill_rows = sum(1 for i in deletable if backfill[i])
        stats.regular_rows = len(deletable) - stats.backfill_rows
        return stats, failed, deletable

    def _count(self, stats: DrainStats) -> None:
        t = self._labels
        m.ROWS_PUBLISHED.labels(t).inc(stats.published)
        m.ROWS_COALESCED.labels(t).inc(stats.coalesced)
        m.ROWS_DEAD_LETTERED.labels(t).inc(stats.dead_lettered)
        m.SHARDS_RESCHEDULED.labels(t).inc(stats.rescheduled)
        for seconds in stats.batch_seconds:
            m.BATCH_SECONDS.labels(t).observe(seconds)


def _kept(parked: list[Letter], deletable: list[int]) -> list[Letter]:
    """The parked letters whose rows are deleted (a row after its shard's failure stays)."""
    if not parked:
        return []
    gone = set(deletable)
    return [p for p in parked if p.offset in gone]
