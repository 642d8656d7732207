"""PostgresFlushStore against the real PostgreSQL: marks, rows, parking, completions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from streams.buffers.buffer import Buffer, Item
from streams.buffers.models import check_increment
from streams.buffers.store import FlushOutcome, PostgresFlushStore
from streams.buffers.window import PartitionWindow, RowSums
from tests.buffers import support as s


def window(
    partition: int,
    start: int,
    rows: list[tuple[int, int, dict[str, Any], bool]],
    stamped: bool = True,
) -> PartitionWindow:
    """A window of ``(group id, times_seen, extra, signal_only)`` increments from ``start``;
    the record at offset o has timestamp 1000 + o (none if not ``stamped``)."""
    w = PartitionWindow(partition, start, start, 0)
    for offset, (gid, n, extra, signal_only) in enumerate(rows, start):
        inc = check_increment("issue_group", {"times_seen": n}, {"id": gid}, extra, signal_only)
        w.add(inc, offset)
        w.hold(offset, offset, 0.0, 1000 + offset if stamped else None)
    return w


def flush(
    database: str,
    windows: list[PartitionWindow],
    emitted: list[tuple[PartitionWindow, RowSums]] | None = None,
) -> FlushOutcome:
    async def go() -> FlushOutcome:
        pool = AsyncConnectionPool(database, min_size=1, max_size=2, open=False)
        await pool.open()

        async def get() -> AsyncConnectionPool:
            return pool

        async def emit(rows: Sequence[tuple[PartitionWindow, RowSums]]) -> None:
            (emitted if emitted is not None else []).extend(rows)

        getter: Callable[[], Awaitable[AsyncConnectionPool]] = get
        try:
            return await PostgresFlushStore(getter, group="g", topic="t").apply(windows, emit)
        finally:
            await pool.close()

    return asyncio.run(go())


def test_a_flush_adds_the_sums_and_advances_each_partitions_mark(database: str) -> None:
    a, b = s.seed_groups(database, 2)
    out = flush(
        database,
        [window(0, 0, [(a, 2, {}, False), (a, 3, {}, False)]), window(3, 0, [(b, 1, {}, False)])],
    )
    assert (out.applied, out.statements, out.written) == ({0, 3}, 1, 2)  # one per column set
    assert s.times_seen(database) == {a: 5, b: 1}
    assert s.marks(database) == [(0, 2, 1, 2), (3, 1, 1, 1)]
    out = flush(database, [window(0, 2, [(a, 1, {}, False)])])
    assert s.times_seen(database)[a] == 6
    assert s.marks(database)[0] == (0, 3, 2, 3)


def test_thousands_of_rows_are_one_statement_and_a_row_from_two_partitions_counts_twice(
    database: str,
) -> None:
    ids = s.seed_groups(database, 3000)
    first = window(0, 0, [(gid, 1 + gid % 3, {}, False) for gid in ids])
    # A producer writing the topic with its own keys can put one row on two partitions.
    second = window(1, 0, [(ids[0], 10, {}, False), (ids[1], 5, {"level": "fatal"}, False)])
    out = flush(database, [first, second])
    assert (out.applied, out.written, out.parked) == ({0, 1}, 3002, 0)
    assert out.statements == 3  # 3000 rows; ids[0] again; ids[1] with an extra column
    seen = s.times_seen(database)
    assert seen == {
        gid: 1 + gid % 3 + (10 if gid == ids[0] else 5 if gid == ids[1] else 0) for gid in ids
    }
    assert s.groups(database)[ids[1]]["level"] == "fatal"


def test_a_window_from_a_stale_mark_applies_nothing(database: str) -> None:
    (a,) = s.seed_groups(database, 1)
    flush(database, [window(1, 0, [(a, 1, {}, False)] * 4)])
    out = flush(database, [window(1, 2, [(a, 1, {}, False)] * 4)])  # offsets 2..5, 2..3 applied
    assert out.applied == set() and out.conflicts == {1: 4}
    assert s.times_seen(database) == {a: 4}
    out = flush(database, [window(2, 7, [(a, 1, {}, False)])])  # no mark yet: must start at 0
    assert out.conflicts == {} and out.applied == set()
    assert s.times_seen(database) == {a: 4}


def test_missing_rows_and_refused_values_are_parked_and_the_rest_applied(database: str) -> None:
    a, b = s.seed_groups(database, 2)
    w = window(
        0,
        0,
        [
            (a, 2, {"level": "fatal"}, False),
            (b, 1, {"level": "x"}, False),
            (b + 1000, 5, {}, False),
        ],
    )
    # A value PostgreSQL refuses although it passed the allow-list (check_increment refuses
    # NUL; a producer writing the topic directly is checked by the same code, so this
    # stands for whatever a column may refuse in future).
    w.rows[("issue_group", (("id", b),), False)].extra["level"] = (0, "nul\x00")
    out = flush(database, [w])
    assert (out.written, out.parked) == (1, 2)
    rows = s.groups(database)
    assert (rows[a]["times_seen"], rows[a]["level"]) == (2, "fatal")
    assert (rows[b]["times_seen"], rows[b]["level"]) == (0, "error")
    parked = s.parked(database)
    assert sorted((p[1]["id"], p[2], p[3], p[4].split(":")[0]) for p in parked) == [
        (b, {"times_seen": 1}, 1, "DataError"),
        (b + 1000, {"times_seen": 5}, 1, "row_missing"),
    ]
    assert s.marks(database) == [(0, 3, 1, 3)]


def test_signal_only_rows_are_emitted_and_write_nothing(database: str) -> None:
    (a,) = s.seed_groups(database, 1)
    emitted: list[tuple[PartitionWindow, RowSums]] = []
    out = flush(database, [window(0, 0, [(a, 2, {}, True), (a, 3, {}, True)])], emitted)
    assert out.signalled == 1 and out.statements == 0
    assert [(r.columns, r.increments) for _, r in emitted] == [({"times_seen": 5}, 2)]
    assert s.times_seen(database) == {a: 0}


async def _with_store(
    database: str, body: Callable[[PostgresFlushStore], Awaitable[Any]], **kw: Any
) -> Any:
    pool = AsyncConnectionPool(database, min_size=1, max_size=2, open=False)
    await pool.open()

    async def get() -> AsyncConnectionPool:
        return pool

    try:
        return await body(PostgresFlushStore(get, group="g", topic="t", **kw))
    finally:
        await pool.close()


async def _no_emit(rows: Sequence[tuple[PartitionWindow, RowSums]]) -> None:
    return None


@pytest.mark.allow_errors  # the reset is logged as an error, by design
def test_a_mark_beyond_the_partitions_end_is_voided_and_recorded(database: str) -> None:
    (a,) = s.seed_groups(database, 1)
    flush(database, [window(0, 0, [(a, 1, {}, False)] * 4), window(1, 0, [(a, 1, {}, False)])])
    probed: list[tuple[str, list[int]]] = []

    async def ends(topic: str, partitions: Sequence[int]) -> dict[int, int]:
        probed.append((topic, list(partitions)))
        return {0: 2, 1: 9}  # partition 0: a new log, shorter than its mark

    async def body(store: PostgresFlushStore) -> dict[int, int]:
        return await store.load_marks([0, 1, 2])

    assert asyncio.run(_with_store(database, body, ends=ends)) == {0: 0, 1: 1, 2: 0}
    assert probed == [("t", [0, 1])]  # partitions without a mark are not probed
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT next_offset, resets, reset_from, reset_log_end FROM buffer_flush_marks "
            "WHERE partition = 0"
        ).fetchone()
    assert row == (0, 1, 4, 2)
    flush(database, [window(0, 0, [(a, 1, {}, False)] * 2)])  # the new log, from 0
    assert s.times_seen(database) == {a: 7}
    assert s.marks(database)[0][1] == 2


@pytest.mark.allow_errors  # the reset is logged as an error, by design
def test_a_mark_whose_record_has_another_timestamp_is_voided_though_within_the_end(
    database: str,
) -> None:
    """A new log that grew past an old mark before the worker looked: only the record
    below the mark tells the logs apart."""
    (a,) = s.seed_groups(database, 1)
    one: tuple[int, int, dict[str, Any], bool] = (a, 1, {}, False)
    flush(database, [window(0, 0, [one] * 4), window(1, 0, [one] * 2), window(2, 0, [one], False)])
    assert s.times_seen(database) == {a: 7}
    probed: list[dict[int, int]] = []

    async def ends(topic: str, partitions: Sequence[int]) -> dict[int, int]:
        return dict.fromkeys(partitions, 10)  # every log is longer than its mark

    async def stamps(topic: str, offsets: Mapping[int, int]) -> dict[int, int | None]:
        probed.append(dict(offsets))
        return {0: 5555, 1: 1001}  # partition 0: another record below the mark

    async def body(store: PostgresFlushStore) -> dict[int, int]:
        return await store.load_marks([0, 1, 2])

    got = asyncio.run(_with_store(database, body, ends=ends, stamps=stamps))
    assert got == {0: 0, 1: 2, 2: 1}  # p2's mark was written without a timestamp: kept
    assert probed == [{0: 3, 1: 1}]
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT partition, next_offset, resets, reset_from, last_timestamp_ms "
            "FROM buffer_flush_marks ORDER BY partition"
        ).fetchall()
    assert rows == [(0, 0, 1, 4, None), (1, 2, 0, None, 1001), (2, 1, 0, None, None)]
    flush(database, [window(0, 0, [one] * 3)])  # the new log's increments, from 0: applied
    assert s.times_seen(database) == {a: 10}


class LosesCommitAnswers(PostgresFlushStore):
    """Commits, then fails as if the connection dropped before COMMIT's answer came."""

    lose = 1

    async def apply(self, windows: Sequence[PartitionWindow], emit: Any) -> FlushOutcome:
        out = await super().apply(windows, emit)
        if self.lose:
            self.lose -= 1
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return out


def test_a_flush_whose_commit_answer_was_lost_continues_exactly(database: str) -> None:
    (a,) = s.seed_groups(database, 1)
    acked: list[object] = []

    async def ack(tokens: Sequence[object]) -> None:
        acked.extend(tokens)

    async def body(store: PostgresFlushStore) -> None:
        lossy = LosesCommitAnswers(store._pool, group="g", topic="t")
        buffer = Buffer(lossy, interval=1.0, ack=ack, emit=_no_emit)
        for batch in (range(0, 10), range(10, 25)):
            items = [Item(0, o, o) for o in batch]
            async with buffer.lock:
                fresh = await buffer.admit(items)
                for i in fresh:
                    buffer.add(
                        0, i.offset, check_increment("issue_group", {"times_seen": 1}, {"id": a})
                    )
                buffer.hold(fresh)
            await buffer.flush(force=True)  # before: the second raised FlushConflict

    asyncio.run(_with_store(database, body))
    assert s.times_seen(database) == {a: 25}
    assert s.marks(database) == [(0, 25, 2, 25)]
    assert acked == list(range(25))
