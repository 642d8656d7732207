"""One backfill batch: the event on ``outbox-backfill-batches`` and its processing.

Processing writes the outbox row(s) of each instance in [lower, upper] in a transaction
of its own, through the outbox write API, so the relay publishes them. Each instance's
transaction also records it as the batch's progress, so a batch re-delivered after a
crash resumes after the last instance written instead of writing it twice. At the end
the processing state moves to (upper + 1, version), only if it is still the state the
batch started from. A session advisory lock per table keeps two processors (two workers
during a rebalance, or the CLI next to a worker) from working on one table at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg

from streams.backfill import metrics as m
from streams.backfill.models import OutboxProducingModel
from streams.backfill.state import AConn, compare_and_set, get_state, lost_move_landed
from streams.errors import RetryLater
from streams.outbox.write import build_insert

# Instances per round trip; each still commits in its own transaction.
CHUNK = 100


@dataclass(frozen=True)
class Batch:
    table: str
    lower: int
    upper: int
    version: int
    state_lower: int  # the processing state's lower this batch applies to
    rows: int = 0  # instances in the range when it was scheduled (not on the wire)

    def value(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "lower": self.lower,
            "upper": self.upper,
            "version": self.version,
            "state_lower": self.state_lower,
            "emitted_at": int(time.time() * 1000),
        }

    @classmethod
    def from_value(cls, v: dict[str, Any]) -> Batch:
        return cls(v["table"], v["lower"], v["upper"], v["version"], v["state_lower"])


def _lock_key(table: str) -> str:
    return f"streams-backfill:{table}"


def _instance_sql(
    cur: psycopg.AsyncClientCursor[Any],
    model: OutboxProducingModel,
    batch: Batch,
    instance: tuple[Any, ...],
    regions: tuple[str, ...],
) -> str:
    """BEGIN; the instance's outbox row(s); its progress mark; COMMIT."""
    obj, shard, payload = int(instance[0]), int(instance[1]), instance[2]
    parts = ["BEGIN"]
    for region in regions if model.control else (None,):
        _, ins = build_insert(
            scope=model.scope,
            shard_identifier=shard,
            category=model.category,
            object_identifier=obj,
            payload=payload,
            region=region,
            backfill=True,
        )
        parts.append(cur.mogrify(ins.sql.encode(), ins.params))
    parts.append(
        cur.mogrify(
            "UPDATE outbox_backfill_state SET progress = %s"
            " WHERE table_name = %s AND lower = %s AND version = %s",
            (obj, batch.table, batch.state_lower, batch.version),
        )
    )
    parts.append("COMMIT")
    return ";\n".join(parts) + ";"


async def process_batch(
    conn: AConn, model: OutboxProducingModel, batch: Batch, regions: tuple[str, ...]
) -> tuple[str, int]:
    """Write the batch's outbox rows; returns (outcome, instances written).

    ``conn`` must be in autocommit mode (each instance commits on its own). Outcome
    ``stale``: the state is not the one the batch started from (already done, or
    superseded by a newer version); nothing is written.
    """
    cur = await conn.execute(
        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (_lock_key(batch.table),)
    )
    got = await cur.fetchone()
    if not got or not got[0]:
        raise RetryLater(f"backfill of {batch.table} is being processed elsewhere", 1.0)
    try:
        return await _process_locked(conn, model, batch, regions)
    finally:
        await conn.execute(
            "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (_lock_key(batch.table),)
        )


async def _process_locked(
    conn: AConn, model: OutboxProducingModel, batch: Batch, regions: tuple[str, ...]
) -> tuple[str, int]:
    state = await get_state(conn, batch.table)
    if state.key != (batch.state_lower, batch.version):
        if lost_move_landed(state, batch.table, *_move(batch)):
            # Its own move committed; the answer was lost with the connection.
            m.BATCHES.labels(batch.table, "processed").inc()
            return "processed", 0
        m.BATCHES.labels(batch.table, "stale").inc()
        return "stale", 0
    start = batch.lower
    if state.progress is not None and state.progress >= batch.lower:
        start = state.progress + 1  # re-delivered: resume after the last instance written
    cur = await conn.execute(model.select_sql.encode(), (start, batch.upper))
    instances = await cur.fetchall()
    client = psycopg.AsyncClientCursor(conn)
    for i in range(0, len(instances), CHUNK):
        sql = "\n".join(
            _instance_sql(client, model, batch, inst, regions) for inst in instances[i : i + CHUNK]
        )
        await conn.execute(sql.encode())
    m.ROWS.labels(batch.table).inc(len(instances))
    moved = await compare_and_set(conn, batch.table, *_move(batch))
    m.BATCHES.labels(batch.table, "processed" if moved else "stale").inc()
    return ("processed" if moved else "stale"), len(instances)


def _move(batch: Batch) -> tuple[tuple[int, int], tuple[int, int]]:
    """The state move a batch makes once written: (expected state, new state)."""
    return (batch.state_lower, batch.version), (batch.upper + 1, batch.version)
