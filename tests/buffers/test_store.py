"""PostgresFlushStore against the real PostgreSQL: marks, rows, parking, completions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from psycopg_pool import AsyncConnectionPool

from streams.buffers.models import check_increment
from streams.buffers.store import FlushOutcome, PostgresFlushStore
from streams.buffers.window import PartitionWindow, RowSums
from tests.buffers import support as s


def window(
    partition: int, start: int, rows: list[tuple[int, int, dict[str, Any], bool]]
) -> PartitionWindow:
    """A window of ``(group id, times_seen, extra, signal_only)`` increments from ``start``."""
    w = PartitionWindow(partition, start, start, 0)
    for offset, (gid, n, extra, signal_only) in enumerate(rows, start):
        inc = check_increment("issue_group", {"times_seen": n}, {"id": gid}, extra, signal_only)
        w.add(inc, offset)
        w.hold(offset, offset, 0.0)
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
    assert (out.applied, out.statements, out.written) == ({0, 3}, 2, 2)
    assert s.times_seen(database) == {a: 5, b: 1}
    assert s.marks(database) == [(0, 2, 1, 2), (3, 1, 1, 1)]
    out = flush(database, [window(0, 2, [(a, 1, {}, False)])])
    assert s.times_seen(database)[a] == 6
    assert s.marks(database)[0] == (0, 3, 2, 3)


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
    assert [(p[1], p[2], p[3], p[4].split(":")[0]) for p in parked] == [
        ({"id": b + 1000}, {"times_seen": 5}, 1, "row_missing"),
        ({"id": b}, {"times_seen": 1}, 1, "DataError"),
    ]
    assert s.marks(database) == [(0, 3, 1, 3)]


def test_signal_only_rows_are_emitted_and_write_nothing(database: str) -> None:
    (a,) = s.seed_groups(database, 1)
    emitted: list[tuple[PartitionWindow, RowSums]] = []
    out = flush(database, [window(0, 0, [(a, 2, {}, True), (a, 3, {}, True)])], emitted)
    assert out.signalled == 1 and out.statements == 0
    assert [(r.columns, r.increments) for _, r in emitted] == [({"times_seen": 5}, 2)]
    assert s.times_seen(database) == {a: 0}
