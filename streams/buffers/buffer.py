"""The buffer: flush windows per owned partition, closed on a clock, applied exactly once.

Protocol with the consumer (``streams.agents.buffers``), under ``Buffer.lock``:

1. ``admit`` the messages of a batch: a partition seen for the first time gets its
   flush mark from PostgreSQL; messages below the mark were applied before (a replay
   after a crash or rebalance) and are acknowledged at once; the rest are returned;
2. ``add`` each valid increment (the agent's handler does it);
3. ``hold`` the returned messages: they are acknowledged only after the flush that
   covers them has committed. The consumer can therefore never commit past the
   flush mark, and a crash at any point re-reads exactly the unapplied offsets.

``run`` closes windows by wall clock (aligned to the flush interval) with its own
timer, not ``on_window_close`` (it fires for one table partition per window and
is not rebuilt after a crash: docs/broker.md F1), and flushes at once when ``urgent()``
says the consumer is rebalancing or stopping, so those never wait on a window.

Why the windows are not a changelogged Faust table: a table's changelog is written
independently of both the consumer's offsets and PostgreSQL. On the embedded broker
its recovery stops short and exactly-once does not hold (docs/broker.md #2, #3), so after
a kill -9 a table would hold increments that are also read again (counted twice) or
miss increments whose offsets were already committed (lost). Rebuilding the windows
from the source topic, from the flush mark on, needs no changelog and is exact.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter

from streams.buffers import metrics as m
from streams.buffers.models import Increment
from streams.buffers.store import Emit, FlushOutcome, FlushStore
from streams.buffers.window import PartitionWindow
from streams.buffers.wire import PlainRows
from streams.errors import StreamsError
from streams.marks import resolved

log = logging.getLogger(__name__)

Ack = Callable[[Sequence[object]], Awaitable[None]]
# Above this many held messages, or rows, a window flushes before it closes (bounds memory).
MAX_HELD = 50_000
MAX_BACKOFF = 5.0


class FlushConflict(StreamsError, RuntimeError):
    """Another consumer applied part of a window this one still holds: only a restart,
    which re-reads from the stored flush mark, can continue without double counting."""


@dataclass(frozen=True)
class Item:
    """One consumed message, as far as the buffer cares."""

    partition: int
    offset: int
    token: object  # what ``ack`` needs (the Faust event)
    timestamp: int | None = None  # ms, as the log stores it (the flush mark keeps it)


class Buffer:
    """Flush windows of the partitions this consumer owns, and their flushes."""

    def __init__(
        self,
        store: FlushStore,
        *,
        interval: float,
        ack: Ack,
        emit: Emit,
        owns: Callable[[int], bool] = lambda p: True,
        clock: Callable[[], float] = time.time,
        max_held: int = MAX_HELD,
    ) -> None:
        self.store = store
        self.interval = interval
        self.tick = min(0.25, interval / 4)
        self._ack = ack
        self._emit = emit
        self._owns = owns
        self._clock = clock
        self._max_held = max_held
        self.windows: dict[int, PartitionWindow] = {}
        self._generation: dict[int, int] = {}
        self._loaded: dict[int, int] = {}  # the mark each window was loaded with
        self.lock = asyncio.Lock()  # admit/add/hold vs. the window swap of a flush
        self._flushing = asyncio.Lock()
        self._received: dict[str, Counter] = {}  # labelled children: labels() per message is slow

    # -- the consumer side (call with ``lock`` held) -------------------------------

    async def admit(self, items: Sequence[Item]) -> list[Item]:
        """Load unknown partitions' marks; ack what was applied before; return the rest."""
        unknown = sorted({i.partition for i in items if i.partition not in self.windows})
        if unknown:
            for p, mark in (await self.store.load_marks(unknown)).items():
                gen = self._generation.get(p, 0)
                self.windows[p] = PartitionWindow(p, mark, mark, gen)
                self._loaded[p] = mark
        await self._recheck_rewinds(items)
        fresh: list[Item] = []
        applied: list[object] = []
        for item in items:
            w = self.windows[item.partition]
            if item.offset < w.start:
                applied.append(item.token)
            elif item.offset >= w.next:
                fresh.append(item)
            # else: delivered twice within one assignment; the first copy is held
            # and will be acked, this one must not be (it would move the commit).
        if applied:
            m.REPLAYED.inc(len(applied))
            await self._ack(applied)
        return fresh

    async def _recheck_rewinds(self, items: Sequence[Item]) -> None:
        """Offsets below a mark this assignment already moved past: the consumer went
        back, which a new log under the same assignment (broker restarted) looks like.
        Check the mark against the log again (load_marks voids one of another log)."""
        rewound = sorted(
            {
                i.partition
                for i in items
                if i.offset < self.windows[i.partition].start
                and self.windows[i.partition].start > self._loaded.get(i.partition, 0)
            }
        )
        # A window still holding increments of the old log keeps its mark until they
        # are flushed (its flush compares against that mark); checked on the next batch.
        rewound = [p for p in rewound if self.windows[p].empty]
        if not rewound:
            return
        for p, mark in (await self.store.load_marks(rewound)).items():
            w = self.windows[p]
            if mark != w.start:
                self.windows[p] = PartitionWindow(p, mark, mark, w.generation)
            self._loaded[p] = mark

    def add(self, partition: int, offset: int, inc: Increment) -> None:
        self.windows[partition].add(inc, offset)
        counter = self._received.get(inc.model.name)
        if counter is None:
            counter = self._received[inc.model.name] = m.INCREMENTS.labels(inc.model.name)
        counter.inc(inc.count)  # incr() calls, however many one message sums

    def add_plain(self, partition: int, offset: int, plain: PlainRows) -> None:
        """Rows of one message read column by column (``streams.buffers.wire``)."""
        self.windows[partition].add_plain(plain, offset)
        name = plain.model.name
        counter = self._received.get(name)
        if counter is None:
            counter = self._received[name] = m.INCREMENTS.labels(name)
        counter.inc(sum(plain.counts))

    def hold(self, items: Sequence[Item]) -> None:
        closes_at = (math.floor(self._clock() / self.interval) + 1) * self.interval
        for item in items:
            self.windows[item.partition].hold(item.offset, item.token, closes_at, item.timestamp)
        self._gauges()

    def forget(self, partitions: Sequence[int]) -> None:
        """Partitions revoked: drop their windows unacked (the next owner re-reads them)."""
        for p in partitions:
            self._generation[p] = self._generation.get(p, 0) + 1
            self.windows.pop(p, None)
            self._loaded.pop(p, None)
        self._gauges()

    # -- the flush side -------------------------------------------------------------

    async def run(self, urgent: Callable[[], bool] = lambda: False) -> None:
        """Flush closed windows forever; raises ``FlushConflict`` if it cannot go on."""
        backoff = 0.0
        while True:
            await asyncio.sleep(max(self.tick, backoff))
            try:
                await self.flush(force=urgent())
                backoff = 0.0
            except FlushConflict:
                raise
            except Exception as exc:
                backoff = min(MAX_BACKOFF, max(self.tick, backoff * 2))
                log.warning("buffers.flush.failed", extra={"error": repr(exc), "retry_in": backoff})

    async def flush(self, *, force: bool = False) -> FlushOutcome | None:
        """Apply every closed (or, with ``force``, every non-empty) window in one transaction."""
        async with self._flushing:
            async with self.lock:
                due = self._take_due(force)
            if not due:
                return None
            started = time.perf_counter()
            try:
                outcome = await self.store.apply(due, self._emit)
            except Exception as exc:
                m.FLUSHES.labels("error").inc()
                # The connection may have been lost after COMMIT reached PostgreSQL:
                # the stored marks tell which windows committed (never guess).
                learnt, uncommitted = await self._resolve(due, exc)
                async with self.lock:
                    self._put_back(uncommitted)
                if learnt is None:
                    raise
                outcome = learnt
            finally:
                m.FLUSH_SECONDS.observe(time.perf_counter() - started)
            await self._settle(due, outcome)
            return outcome

    async def _resolve(
        self, due: list[PartitionWindow], exc: Exception
    ) -> tuple[FlushOutcome | None, list[PartitionWindow]]:
        """After a failed flush: (outcome of the windows that did commit, or None; the
        windows that did not). Re-reads the marks until PostgreSQL answers."""
        delay = self.tick
        while True:
            try:
                stored = await self.store.stored_marks([w.partition for w in due])
                break
            except Exception as again:
                log.warning(
                    "buffers.flush.outcome_unknown",
                    extra={"error": repr(exc), "reread_error": repr(again), "retry_in": delay},
                )
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)
        committed = [w for w in due if stored.get(w.partition) == w.next]
        uncommitted = [w for w in due if stored.get(w.partition) == w.start]
        others = {w.partition: stored.get(w.partition, 0) for w in due}
        for w in committed + uncommitted:
            others.pop(w.partition)
        resolved(kind="buffer_flush", committed=bool(committed))
        if not committed and not others:
            return None, uncommitted
        out = FlushOutcome(applied={w.partition for w in committed}, conflicts=others)
        return out, uncommitted

    def _take_due(self, force: bool) -> list[PartitionWindow]:
        now = self._clock()
        due = [
            w
            for w in self.windows.values()
            if not w.empty
            and (
                force
                or (w.closes_at is not None and w.closes_at <= now)
                or len(w.held) >= self._max_held
                or len(w.rows) >= self._max_held  # a message may carry many rows
            )
        ]
        for w in due:
            self.windows[w.partition] = w.successor()
        return due

    def _put_back(self, due: list[PartitionWindow]) -> None:
        """A failed flush: its windows go back in front of what arrived meanwhile."""
        for w in due:
            current = self.windows.get(w.partition)
            if current is None or current.generation != w.generation:
                continue  # revoked meanwhile: the next owner re-reads these offsets
            w.absorb(current)
            self.windows[w.partition] = w

    async def _settle(self, due: list[PartitionWindow], outcome: FlushOutcome) -> None:
        m.FLUSHES.labels("conflict" if outcome.conflicts else "ok").inc()
        m.STATEMENTS.labels("row").inc(outcome.statements)
        m.STATEMENTS.labels("mark").inc(1)
        for w in due:
            if w.partition not in outcome.applied:
                continue
            for row in w.rows.values():
                outcome_label = "signalled" if row.signal_only else "written"
                m.ROWS.labels(row.model.name, outcome_label).inc()
            await self._ack(w.held)
        if outcome.parked:
            m.ROWS.labels("*", "parked").inc(outcome.parked)
            log.warning("buffers.flush.parked", extra={"rows": outcome.parked})
        for w in due:
            if w.partition in outcome.conflicts:
                await self._conflict(w, outcome.conflicts[w.partition])
        self._gauges()

    async def _conflict(self, w: PartitionWindow, stored: int) -> None:
        async with self.lock:
            current = self.windows.get(w.partition)
            ours_until = current.next if current is not None else w.next
            log.warning(
                "buffers.flush.conflict",
                extra={"partition": w.partition, "stored": stored, "window_start": w.start},
            )
            if stored >= ours_until:
                # Everything we hold was applied by the other consumer: drop our sums,
                # acknowledge the messages, continue from the stored mark.
                held = [*w.held, *(current.held if current is not None else [])]
                self.windows[w.partition] = PartitionWindow(
                    w.partition, stored, stored, w.generation
                )
                await self._ack(held)
                return
            self.forget([w.partition])
            if self._owns(w.partition):
                raise FlushConflict(
                    f"partition {w.partition}: flush mark moved to {stored} by another "
                    f"consumer while this one holds offsets {w.start}..{ours_until - 1}"
                )

    def _gauges(self) -> None:
        m.PENDING_ROWS.set(sum(len(w.rows) for w in self.windows.values()))
        m.HELD.set(sum(len(w.held) for w in self.windows.values()))
