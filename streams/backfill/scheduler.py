"""The backfill scheduler: turns each table's processing state into batches, within budget.

Per run: budget = max rate - regular rows the relay drained this minute - backfill rows
already emitted this minute. For each model of this silo: a stored version above the
target does nothing; one below it resets lower to 0 and adopts the target; then
lower = max(min id, lower), and each batch's upper is the largest id among the first
``batch_size + 1`` ids >= lower (never more rows than the budget left). Batches already
emitted and still in flight are continued from, not emitted again (unless they look
lost: older than ``stale_after``). A table with no id >= lower is done: its state
becomes (0, version + 1).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from psycopg import sql

from streams.backfill import lease
from streams.backfill import metrics as m
from streams.backfill.batch import Batch
from streams.backfill.models import OutboxProducingModel
from streams.backfill.state import (
    AConn,
    budget,
    compare_and_set,
    get_state,
    mark_scheduled,
    record_emitted,
    target_version,
)
from streams.silo import SiloMode

log = logging.getLogger(__name__)

Emit = Callable[[Batch], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    max_rate: int  # rows per minute, regular drain included; 0 = no limit
    batch_size: int
    stale_after: dt.timedelta = dt.timedelta(minutes=10)


async def _ids_from(conn: AConn, table: str, lower: int, limit: int) -> tuple[int, int | None]:
    """(count, max id) of the first ``limit`` ids >= lower."""
    q = sql.SQL(
        "SELECT count(*), max(id) FROM (SELECT id FROM {t} WHERE id >= %s ORDER BY id LIMIT %s) s"
    ).format(t=sql.Identifier(table))
    cur = await conn.execute(q, (lower, limit))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), (int(row[1]) if row[1] is not None else None)


async def _min_id(conn: AConn, table: str) -> int:
    cur = await conn.execute(sql.SQL("SELECT min(id) FROM {t}").format(t=sql.Identifier(table)))
    row = await cur.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


async def plan(
    conn: AConn, model: OutboxProducingModel, limits: Limits, remaining: int | None
) -> list[Batch]:
    """The next batches of one model (may also reset or complete its state)."""
    table = model.table
    state = await get_state(conn, table)
    target = await target_version(conn, model)
    if state.version > target:
        return []
    if state.version < target:
        if not await compare_and_set(conn, table, state.key, (0, target)):
            return []  # someone else moved it; next run
        state = await get_state(conn, table)
    expect = state.lower
    flight = state.in_flight_from()
    fresh = state.scheduled_at is not None and (
        dt.datetime.now(dt.UTC) - state.scheduled_at < limits.stale_after
    )
    if flight is not None and fresh:
        expect = flight
    lower = max(expect, await _min_id(conn, table))
    if remaining is not None and remaining <= 0:
        # No budget left this minute, but a table with nothing left must still be marked
        # done now, not at the next minute (the command's progress would sit at 100%).
        if expect == state.lower and (await _ids_from(conn, table, lower, 1))[1] is None:
            await compare_and_set(conn, table, state.key, (0, state.version + 1))
        return []
    batches: list[Batch] = []
    while remaining is None or remaining > 0:
        limit = limits.batch_size + 1
        if remaining is not None:
            limit = min(limit, remaining)
        count, upper = await _ids_from(conn, table, lower, limit)
        if upper is None:
            if not batches and expect == state.lower:  # nothing left, nothing in flight
                await compare_and_set(conn, table, state.key, (0, state.version + 1))
            break
        batches.append(Batch(table, lower, upper, state.version, expect, count))
        if remaining is not None:
            remaining -= count
        lower = expect = upper + 1
    return batches


async def schedule(
    conn: AConn,
    models: Sequence[OutboxProducingModel],
    silo: SiloMode,
    limits: Limits,
    emit: Emit,
    *,
    holder: str | None = None,
) -> list[Batch]:
    """Plan and emit this run's batches for ``models``; returns them.

    Emits nothing while a ``streams backfill`` other than ``holder`` holds the silo's
    lease (``streams.backfill.lease``): its rate is then the only one.
    """
    held = await lease.current(conn, silo)
    if held is not None and held.holder != holder:
        log.info("backfill.schedule.yielded", extra={"holder": held.holder})
        return []
    remaining = await budget(conn, silo, limits.max_rate)
    emitted: list[Batch] = []
    for model in models:
        batches = await plan(conn, model, limits, remaining)
        for b in batches:
            await emit(b)
            m.BATCHES.labels(b.table, "emitted").inc()
        if batches:
            rows = sum(b.rows for b in batches)
            await mark_scheduled(conn, model.table, batches[-1].version, batches[-1].upper + 1)
            await record_emitted(conn, silo, rows)
            if remaining is not None:
                remaining -= rows
        emitted += batches
    return emitted


async def done(conn: AConn, model: OutboxProducingModel) -> bool:
    """Whether the model is fully backfilled up to its target version."""
    state = await get_state(conn, model.table)
    return state.version > await target_version(conn, model)
