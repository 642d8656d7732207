"""The buffer's protocol with a fake store (the real one: test_store.py, test_buffers.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

import pytest

from streams.buffers.buffer import Buffer, FlushConflict, Item
from streams.buffers.models import check_increment
from streams.buffers.store import Emit, FlushOutcome
from streams.buffers.window import PartitionWindow


class FakeStore:
    """Marks compare-and-set and summed counters, like PostgresFlushStore, in memory."""

    def __init__(self) -> None:
        self.marks: dict[int, int] = {}
        self.counts: Counter[int] = Counter()
        self.fail_next = False
        self.lose_next_outcome = False  # commit, then lose the connection
        self.transactions = 0
        self.log_ends: dict[int, int] | None = None  # the log's true ends, when known

    async def stored_marks(self, partitions: Sequence[int]) -> dict[int, int]:
        return {p: self.marks.get(p, 0) for p in partitions}

    async def load_marks(self, partitions: Sequence[int]) -> dict[int, int]:
        marks = await self.stored_marks(partitions)
        for p, mark in marks.items():
            if self.log_ends is not None and mark > self.log_ends.get(p, 0):
                self.marks[p] = marks[p] = 0  # another log: voided, like the real store
        return marks

    async def apply(self, windows: Sequence[PartitionWindow], emit: Emit) -> FlushOutcome:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("database went away")
        if self.lose_next_outcome:
            self.lose_next_outcome = False
            await self._commit(windows)
            raise ConnectionError("server closed the connection unexpectedly")
        return await self._commit(windows)

    async def _commit(self, windows: Sequence[PartitionWindow]) -> FlushOutcome:
        self.transactions += 1
        out = FlushOutcome()
        for w in windows:
            if self.marks.get(w.partition, 0) != w.start:
                out.conflicts[w.partition] = self.marks[w.partition]
                continue
            self.marks[w.partition] = w.next
            out.applied.add(w.partition)
            for row in w.rows.values():
                self.counts[int(row.filters[0][1])] += row.columns["times_seen"]
                out.statements += 1
        return out


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, store: FakeStore, owned: bool = True) -> None:
        self.acked: list[object] = []
        self.clock = Clock()

        async def ack(tokens: Sequence[object]) -> None:
            self.acked.extend(tokens)

        async def emit(rows: object) -> None:
            return None

        self.buffer = Buffer(
            store, interval=1.0, ack=ack, emit=emit, owns=lambda p: owned, clock=self.clock
        )

    async def consume(self, partition: int, offsets: range, gid: int = 1) -> list[Item]:
        items = [Item(partition, o, f"{partition}:{o}") for o in offsets]
        async with self.buffer.lock:
            fresh = await self.buffer.admit(items)
            for item in fresh:
                inc = check_increment("issue_group", {"times_seen": 1}, {"id": gid})
                self.buffer.add(item.partition, item.offset, inc)
            self.buffer.hold(fresh)
        return fresh


def test_a_window_flushes_once_when_it_closes_and_only_then_acks() -> None:
    async def scenario() -> None:
        store = FakeStore()
        h = Harness(store)
        await h.consume(0, range(0, 5), gid=1)
        await h.consume(1, range(0, 3), gid=2)
        assert await h.buffer.flush() is None  # window still open
        assert h.acked == []
        h.clock.now += 1.0
        outcome = await h.buffer.flush()
        assert outcome is not None and outcome.statements == 2
        assert store.transactions == 1  # every partition's window in one transaction
        assert store.counts == {1: 5, 2: 3}
        assert store.marks == {0: 5, 1: 3}
        assert len(h.acked) == 8

    asyncio.run(scenario())


def test_after_a_restart_applied_offsets_are_acked_and_skipped() -> None:
    async def scenario() -> None:
        store = FakeStore()
        first = Harness(store)
        await first.consume(0, range(0, 10))
        await first.buffer.flush(force=True)
        await first.consume(0, range(10, 15))  # crash: never flushed
        second = Harness(store)  # the restarted worker reads again from offset 0
        fresh = await second.consume(0, range(0, 15))
        assert [i.offset for i in fresh] == list(range(10, 15))
        assert second.acked == [f"0:{o}" for o in range(10)]
        await second.buffer.flush(force=True)
        assert store.counts == {1: 15}

    asyncio.run(scenario())


def test_a_failed_flush_is_retried_as_one_window_with_what_came_meanwhile() -> None:
    async def scenario() -> None:
        store = FakeStore()
        h = Harness(store)
        await h.consume(0, range(0, 4))
        store.fail_next = True
        with pytest.raises(ConnectionError):
            await h.buffer.flush(force=True)
        assert h.acked == []
        await h.consume(0, range(4, 6))
        await h.buffer.flush(force=True)
        assert store.counts == {1: 6}
        assert store.marks == {0: 6}
        assert store.transactions == 1
        assert len(h.acked) == 6

    asyncio.run(scenario())


def test_windows_another_consumer_already_applied_are_dropped_not_applied_twice() -> None:
    async def scenario() -> None:
        store = FakeStore()
        zombie = Harness(store, owned=False)
        await zombie.consume(0, range(0, 5))
        owner = Harness(store)
        await owner.consume(0, range(0, 5))
        await owner.buffer.flush(force=True)
        outcome = await zombie.buffer.flush(force=True)
        assert outcome is not None and outcome.conflicts == {0: 5}
        assert store.counts == {1: 5}
        assert zombie.acked == [f"0:{o}" for o in range(5)]  # all applied by the owner

    asyncio.run(scenario())


def test_a_partly_overlapping_conflict_on_an_owned_partition_stops_the_consumer() -> None:
    async def scenario() -> None:
        store = FakeStore()
        other = Harness(store)
        await other.consume(0, range(0, 3))
        await other.buffer.flush(force=True)
        mine = Harness(store)
        mine.buffer.windows[0] = PartitionWindow(0, 0, 0, 0)  # read its mark before that flush
        await mine.consume(0, range(0, 6))
        with pytest.raises(FlushConflict):
            await mine.buffer.flush(force=True)
        assert store.counts == {1: 3}
        assert mine.acked == []
        assert 0 not in mine.buffer.windows  # forgotten: a restart re-reads from the mark

    asyncio.run(scenario())


def test_revoked_partitions_are_dropped_unacked() -> None:
    async def scenario() -> None:
        store = FakeStore()
        h = Harness(store)
        await h.consume(2, range(0, 3))
        h.buffer.forget([2])
        assert await h.buffer.flush(force=True) is None
        assert h.acked == [] and store.counts == {}

    asyncio.run(scenario())


def test_a_commit_whose_answer_was_lost_is_learnt_from_the_mark_not_a_conflict() -> None:
    async def scenario() -> None:
        store = FakeStore()
        h = Harness(store)
        await h.consume(0, range(0, 10))
        store.lose_next_outcome = True
        outcome = await h.buffer.flush(force=True)
        assert outcome is not None and outcome.applied == {0}
        assert len(h.acked) == 10  # committed: acknowledged, not merged back
        await h.consume(0, range(10, 15))
        await h.buffer.flush(force=True)  # before: FlushConflict (its own commit)
        assert store.counts[1] == 15 and store.marks[0] == 15 and len(h.acked) == 15

    asyncio.run(scenario())


def test_a_lost_answer_of_a_commit_that_did_not_happen_retries_the_window() -> None:
    async def scenario() -> None:
        store = FakeStore()
        h = Harness(store)
        await h.consume(0, range(0, 10))
        store.fail_next = True
        with pytest.raises(ConnectionError):
            await h.buffer.flush(force=True)
        assert h.acked == [] and store.marks == {}
        await h.buffer.flush(force=True)
        assert store.counts[1] == 10 and len(h.acked) == 10

    asyncio.run(scenario())


def test_a_new_log_under_the_same_assignment_is_applied_not_skipped() -> None:
    async def scenario() -> None:
        store = FakeStore()
        store.log_ends = {0: 100}
        h = Harness(store)
        await h.consume(0, range(0, 100))
        await h.buffer.flush(force=True)
        assert store.marks[0] == 100
        store.log_ends = {0: 5}  # the broker restarted: its log starts again at 0
        fresh = await h.consume(0, range(0, 5))
        assert [i.offset for i in fresh] == [0, 1, 2, 3, 4]
        await h.buffer.flush(force=True)
        assert store.counts[1] == 105 and store.marks[0] == 5

    asyncio.run(scenario())


def test_replays_after_a_restart_below_a_mark_of_this_log_are_still_skipped() -> None:
    async def scenario() -> None:
        store = FakeStore()
        store.marks = {0: 50}
        store.log_ends = {0: 60}
        h = Harness(store)
        fresh = await h.consume(0, range(40, 60))
        assert [i.offset for i in fresh] == list(range(50, 60))
        assert store.marks[0] == 50

    asyncio.run(scenario())


def test_a_window_of_many_rows_in_few_messages_flushes_before_it_closes() -> None:
    async def scenario() -> None:
        store = FakeStore()
        h = Harness(store)
        h.buffer._max_held = 100
        items = [Item(0, 0, "0:0")]
        async with h.buffer.lock:
            fresh = await h.buffer.admit(items)
            for gid in range(150):  # one message summing 150 rows
                inc = check_increment("issue_group", {"times_seen": 1}, {"id": gid})
                h.buffer.add(0, 0, inc)
            h.buffer.hold(fresh)
        outcome = await h.buffer.flush()  # the window is still open, but full
        assert outcome is not None and sum(store.counts.values()) == 150
        assert h.acked == ["0:0"]

    asyncio.run(scenario())
