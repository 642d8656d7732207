"""The offset/time table: interpolation, extrapolation, flat runs, never NaN."""

from __future__ import annotations

import math

import pytest

from streams.lag.timelag import OffsetTimeTable


def steady(rate: float, seconds: int, start: float = 1000.0) -> OffsetTimeTable:
    """A partition receiving ``rate`` messages/s, polled once a second."""
    table = OffsetTimeTable(capacity=200)
    for s in range(seconds + 1):
        table.add(int(rate * s), start + s)
    return table


def test_interpolates_between_the_points_around_the_offset() -> None:
    table = steady(rate=100, seconds=10)  # offset 100*s appended at 1000+s
    assert table.appended_at(250) == pytest.approx(1002.5)
    assert table.lag_seconds(250, now=1010.0) == pytest.approx(7.5)


def test_caught_up_is_zero_not_nan() -> None:
    table = steady(rate=100, seconds=3)
    assert table.lag_seconds(300, now=2000.0) == 0.0
    assert table.lag_seconds(10_000, now=2000.0) == 0.0  # committed past the end
    assert OffsetTimeTable().lag_seconds(0, now=5.0) == 0.0  # empty table


def test_extrapolates_before_the_oldest_point_with_the_table_rate() -> None:
    table = OffsetTimeTable(capacity=3)
    for s in range(10):
        table.add(1000 + 100 * s, 1000.0 + s)  # only the last three points stay
    assert [p.offset for p in table.points] == [1700, 1800, 1900]
    # offset 1000 lies 700 messages before the oldest point at 100 msg/s: 7 s earlier
    assert table.appended_at(1000) == pytest.approx(1000.0)


def test_single_point_gives_a_finite_lower_bound() -> None:
    table = OffsetTimeTable()
    table.add(50, 100.0)
    lag = table.lag_seconds(10, now=130.0)
    assert not math.isnan(lag)
    assert lag == pytest.approx(30.0)


def test_idle_partition_keeps_two_points_and_dates_the_next_message_after_the_idle_run() -> None:
    table = OffsetTimeTable(capacity=4)
    table.add(100, 10.0)
    for t in range(11, 60):
        table.add(100, float(t))  # idle for 50 polls
    assert [(p.offset, p.time) for p in table.points] == [(100, 10.0), (100, 59.0)]
    table.add(110, 60.0)  # ten messages during the last second
    # message 100 is newer than the last idle poll, not as old as the first one
    assert 59.0 <= table.appended_at(100) <= 60.0  # type: ignore[operator]
    # message 99 already existed at the first poll: extrapolated to before it
    assert table.appended_at(99) < 10.0  # type: ignore[operator]


def test_offsets_going_backwards_reset_the_table() -> None:
    table = steady(rate=10, seconds=5)
    table.add(3, 2000.0)  # the partition was recreated
    assert [(p.offset, p.time) for p in table.points] == [(3, 2000.0)]


def test_clock_stepping_back_is_ignored() -> None:
    table = OffsetTimeTable()
    table.add(10, 100.0)
    table.add(20, 99.0)
    assert [(p.offset, p.time) for p in table.points] == [(10, 100.0)]


def test_capacity_is_at_least_two() -> None:
    with pytest.raises(ValueError):
        OffsetTimeTable(capacity=1)
