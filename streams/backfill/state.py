"""Durable backfill state in PostgreSQL: processing state, target version, the budget.

The processing state of a table is ``(lower, version)``, default ``(0, 1)``. It only
moves forward in (version, lower) order, and only by compare-and-set: an update names
the state it expects, so two schedulers (or a scheduler and a re-delivered batch) can
never move it backwards.

Each move writes a fresh token (``moved_by``). When the answer to a move is lost with
its connection, the token is remembered in this process; the batch's retry re-reads
the state (``lost_move_landed``) and learns whether that move committed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from streams import marks
from streams.backfill import metrics as m
from streams.backfill.models import OutboxProducingModel
from streams.silo import SiloMode

AConn = psycopg.AsyncConnection[Any]


@dataclass(frozen=True)
class State:
    lower: int
    version: int
    progress: int | None = None  # last instance written by the batch in progress
    next_lower: int | None = None  # batches up to here are emitted and in flight
    next_version: int | None = None
    scheduled_at: dt.datetime | None = None
    moved_by: str | None = None  # the token of the compare-and-set that moved it last

    @property
    def key(self) -> tuple[int, int]:
        return (self.lower, self.version)

    def in_flight_from(self) -> int | None:
        """Where the scheduler continues, when batches of this version are in flight."""
        if self.next_version == self.version and self.next_lower is not None:
            return self.next_lower if self.next_lower > self.lower else None
        return None


async def get_state(conn: AConn, table: str) -> State:
    """The table's state, created as (0, 1) on first use; also sets the lower-bound gauge."""
    await conn.execute(
        "INSERT INTO outbox_backfill_state (table_name) VALUES (%s) ON CONFLICT DO NOTHING",
        (table,),
    )
    cur = await conn.execute(
        "SELECT lower, version, progress, next_lower, next_version, scheduled_at, moved_by"
        " FROM outbox_backfill_state WHERE table_name = %s",
        (table,),
    )
    row = await cur.fetchone()
    assert row is not None
    state = State(int(row[0]), int(row[1]), row[2], row[3], row[4], row[5], row[6])
    m.set_lower_bound(table, state.lower, state.version)
    return state


async def compare_and_set(
    conn: AConn, table: str, expect: tuple[int, int], new: tuple[int, int]
) -> bool:
    """Move (lower, version) from ``expect`` to ``new`` if it is still ``expect``.

    Refuses (returns False) when the state moved meanwhile or when ``new`` would be a
    step backwards. Clears the batch progress marker (it belonged to the old state).
    """
    (lo0, v0), (lo1, v1) = expect, new
    if (v1, lo1) <= (v0, lo0):
        return False
    token = uuid.uuid4().hex
    try:
        cur = await conn.execute(
            "UPDATE outbox_backfill_state SET lower = %s, version = %s, progress = NULL,"
            " moved_by = %s, updated_at = now()"
            " WHERE table_name = %s AND lower = %s AND version = %s",
            (lo1, v1, token, table, lo0, v0),
        )
    except psycopg.OperationalError:
        if len(_LOST) > 1000:  # never resolved (no retry came): forget the oldest
            _LOST.pop(next(iter(_LOST)))
        _LOST[(table, expect, new)] = token  # committed or not: the retry finds out
        raise
    moved = cur.rowcount == 1
    if moved:
        m.set_lower_bound(table, lo1, v1)
    return moved


# (table, expected state, new state) -> the token of a move whose answer was lost
_LOST: dict[tuple[str, tuple[int, int], tuple[int, int]], str] = {}


def lost_move_landed(
    state: State, table: str, expect: tuple[int, int], new: tuple[int, int]
) -> bool:
    """Whether a move ``expect`` -> ``new`` made by this process, whose answer was lost
    with its connection, had committed: ``state`` (re-read) carries its token. Counted
    in ``streams_commit_outcomes_resolved_total{kind="backfill_progress"}``."""
    token = _LOST.pop((table, expect, new), None)
    if token is None:
        return False
    landed = state.moved_by == token
    marks.resolved("backfill_progress", landed)
    return landed


async def mark_scheduled(conn: AConn, table: str, version: int, next_lower: int) -> None:
    """Record that batches of ``version`` up to ``next_lower`` - 1 are emitted."""
    await conn.execute(
        "UPDATE outbox_backfill_state SET next_lower = %s, next_version = %s,"
        " scheduled_at = now() WHERE table_name = %s AND version = %s",
        (next_lower, version, table, version),
    )


async def target_version(conn: AConn, model: OutboxProducingModel) -> int:
    """min(operator override, coded replication version)."""
    cur = await conn.execute(
        "SELECT target_version FROM outbox_backfill_overrides WHERE table_name = %s",
        (model.table,),
    )
    row = await cur.fetchone()
    coded = model.replication_version
    return coded if row is None else min(coded, int(row[0]))


async def set_override(conn: AConn, table: str, version: int | None) -> None:
    """Hold ``table`` at ``version`` (None removes the override)."""
    if version is None:
        await conn.execute("DELETE FROM outbox_backfill_overrides WHERE table_name = %s", (table,))
        return
    await conn.execute(
        "INSERT INTO outbox_backfill_overrides (table_name, target_version) VALUES (%s, %s)"
        " ON CONFLICT (table_name) DO UPDATE SET target_version = EXCLUDED.target_version,"
        " set_at = now()",
        (table, version),
    )


def _outbox_tables(silo: SiloMode) -> list[str]:
    if silo is SiloMode.REGION:
        return ["region_outbox"]
    if silo is SiloMode.CONTROL:
        return ["control_outbox"]
    return ["region_outbox", "control_outbox"]


async def budget(conn: AConn, silo: SiloMode, max_rate: int) -> int | None:
    """Rows the backfill may still emit this minute (None: no limit, max rate 0).

    max rate - regular rows the relay drained this minute - backfill rows emitted
    this minute.
    """
    if max_rate <= 0:
        return None
    cur = await conn.execute(
        "SELECT coalesce((SELECT sum(regular_rows) FROM outbox_drain_minutes"
        "  WHERE minute = date_trunc('minute', now()) AND outbox_table = ANY(%s)), 0),"
        " coalesce((SELECT emitted_rows FROM outbox_backfill_minutes"
        "  WHERE minute = date_trunc('minute', now()) AND silo = %s), 0)",
        (_outbox_tables(silo), silo.value),
    )
    row = await cur.fetchone()
    assert row is not None
    return max(0, max_rate - int(row[0]) - int(row[1]))


async def record_emitted(conn: AConn, silo: SiloMode, rows: int) -> None:
    await conn.execute(
        "INSERT INTO outbox_backfill_minutes AS b (minute, silo, emitted_rows)"
        " VALUES (date_trunc('minute', now()), %s, %s) ON CONFLICT (minute, silo)"
        " DO UPDATE SET emitted_rows = b.emitted_rows + EXCLUDED.emitted_rows",
        (silo.value, rows),
    )
    await conn.execute(
        "DELETE FROM outbox_backfill_minutes WHERE minute < now() - interval '1 hour'"
    )
