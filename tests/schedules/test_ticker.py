"""The ticker on a real PostgreSQL, in process: concurrent tickers claim each slot once;
a failing run rolls back, is recorded, backs off and shows in the listing."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from streams.schedules.listing import rows
from streams.schedules.model import CatchUp, Run, Schedule
from streams.schedules.ticker import Ticker

T0 = dt.datetime(2026, 11, 30, 9, 0, 0, tzinfo=dt.UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _fire(conn: Any, run: Run) -> None:
    await conn.execute("INSERT INTO probe_runs (slot) VALUES (%s)", (run.slot,))


async def _boom(conn: Any, run: Run) -> None:
    await conn.execute("INSERT INTO probe_runs (slot) VALUES (%s)", (run.slot,))
    raise RuntimeError("the enqueue failed")


def _slots(dsn: str) -> list[dt.datetime]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT slot FROM probe_runs ORDER BY slot")]


def _setup(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE probe_runs (slot timestamptz NOT NULL)")


def test_concurrent_tickers_claim_each_slot_once(database: str) -> None:
    _setup(database)
    schedule = Schedule("s", _fire, interval=10, grace=30, catch_up=CatchUp.ONCE)
    clock = Clock(T0 + 1)

    async def run() -> None:
        async with AsyncConnectionPool(database, min_size=4, max_size=8, open=False) as pool:

            async def get_pool() -> AsyncConnectionPool:
                return pool

            tickers = [Ticker(lambda: [schedule], get_pool, clock=clock) for _ in range(4)]
            for step in range(6):  # 6 slots, 4 tickers racing on each
                clock.now = T0 + 10 * step + 1
                await asyncio.gather(*(t.tick() for t in tickers))

    asyncio.run(run())
    expected = [dt.datetime.fromtimestamp(T0 + 10 * k, dt.UTC) for k in range(6)]
    assert _slots(database) == expected


def test_a_failing_run_rolls_back_and_is_listed(database: str) -> None:
    _setup(database)
    schedule = Schedule("failing", _boom, interval=10, grace=30, catch_up=CatchUp.ONCE)
    clock = Clock(T0 + 1)

    async def run() -> None:
        async with AsyncConnectionPool(database, min_size=1, max_size=2, open=False) as pool:

            async def get_pool() -> AsyncConnectionPool:
                return pool

            ticker = Ticker(lambda: [schedule], get_pool, clock=clock)
            await ticker.tick()
            await ticker.tick()  # within the back-off: not tried again
            clock.now += 5
            await ticker.tick()

    asyncio.run(run())
    assert _slots(database) == [], "the run's own writes rolled back with the claim"
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM schedule_run").fetchone() == (0,)
        failures = conn.execute("SELECT failures, last_error FROM schedule_failure").fetchone()
        (row,) = rows(conn, [schedule], dt.datetime.fromtimestamp(T0 + 6, dt.UTC))
    assert failures is not None and failures[0] == 2 and "the enqueue failed" in failures[1]
    assert row.status.startswith("failing (2 failures")
