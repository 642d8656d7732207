"""Schedule state in PostgreSQL: claimed slots (``schedule_run``) and failures.

``claim`` is the only writer of ``schedule_run``: ``INSERT ... ON CONFLICT DO NOTHING`` on
(schedule, slot) inside the caller's transaction. Two workers claiming the same slot
serialize on the primary key; the second one sees the conflict and does nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

AsyncConn = psycopg.AsyncConnection[Any]

KEEP_ROWS = 1000  # newest claimed slots kept per schedule


@dataclass(frozen=True)
class LastRun:
    schedule: str
    slot: dt.datetime
    kind: str
    claimed_at: dt.datetime
    duration_ms: float | None


@dataclass(frozen=True)
class FailureInfo:
    schedule: str
    failures: int
    last_failed_at: dt.datetime
    last_slot: dt.datetime
    last_error: str


async def last_slot(conn: AsyncConn, schedule: str) -> dt.datetime | None:
    """The newest claimed slot of ``schedule`` (any kind), or None."""
    cur = await conn.execute("SELECT max(slot) FROM schedule_run WHERE schedule = %s", (schedule,))
    row = await cur.fetchone()
    return row[0] if row else None


async def claim(
    conn: AsyncConn, schedule: str, slot: dt.datetime, *, kind: str, missed: int, worker: str
) -> bool:
    """Claim ``slot`` in the caller's transaction; False if another run already has it."""
    cur = await conn.execute(
        "INSERT INTO schedule_run (schedule, slot, kind, missed, claimed_by)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING slot",
        (schedule, slot, kind, missed, worker),
    )
    return await cur.fetchone() is not None


async def set_duration(conn: AsyncConn, schedule: str, slot: dt.datetime, ms: float) -> None:
    await conn.execute(
        "UPDATE schedule_run SET duration_ms = %s WHERE schedule = %s AND slot = %s",
        (ms, schedule, slot),
    )


async def record_failure(conn: AsyncConn, schedule: str, slot: dt.datetime, error: str) -> None:
    """Count a failed run (in its own transaction: the run's own one rolled back)."""
    await conn.execute(
        "INSERT INTO schedule_failure (schedule, failures, last_failed_at, last_slot, last_error)"
        " VALUES (%s, 1, now(), %s, %s) ON CONFLICT (schedule) DO UPDATE SET"
        " failures = schedule_failure.failures + 1, last_failed_at = now(),"
        " last_slot = EXCLUDED.last_slot, last_error = EXCLUDED.last_error",
        (schedule, slot, error[:2000]),
    )


async def prune(conn: AsyncConn, schedule: str) -> None:
    """Drop all but the newest ``KEEP_ROWS`` claimed slots of ``schedule``."""
    await conn.execute(
        "DELETE FROM schedule_run WHERE schedule = %s AND slot < ("
        " SELECT slot FROM schedule_run WHERE schedule = %s"
        " ORDER BY slot DESC OFFSET %s LIMIT 1)",
        (schedule, schedule, KEEP_ROWS),
    )


def last_runs(conn: psycopg.Connection[Any], names: Sequence[str]) -> dict[str, LastRun]:
    """The newest claimed slot per schedule (sync, for the CLI)."""
    rows = conn.execute(
        "SELECT DISTINCT ON (schedule) schedule, slot, kind, claimed_at, duration_ms"
        " FROM schedule_run WHERE schedule = ANY(%s) ORDER BY schedule, slot DESC",
        (list(names),),
    ).fetchall()
    return {r[0]: LastRun(*r) for r in rows}


def failures(conn: psycopg.Connection[Any], names: Sequence[str]) -> dict[str, FailureInfo]:
    rows = conn.execute(
        "SELECT schedule, failures, last_failed_at, last_slot, last_error"
        " FROM schedule_failure WHERE schedule = ANY(%s)",
        (list(names),),
    ).fetchall()
    return {r[0]: FailureInfo(*r) for r in rows}
