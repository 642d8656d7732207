"""Flush windows: per-row sums, last-write-wins by event time, offsets covered."""

from __future__ import annotations

import datetime as dt
from typing import Any

from streams.buffers.models import Increment, check_increment
from streams.buffers.window import PartitionWindow


def inc(gid: int, n: int, at_ms: int, signal_only: bool = False, **extra: Any) -> Increment:
    return check_increment(
        "issue_group", {"times_seen": n}, {"id": gid}, extra, signal_only, event_time_ms=at_ms
    )


def ts(second: int) -> dt.datetime:
    return dt.datetime(2025, 1, 1, 0, 0, second, tzinfo=dt.UTC)


def test_increments_of_a_row_are_summed_and_extra_takes_the_latest_event() -> None:
    w = PartitionWindow(partition=1, start=10, next=10, generation=0)
    w.add(inc(1, 2, 2_000, level="newer", last_seen=ts(9)), 10)
    w.add(inc(1, 3, 1_000, level="older", last_seen=ts(5)), 11)  # arrives late
    w.add(inc(2, 1, 1_500), 12)
    w.add(inc(2, 4, 1_600, signal_only=True), 13)
    for offset in (10, 11, 12, 13):
        w.hold(offset, offset, closes_at=100.0)
    assert len(w.rows) == 3  # signal_only increments of row 2 are a row of their own
    one = w.rows[("issue_group", (("id", 1),), False)]
    assert one.columns == {"times_seen": 5}
    assert one.extra_values() == {"level": "newer", "last_seen": int(ts(9).timestamp() * 1000)}
    assert (one.first_offset, one.last_offset, one.increments) == (10, 11, 2)
    assert (w.start, w.next, w.held) == (10, 14, [10, 11, 12, 13])


def test_monotonic_columns_keep_the_maximum_even_from_an_older_event() -> None:
    w = PartitionWindow(0, 0, 0, 0)
    w.add(inc(1, 1, 5_000, last_seen=ts(1)), 0)
    w.add(inc(1, 1, 1_000, last_seen=ts(30)), 1)  # clock skew upstream
    assert w.rows[("issue_group", (("id", 1),), False)].extra_values() == {
        "last_seen": int(ts(30).timestamp() * 1000)
    }


def test_a_failed_window_absorbs_what_arrived_meanwhile_as_one_window() -> None:
    old = PartitionWindow(0, 5, 5, 0)
    old.add(inc(1, 2, 1_000, level="a"), 5)
    old.hold(5, "m5", 50.0)
    new = old.successor()
    assert (new.start, new.next) == (6, 6)
    new.add(inc(1, 3, 2_000, level="b"), 6)
    new.add(inc(2, 1, 2_000), 7)
    new.hold(6, "m6", 60.0)
    new.hold(7, "m7", 60.0)
    old.absorb(new)
    assert (old.start, old.next, old.held, old.closes_at) == (5, 8, ["m5", "m6", "m7"], 50.0)
    row = old.rows[("issue_group", (("id", 1),), False)]
    assert (row.columns, row.extra_values(), row.increments) == (
        {"times_seen": 5},
        {"level": "b"},
        2,
    )


def test_rows_read_column_by_column_sum_as_the_same_rows_one_by_one() -> None:
    from streams.buffers.models import MODELS
    from streams.buffers.wire import PlainRows

    plain = PlainRows(
        MODELS["issue_group"],
        False,
        (("id", [1, 2, 1]),),
        (("times_seen", [3, 1, 4]), ("num_comments", [0, 2, 1])),
        [5, 6, 7],
        [2, 1, 3],
    )
    by_columns, one_by_one = PartitionWindow(0, 0, 0, 0), PartitionWindow(0, 0, 0, 0)
    by_columns.add(inc(1, 1, 1), 7)
    one_by_one.add(inc(1, 1, 1), 7)
    by_columns.add_plain(plain, 8)
    for i in plain.increments():
        one_by_one.add(i, 8)
    assert by_columns.rows == one_by_one.rows
    row = by_columns.rows[("issue_group", (("id", 1),), False)]
    assert row.columns == {"times_seen": 8, "num_comments": 1}
    assert (row.first_offset, row.last_offset, row.increments) == (7, 8, 6)
    assert by_columns.increments == one_by_one.increments == 7


def test_rows_by_columns_row_by_row_and_absorbed_stay_one_sum_per_row() -> None:
    """``add_plain`` finds rows by their filter value alone: a row first seen row by
    row, or brought in by ``absorb``, must be the same sums, never a second one."""
    from streams.buffers.models import MODELS
    from streams.buffers.wire import PlainRows

    def plain(ids: list[int]) -> PlainRows:
        n = len(ids)
        return PlainRows(
            MODELS["issue_group"],
            False,
            (("id", ids),),
            (("times_seen", [1] * n),),
            [1] * n,
            [1] * n,
        )

    w, later = PartitionWindow(0, 0, 0, 0), PartitionWindow(0, 0, 0, 0)
    w.add_plain(plain([1, 2]), 0)
    w.add(inc(2, 10, 1, level="x"), 1)  # row by row, onto a row first read by columns
    w.add(inc(3, 10, 1), 2)  # a row first seen row by row ...
    w.add(inc(3, 1, 1, signal_only=True), 3)  # (signal_only: a row of its own)
    w.add_plain(plain([3, 1]), 4)  # ... then by columns
    later.add_plain(plain([4, 3]), 9)
    w.absorb(later)  # row 4 new to w, row 3 summed into w's
    w.add_plain(plain([4, 5]), 10)
    totals = {
        r.filters[0][1]: r.columns["times_seen"] for r in w.rows.values() if not r.signal_only
    }
    assert totals == {1: 2, 2: 11, 3: 12, 4: 2, 5: 1}
    assert len(w.rows) == 6
    four = w.rows[("issue_group", (("id", 4),), False)]
    assert (four.first_offset, four.last_offset, four.increments) == (9, 10, 2)
