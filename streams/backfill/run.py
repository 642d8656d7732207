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

from streams.backfill import lease
from streams.backfill.batch import Batch, process_batch
from streams.backfill.models import OutboxProducingModel
from streams.backfill.scheduler import Limits, done, schedule
from streams.backfill.state import AConn, budget, get_state, target_version
from streams.publisher import Publisher
from streams.settings import Settings


@dataclass
class Progress:
    """rows done / total, rate (or the wait for budget) and ETA, at most once a second.

    With a rate limit (rows per minute) the ETA counts at most that rate, so it does not
    swing while the command waits for the next minute's budget."""

    total: int
    out: TextIO = sys.stderr
    limit: int = 0  # rows per minute; 0 = no limit
    started: float = 0.0
    first_done: int | None = None
    last_print: float = 0.0

    def show(self, done_rows: int, final: bool = False, waiting: float | None = None) -> None:
        """``waiting``: seconds until the budget renews (printed instead of the rate)."""
        now = time.monotonic()
        if self.first_done is None:
            self.first_done, self.started = done_rows, now
        if not final and now - self.last_print < 1.0:
            return
        self.last_print = now
        rate = (done_rows - self.first_done) / max(1e-6, now - self.started)
        left = max(0, self.total - done_rows)
        pct = 100.0 * done_rows / self.total if self.total else 100.0
        speed = (
            f"waiting for budget ({self.limit:,} rows/min), next in {waiting:.0f}s"
            if waiting is not None
            else f"{rate:,.0f} rows/s"
        )
        line = f"backfill: {done_rows:,}/{self.total:,} rows ({pct:5.1f}%)  {speed}"
        if not final:
            line += f"  ETA {self._eta(left, rate)}"
        end = "\n" if final or not self.out.isatty() else "\r"
        print(line.ljust(100) if end == "\r" else line, end=end, file=self.out, flush=True)

    def _eta(self, left: int, rate: float) -> str:
        capped = min(rate, self.limit / 60) if self.limit and rate > 0 else rate
        speed = capped or self.limit / 60
        return f"{left / speed:,.0f}s" if speed > 0 else "?"


def _seconds_to_next_minute() -> float:
    return 60.0 - time.time() % 60.0


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
    silo, holder = settings.silo_mode, lease.holder_name()
    written = 0
    async with (
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as work,
    ):
        # The only scheduler while this runs: the workers' timer yields to the lease.
        await lease.acquire(conn, silo, holder, rate)
        publisher = None if synchronous else Publisher(settings)
        by_table = {m.table: m for m in models}
        progress = Progress(sum([await _count(conn, m.table) for m in models]), out, rate)
        done_rows = 0

        renewed = time.monotonic()

        async def emit(batch: Batch) -> None:
            nonlocal written, done_rows, renewed
            if time.monotonic() - renewed > lease.LEASE_SECONDS / 3:
                # One pass without a rate limit may take longer than the lease.
                await lease.acquire(work, silo, holder, rate)
                renewed = time.monotonic()
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
                await lease.acquire(conn, silo, holder, rate)  # renew
                pending = [m for m in models if not await done(conn, m)]
                done_rows = await rows_done(conn, models)
                if not pending:
                    break
                broke = await budget(conn, silo, rate) == 0
                progress.show(done_rows, waiting=_seconds_to_next_minute() if broke else None)
                emitted = await schedule(conn, pending, silo, limits, emit, holder=holder)
                if not emitted:
                    # Budget used up this minute, or the worker is still on its batches.
                    await asyncio.sleep(0.2 if synchronous else 0.5)
            progress.show(done_rows, final=True)
        finally:
            if publisher is not None:
                publisher.close()
            await lease.release(conn, silo, holder)
    return written
