"""``streams backfill``: run the backfill to completion, with a progress line.

Without ``--synchronous`` it emits batches to ``outbox-backfill-batches`` and a worker
processes them (this command only schedules and watches the state); with it, batches
are processed here, so a post-upgrade step needs no running worker. Both respect the
per-minute budget (``--rate``; 0 = no limit).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import psycopg
from psycopg import sql

from streams.backfill.batch import Batch, process_batch
from streams.backfill.models import OutboxProducingModel
from streams.backfill.scheduler import Limits, done, schedule
from streams.backfill.state import AConn, get_state, target_version
from streams.publisher import Publisher
from streams.settings import Settings


@dataclass
class Progress:
    """rows done / total, rate and ETA, printed at most once a second."""

    total: int
    out: TextIO = sys.stderr
    started: float = 0.0
    first_done: int | None = None
    last_print: float = 0.0

    def show(self, done_rows: int, final: bool = False) -> None:
        now = time.monotonic()
        if self.first_done is None:
            self.first_done, self.started = done_rows, now
        if not final and now - self.last_print < 1.0:
            return
        self.last_print = now
        elapsed = max(1e-6, now - self.started)
        rate = (done_rows - self.first_done) / elapsed
        left = max(0, self.total - done_rows)
        eta = f"{left / rate:,.0f}s" if rate > 0 else "?"
        pct = 100.0 * done_rows / self.total if self.total else 100.0
        line = (
            f"backfill: {done_rows:,}/{self.total:,} rows ({pct:5.1f}%)"
            f"  {rate:,.0f} rows/s  ETA {eta}"
        )
        end = "\n" if final or not self.out.isatty() else "\r"
        print(line, end=end, file=self.out, flush=True)


async def _count(conn: AConn, table: str, below: int | None = None) -> int:
    q = sql.SQL("SELECT count(*) FROM {t}").format(t=sql.Identifier(table))
    if below is not None:
        q = sql.SQL("SELECT count(*) FROM {t} WHERE id < %s").format(t=sql.Identifier(table))
    cur = await conn.execute(q, () if below is None else (below,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def rows_done(conn: AConn, models: Sequence[OutboxProducingModel]) -> int:
    n = 0
    for model in models:
        state = await get_state(conn, model.table)
        if state.version > await target_version(conn, model):
            n += await _count(conn, model.table)
        else:
            n += await _count(conn, model.table, state.lower)
    return n


async def run(
    settings: Settings,
    models: Sequence[OutboxProducingModel],
    *,
    rate: int,
    synchronous: bool,
    out: TextIO = sys.stderr,
) -> int:
    """Backfill ``models`` to their target version; returns the rows written here."""
    limits = Limits(rate, settings.backfill_batch_size)
    dsn = settings.database_url.get()
    publisher = None if synchronous else Publisher(settings)
    written = 0
    async with (
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as work,
    ):
        by_table = {m.table: m for m in models}
        progress = Progress(sum([await _count(conn, m.table) for m in models]), out)
        done_rows = 0

        async def emit(batch: Batch) -> None:
            nonlocal written, done_rows
            if publisher is None:
                _, rows = await process_batch(
                    work, by_table[batch.table], batch, settings.region_names
                )
                written += rows
                done_rows += rows
                progress.show(done_rows)
            else:
                await publisher.publish_async(
                    "outbox-backfill-batches", batch.value(), key=batch.table
                )

        try:
            while True:
                pending = [m for m in models if not await done(conn, m)]
                done_rows = await rows_done(conn, models)
                progress.show(done_rows)
                if not pending:
                    break
                emitted = await schedule(conn, pending, settings.silo_mode, limits, emit)
                if not emitted:
                    # Budget used up this minute, or the worker is still on its batches.
                    await asyncio.sleep(0.2 if synchronous else 0.5)
            progress.show(await rows_done(conn, models), final=True)
        finally:
            if publisher is not None:
                publisher.close()
    return written
