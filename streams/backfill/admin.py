"""``streams backfill status`` and ``streams backfill --reset``: read and rewind the state.

The processing state only moves forward on its own (``state.compare_and_set``); a reset
is the one operator step back: the table's state goes to (0, target version), so the
next run (the command or the workers' timer) re-emits every row of the table.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from streams.backfill import lease
from streams.backfill.models import OutboxProducingModel
from streams.backfill.state import AConn, get_state, target_version
from streams.silo import SiloMode


@dataclass(frozen=True)
class TableStatus:
    model: str
    table: str
    status: str  # done, running, pending
    version: int
    target: int
    rows: int
    left: int


async def _count(conn: AConn, table: str, lower: int = 0) -> int:
    q = sql.SQL("SELECT count(*) FROM {t} WHERE id >= %s").format(t=sql.Identifier(table))
    cur = await conn.execute(q, (lower,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def status(conn: AConn, models: list[OutboxProducingModel]) -> list[TableStatus]:
    """Where each model's backfill stands."""
    out = []
    for model in models:
        state = await get_state(conn, model.table)
        target = await target_version(conn, model)
        rows = await _count(conn, model.table)
        if state.version > target:
            shown, left = "done", 0
        else:
            left = await _count(conn, model.table, state.lower)
            shown = "running" if state.in_flight_from() is not None or state.lower else "pending"
        out.append(TableStatus(model.name, model.table, shown, state.version, target, rows, left))
    return out


def render(rows: list[TableStatus], held: lease.Lease | None) -> str:
    """The status table, and who holds the scheduling lease."""
    lines = [f"{'model':24} {'table':24} {'status':8} {'version':>9} {'rows':>10} {'left':>10}"]
    for r in rows:
        version = f"{r.version}/{r.target}" if r.status != "done" else f"{r.target}"
        lines.append(
            f"{r.model:24} {r.table:24} {r.status:8} {version:>9} {r.rows:>10,} {r.left:>10,}"
        )
    lines.append(
        f"scheduling: `streams backfill` on {held.holder} at {held.max_rate:,} rows/min"
        if held
        else "scheduling: the workers' timer (no `streams backfill` running)"
    )
    return "\n".join(lines)


async def reset(conn: AConn, model: OutboxProducingModel, silo: SiloMode) -> int:
    """Rewind ``model`` to (0, target version); returns its row count. Refused
    (``lease.LeaseHeld``) while a ``streams backfill`` is scheduling."""
    held = await lease.current(conn, silo)
    if held is not None:
        raise lease.LeaseHeld(
            f"`streams backfill` on {held.holder} is running; reset {model.name} after it ends"
        )
    await get_state(conn, model.table)  # creates the row on first use
    await conn.execute(
        "UPDATE outbox_backfill_state SET lower = 0, version = %s, progress = NULL,"
        " next_lower = NULL, next_version = NULL, scheduled_at = NULL, updated_at = now()"
        " WHERE table_name = %s",
        (await target_version(conn, model), model.table),
    )
    return await _count(conn, model.table)
