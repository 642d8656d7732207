"""Applying flush windows to PostgreSQL: counters and flush marks in one transaction.

The flush mark of a (consumer group, topic, partition) is the next source offset to
apply. A flush advances it with a compare-and-set *in the same transaction* as the row
updates, so after a crash the offsets below the mark are known to be applied (and are
skipped when read again) and those above it are known not to be. That is the whole
exactly-once argument; the broker's own transactions do not hold on the embedded
broker (docs/broker.md #3) and are not used.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from streams.buffers import sql as q
from streams.buffers.window import PartitionWindow, RowSums
from streams.marks import KafkaLogEnds, LogEnds, LogStamps, beyond_end, other_record, report_reset
from streams.settings import get_settings

log = logging.getLogger(__name__)

# Completion events of ``signal_only`` rows; awaited before the transaction commits,
# so a crash can repeat them (at least once) but never lose them.
Emit = Callable[[Sequence[tuple[PartitionWindow, RowSums]]], Awaitable[None]]


@dataclass
class FlushOutcome:
    applied: set[int] = field(default_factory=set)  # partitions committed
    conflicts: dict[int, int] = field(default_factory=dict)  # partition -> stored mark
    statements: int = 0  # row-writing statements executed (one per column set)
    written: int = 0
    signalled: int = 0
    parked: int = 0


class FlushStore(Protocol):
    async def load_marks(self, partitions: Sequence[int]) -> dict[int, int]:
        """The marks to continue from: stored marks, those of another log voided."""
        ...

    async def stored_marks(self, partitions: Sequence[int]) -> dict[int, int]:
        """The stored marks as they are (to learn a lost commit's outcome)."""
        ...

    async def apply(self, windows: Sequence[PartitionWindow], emit: Emit) -> FlushOutcome: ...


class PostgresFlushStore:
    """The real store: one transaction per flush, marks compare-and-set first."""

    def __init__(
        self,
        pool: Callable[[], Awaitable[AsyncConnectionPool]],
        *,
        group: str,
        topic: str,
        ends: LogEnds | None = None,
        stamps: LogStamps | None = None,
    ) -> None:
        self._pool = pool
        self.group = group
        self.topic = topic
        # The log's true ends and record timestamps; by default read with the process's
        # settings (those the worker's agents are built from), on first need: a store
        # whose marks are all 0 never talks to the broker.
        self._ends = ends
        self._stamps = stamps

    async def _stored(self, partitions: Sequence[int]) -> dict[int, tuple[int, int | None]]:
        pool = await self._pool()
        async with pool.connection() as conn:
            cur = await conn.execute(q.MARKS_LOAD, (self.group, self.topic, list(partitions)))
            return {int(p): (int(o), ts) for p, o, ts in await cur.fetchall()}

    async def stored_marks(self, partitions: Sequence[int]) -> dict[int, int]:
        """The stored mark of each partition (0 where none was ever written)."""
        stored = await self._stored(partitions)
        return {p: stored[p][0] if p in stored else 0 for p in partitions}

    async def load_marks(self, partitions: Sequence[int]) -> dict[int, int]:
        """The mark of each partition. One written against another log (broker
        restarted, topic recreated) is reported and voided: it is beyond the partition's
        true end, or the record just below it has another timestamp than the one the
        mark was written with."""
        stored = await self._stored(partitions)
        marks = {p: stored[p][0] if p in stored else 0 for p in partitions}
        suspects = {p: o for p, o in marks.items() if o > 0}
        if not suspects:
            return marks
        if self._ends is None:
            probe = KafkaLogEnds(get_settings())
            self._ends, self._stamps = probe, self._stamps or probe.timestamps
        ends = await self._ends(self.topic, sorted(suspects))
        beyond = beyond_end(suspects, ends)
        for p, end in beyond.items():
            marks[p] = await self._void(p, suspects[p], end, "beyond_end")
        within = {p: o for p, o in suspects.items() if p not in beyond and stored[p][1] is not None}
        if within and self._stamps is not None:
            found = await self._stamps(self.topic, {p: o - 1 for p, o in within.items()})
            written = {p: stored[p][1] for p in within}
            for p in sorted(other_record(within, written, found)):
                marks[p] = await self._void(p, within[p], ends.get(p, -1), "other_record")
        return marks

    async def _void(self, partition: int, mark: int, end: int, why: str) -> int:
        """Set a stale mark back to 0 (compare-and-set); the mark to continue from."""
        pool = await self._pool()
        async with pool.connection() as conn:
            cur = await conn.execute(q.MARK_VOID, (end, self.group, self.topic, partition, mark))
            if cur.rowcount == 1:
                report_reset("buffer_flush", self.topic, partition, mark, end, why=why)
                return 0
        # Another worker moved it meanwhile (it voided it first, or flushed): take its.
        return (await self.stored_marks([partition]))[partition]

    async def apply(self, windows: Sequence[PartitionWindow], emit: Emit) -> FlushOutcome:
        out = FlushOutcome()
        pool = await self._pool()
        async with pool.connection() as conn, conn.transaction():
            cur = await conn.execute(q.MARKS_ADVANCE, self._advance_params(windows))
            out.applied = {int(r[0]) for r in await cur.fetchall()}
            lost = [w.partition for w in windows if w.partition not in out.applied]
            if lost:
                # Another worker applied these offsets: apply nothing of those windows.
                cur = await conn.execute(q.MARKS_LOAD, (self.group, self.topic, lost))
                out.conflicts = {int(p): int(o) for p, o, _ in await cur.fetchall()}
            mine = [w for w in windows if w.partition in out.applied]
            writes: list[tuple[PartitionWindow, RowSums]] = []
            signals: list[tuple[PartitionWindow, RowSums]] = []
            for w in mine:
                for r in _ordered(w):
                    (signals if r.signal_only else writes).append((w, r))
            await self._write(conn, writes, out)
            if signals:
                await emit(signals)
                out.signalled = len(signals)
        return out

    def _advance_params(self, windows: Sequence[PartitionWindow]) -> tuple[Any, ...]:
        return (
            self.group,
            self.topic,
            [w.partition for w in windows],
            [w.start for w in windows],
            [w.next for w in windows],
            [sum(r.increments for r in w.rows.values() if not r.signal_only) for w in windows],
            [w.last_timestamp for w in windows],
            self.group,
            self.topic,
        )

    async def _write(
        self,
        conn: psycopg.AsyncConnection[Any],
        writes: list[tuple[PartitionWindow, RowSums]],
        out: FlushOutcome,
    ) -> None:
        if not writes:
            return
        try:
            async with conn.transaction():  # a savepoint: a bad row must not sink the flush
                missing, statements = await _update_batched(conn, writes)
            out.statements += statements
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            log.warning("buffers.flush.row_error", extra={"error": repr(exc)})
            missing = await _update_isolated(conn, writes)
            out.statements += 1 + len(writes)  # the failed batch, then one by one
        out.written = len(writes) - len(missing)
        for (w, row), reason in missing:
            await conn.execute(q.PARK, self._park_params(w, row, reason))
        out.parked = len(missing)

    def _park_params(self, w: PartitionWindow, row: RowSums, reason: str) -> tuple[Any, ...]:
        return (
            row.model.name,
            Jsonb(_printable(dict(row.filters))),
            Jsonb(row.columns),
            Jsonb(_printable(row.extra_values()) or None),
            row.increments,
            reason,
            self.topic,
            w.partition,
            row.first_offset,
            row.last_offset,
        )


def _printable(values: dict[str, Any]) -> dict[str, Any]:
    # jsonb refuses NUL, and parking must not fail: show it escaped (parked rows are
    # read by people; the source offsets lead to the exact original).
    return {k: v.replace("\x00", "\\x00") if isinstance(v, str) else v for k, v in values.items()}


Missing = list[tuple[tuple[PartitionWindow, RowSums], str]]


def _ordered(w: PartitionWindow) -> list[RowSums]:
    # One lock order for every worker: concurrent flushes cannot deadlock on rows. A
    # model's filters have fixed kinds, so their values compare as they are.
    return sorted(w.rows.values(), key=_lock_order)


def _lock_order(r: RowSums) -> tuple[str, tuple[tuple[str, Any], ...]]:
    return (r.model.name, r.filters)


async def _update_batched(
    conn: psycopg.AsyncConnection[Any], writes: list[tuple[PartitionWindow, RowSums]]
) -> tuple[Missing, int]:
    """Every row of one (model, column set) in one ``UPDATE ... FROM unnest(...)``:
    (the rows it did not find, the statements executed)."""
    groups: dict[Any, list[tuple[PartitionWindow, RowSums]]] = {}
    for item in writes:
        row = item[1]
        groups.setdefault((row.model.name, q.shape_of(row)), []).append(item)
    missing: Missing = []
    statements = 0
    for (_, shape), items in groups.items():
        spec = items[0][1].model
        by_row = {id(item[1]): item for item in items}
        for batch in q.bulk_batches([r for _, r in items]):
            cur = await conn.execute(
                q.bulk_update_statement(spec, shape), q.bulk_params(batch, shape)
            )
            found = {tuple(r) for r in await cur.fetchall()}
            statements += 1
            missing += [
                (by_row[id(r)], "row_missing")
                for r in batch
                if tuple(v for _, v in r.filters) not in found
            ]
    return missing, statements


async def _update_isolated(
    conn: psycopg.AsyncConnection[Any], writes: list[tuple[PartitionWindow, RowSums]]
) -> Missing:
    """Each row in its own savepoint, so one bad value parks one row, not the window."""
    missing: Missing = []
    for item in writes:
        row = item[1]
        shape = q.shape_of(row)
        try:
            async with conn.transaction():
                cur = await conn.execute(
                    q.update_statement(row.model, shape), q.update_params(row, shape)
                )
                if cur.rowcount < 1:
                    missing.append((item, "row_missing"))
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            missing.append((item, f"{type(exc).__name__}: {exc}"[:500]))
    return missing
