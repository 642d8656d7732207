"""Decide which slots of a schedule are due and claim them, one transaction per slot.

Every worker runs a ``Ticker`` on a timer; any number of them may tick the same
schedule at once. A slot runs where its claim row was inserted: the claim, whatever
``fire`` enqueues and the run's duration commit together, so a crash before the commit
leaves the slot unclaimed (the next tick anywhere runs it) and a crash after it leaves
nothing to redo.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from streams import metrics
from streams.schedules import state
from streams.schedules.model import CatchUp, Run, Schedule

log = logging.getLogger(__name__)

UTC = dt.UTC
_TINY = dt.timedelta(microseconds=1)
PRUNE_EVERY = 200  # claims per process between two prunes of a schedule's old rows
MAX_BACKOFF = 60.0

RUNS = metrics.counter(
    "streams_schedule_runs_total", "Schedule slots claimed, by kind.", ("schedule", "kind")
)
FAILURES = metrics.counter(
    "streams_schedule_failures_total", "Schedule runs that failed (rolled back).", ("schedule",)
)
DURATION = metrics.histogram(
    "streams_schedule_run_seconds", "Time to claim a slot and run it.", ("schedule",)
)
LAST_SUCCESS = metrics.gauge(
    "streams_schedule_last_success_timestamp_seconds",
    "When this process last ran the schedule successfully.",
    ("schedule",),
)
NEXT_RUN = metrics.gauge(
    "streams_schedule_next_run_timestamp_seconds",
    "The slot that should run next (after the newest claimed one).",
    ("schedule",),
)


@dataclass(frozen=True)
class Claim:
    slot: dt.datetime
    kind: str  # run | catch_up | skipped
    missed: int


def plan(schedule: Schedule, last: dt.datetime | None, now: dt.datetime) -> list[Claim]:
    """The claims to attempt now, oldest first, given the newest claimed slot ``last``.

    Slots older than ``grace`` are missed: handled by the catch-up policy. A schedule
    that never ran does not catch up on its history.
    """
    latest = schedule.latest_slot(now)
    if latest is None or (last is not None and latest <= last):
        return []
    cutoff = now - dt.timedelta(seconds=schedule.grace_seconds)
    if last is None:  # first run ever: its current slot if on time, none of its history
        return [Claim(latest, "run", 0)] if latest >= cutoff else []
    claims: list[Claim] = []
    if last < cutoff - _TINY:
        claims.extend(_catch_up(schedule, last, cutoff - _TINY))
    fresh_after = max(last, cutoff - _TINY)
    limit = max(1, schedule.max_catch_up)
    claims.extend(Claim(s, "run", 0) for s in schedule.slots_between(fresh_after, now, limit))
    return claims


def _catch_up(schedule: Schedule, last: dt.datetime, until: dt.datetime) -> list[Claim]:
    if schedule.catch_up_policy is CatchUp.ALL:
        out: list[Claim] = []
        slot = schedule.next_slot(last)
        while slot is not None and slot <= until and len(out) < schedule.max_catch_up:
            out.append(Claim(slot, "catch_up", 0))
            slot = schedule.next_slot(slot)
        return out
    late = schedule.slots_between(last, until, 1000)
    if not late:
        return []
    if schedule.catch_up_policy is CatchUp.SKIP:
        return [Claim(late[-1], "skipped", len(late))]
    return [Claim(late[-1], "catch_up", len(late) - 1)]


ConnectionSource = Callable[[], Awaitable[Any]]  # returns an AsyncConnectionPool


class Ticker:
    """Runs the due slots of ``schedules()`` each time ``tick`` is awaited."""

    def __init__(
        self,
        schedules: Callable[[], Sequence[Schedule]],
        pool: ConnectionSource,
        *,
        worker: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._schedules = schedules
        self._pool = pool
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self._clock = clock
        self._known_last: dict[str, dt.datetime] = {}
        self._retry_at: dict[str, float] = {}
        self._failures_in_row: dict[str, int] = {}
        self._claims = 0
        self._lock = asyncio.Lock()

    async def tick(self) -> None:
        """Claim and run every due slot; failures are logged, counted and retried later."""
        if self._lock.locked():
            return  # the previous tick still runs (a slow run): never overlap
        async with self._lock:
            for schedule in self._schedules():
                await self._tick_schedule(schedule)

    async def _tick_schedule(self, schedule: Schedule) -> None:
        now_ts = self._clock()
        if now_ts < self._retry_at.get(schedule.name, 0.0):
            return
        now = dt.datetime.fromtimestamp(now_ts, UTC)
        known = self._known_last.get(schedule.name)
        latest = schedule.latest_slot(now)
        if latest is None or (known is not None and latest <= known):
            return  # nothing new is due: no database round trip
        try:
            pool = await self._pool()
            async with pool.connection() as conn:
                await conn.set_autocommit(True)
                try:
                    await self._run_due(conn, schedule, now)
                finally:
                    await conn.set_autocommit(False)
        except Exception as exc:  # the database itself failed: retried on a later tick
            FAILURES.labels(schedule.name).inc()
            self._back_off(schedule, now_ts)
            log.warning(
                "schedule.tick.failed", extra={"schedule": schedule.name, "error": repr(exc)}
            )

    async def _run_due(self, conn: state.AsyncConn, schedule: Schedule, now: dt.datetime) -> None:
        last = await state.last_slot(conn, schedule.name)
        for claim in plan(schedule, last, now):
            if not await self._run_one(conn, schedule, claim):
                # Retried after the back-off; meanwhile the gauge shows the overdue slot.
                NEXT_RUN.labels(schedule.name).set(claim.slot.timestamp())
                return
            last = claim.slot
        # Nothing left to claim up to ``now``: a schedule that never ran (and whose
        # current slot was too old to run) waits for its next slot like the others.
        known = last if last is not None else schedule.latest_slot(now)
        if known is None:
            return
        self._known_last[schedule.name] = known
        following = schedule.next_slot(known)
        if following is not None:
            NEXT_RUN.labels(schedule.name).set(following.timestamp())

    async def _run_one(self, conn: state.AsyncConn, schedule: Schedule, claim: Claim) -> bool:
        """Claim and run one slot; False if the run failed (later slots wait)."""
        run = Run(schedule.name, claim.slot, claim.kind != "run", claim.missed)
        started = time.perf_counter()
        try:
            async with _transaction(conn):
                if not await state.claim(
                    conn,
                    schedule.name,
                    claim.slot,
                    kind=claim.kind,
                    missed=claim.missed,
                    worker=self.worker,
                ):
                    return True  # another worker has it
                if claim.kind != "skipped":
                    await schedule.fire(conn, run)
                elapsed = time.perf_counter() - started
                await state.set_duration(conn, schedule.name, claim.slot, elapsed * 1000.0)
        except Exception as exc:
            await self._failed(conn, schedule, claim, exc)
            return False
        self._succeeded(schedule, claim, elapsed)
        if self._claims % PRUNE_EVERY == 0:
            await state.prune(conn, schedule.name)
        return True

    def _succeeded(self, schedule: Schedule, claim: Claim, elapsed: float) -> None:
        self._claims += 1
        self._failures_in_row.pop(schedule.name, None)
        self._retry_at.pop(schedule.name, None)
        RUNS.labels(schedule.name, claim.kind).inc()
        if claim.kind != "skipped":
            DURATION.labels(schedule.name).observe(elapsed)
            LAST_SUCCESS.labels(schedule.name).set(time.time())
        log.info(
            "schedule.run",
            extra={
                "schedule": schedule.name,
                "slot": claim.slot.isoformat(),
                "kind": claim.kind,
                "missed": claim.missed,
                "seconds": round(elapsed, 4),
                "worker": self.worker,
            },
        )

    async def _failed(
        self, conn: state.AsyncConn, schedule: Schedule, claim: Claim, exc: Exception
    ) -> None:
        FAILURES.labels(schedule.name).inc()
        self._back_off(schedule, self._clock())
        log.warning(
            "schedule.run.failed",
            extra={
                "schedule": schedule.name,
                "slot": claim.slot.isoformat(),
                "error": repr(exc),
                "retry_in": round(self._retry_at[schedule.name] - self._clock(), 1),
            },
        )
        try:
            await state.record_failure(conn, schedule.name, claim.slot, repr(exc))
        except Exception as db_exc:  # the metric and the log line above still tell
            log.warning(
                "schedule.failure_record.failed",
                extra={"schedule": schedule.name, "error": repr(db_exc)},
            )

    def _back_off(self, schedule: Schedule, now_ts: float) -> None:
        n = self._failures_in_row.get(schedule.name, 0) + 1
        self._failures_in_row[schedule.name] = n
        self._retry_at[schedule.name] = now_ts + min(MAX_BACKOFF, 0.5 * 2 ** (n - 1))


def _transaction(conn: state.AsyncConn) -> AbstractAsyncContextManager[Any]:
    return conn.transaction()
