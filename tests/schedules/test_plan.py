"""Crontab parsing and slot planning (pure logic, no broker or database)."""

from __future__ import annotations

import datetime as dt

import pytest

from streams.schedules.crontab import Crontab, CrontabError
from streams.schedules.model import CatchUp, Run, Schedule
from streams.schedules.ticker import Claim, plan

UTC = dt.UTC


def t(  # noqa: PLR0917 - the positional fields of datetime itself
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


async def _noop(conn: object, run: Run) -> None:
    return None


def test_weekly_crontab_next_and_previous() -> None:
    weekly = Crontab.parse("0 9 * * mon")
    # 2026-11-29 is a Sunday.
    assert weekly.next_after(t(2026, 11, 29, 12)) == t(2026, 11, 30, 9)
    assert weekly.next_after(t(2026, 11, 30, 9)) == t(2026, 12, 7, 9)
    assert weekly.latest_at_or_before(t(2026, 11, 30, 9)) == t(2026, 11, 30, 9)
    assert weekly.latest_at_or_before(t(2026, 11, 30, 8, 59)) == t(2026, 11, 23, 9)


def test_crontab_fields() -> None:
    tab = Crontab.parse("*/15 8-10 1,15 * *")
    assert tab.next_after(t(2026, 1, 1, 10, 50)) == t(2026, 1, 15, 8, 0)
    assert tab.next_after(t(2026, 1, 1, 8, 14)) == t(2026, 1, 1, 8, 15)
    # Both day fields restricted: either matches (cron's rule). 2026-01-02 is a Friday.
    either = Crontab.parse("0 0 13 * 5")
    assert either.next_after(t(2026, 1, 1)) == t(2026, 1, 2)
    assert Crontab.parse("0 0 29 feb *").next_after(t(2026, 1, 1)) == t(2028, 2, 29)
    assert Crontab.parse("0 0 * * 7").next_after(t(2026, 11, 28)) == t(2026, 11, 29)


@pytest.mark.parametrize(
    "text", ["* * * *", "60 * * * *", "* 24 * * *", "5-1 * * * *", "*/0 * * * *", "0 0 31 feb *"]
)
def test_bad_crontabs_are_refused(text: str) -> None:
    with pytest.raises(CrontabError):
        Crontab.parse(text)


def every(seconds: float, catch_up: CatchUp = CatchUp.ONCE, grace: float = 1.0) -> Schedule:
    return Schedule("s", _noop, interval=seconds, catch_up=catch_up, grace=grace)


def test_due_slot_runs_once_and_not_again() -> None:
    s = every(2)
    now = t(2026, 1, 1, 0, 0, 4, 300000)
    assert plan(s, t(2026, 1, 1, 0, 0, 2), now) == [Claim(t(2026, 1, 1, 0, 0, 4), "run", 0)]
    assert plan(s, t(2026, 1, 1, 0, 0, 4), now) == []


def test_a_slow_tick_within_grace_runs_every_slot() -> None:
    s = every(2, grace=10)
    claims = plan(s, t(2026, 1, 1, 0, 0, 0), t(2026, 1, 1, 0, 0, 6, 500000))
    assert [c.slot.second for c in claims] == [2, 4, 6]
    assert {c.kind for c in claims} == {"run"}


def test_missed_slots_catch_up_once_skip_or_all() -> None:
    last, now = t(2026, 1, 1, 0, 0, 0), t(2026, 1, 1, 0, 0, 10, 500000)
    once = plan(every(2), last, now)
    # 2, 4, 6, 8 are older than the 1 s grace: one catch-up run stands for them; 10 is on time.
    assert once == [
        Claim(t(2026, 1, 1, 0, 0, 8), "catch_up", 3),
        Claim(now.replace(microsecond=0), "run", 0),
    ]
    skip = plan(every(2, CatchUp.SKIP), last, now)
    assert skip[0] == Claim(t(2026, 1, 1, 0, 0, 8), "skipped", 4)
    every_one = plan(every(2, CatchUp.ALL), last, now)
    assert [c.slot.second for c in every_one] == [2, 4, 6, 8, 10]


def test_a_new_schedule_does_not_run_its_history() -> None:
    s = every(60, grace=5)
    assert plan(s, None, t(2026, 1, 1, 0, 0, 30)) == []
    assert plan(s, None, t(2026, 1, 1, 0, 1, 3)) == [Claim(t(2026, 1, 1, 0, 1), "run", 0)]
    # Only the current slot, even when earlier ones are within the grace.
    fast = every(2, grace=30)
    assert plan(fast, None, t(2026, 1, 1, 0, 0, 9)) == [Claim(t(2026, 1, 1, 0, 0, 8), "run", 0)]


def test_defaults_fill_what_a_schedule_leaves_open() -> None:
    fast = Schedule("f", _noop, interval=2).with_defaults(CatchUp.SKIP, 60)
    assert (fast.catch_up, fast.grace) == (CatchUp.SKIP, 2)
    weekly = Schedule("w", _noop, crontab=Crontab.parse("0 9 * * 1")).with_defaults(
        CatchUp.ONCE, 60
    )
    assert weekly.grace == 60
    own = Schedule("o", _noop, interval=2, grace=10, catch_up=CatchUp.ALL)
    assert own.with_defaults(CatchUp.SKIP, 60) is own
