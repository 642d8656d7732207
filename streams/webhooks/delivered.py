"""Deliveries already acknowledged by their receiver, so a crash does not POST them again.

After a kill -9 the worker consumes again from its last committed offsets: first
attempts, and resource changes that regenerate the same deliveries (same delivery id,
so the same Request-ID). Each batch records its acknowledged delivery ids in
``webhook_delivered`` (migration 0042) right after its requests, and each batch skips
the ids recorded there before sending. What is left to repeat after a crash is the
one batch whose requests were out but not recorded yet. A database that cannot answer
skips nothing (at least once), and rows older than ``KEEP`` are pruned.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence

from psycopg_pool import AsyncConnectionPool

from streams.db.pool import reading

log = logging.getLogger(__name__)

KEEP = dt.timedelta(days=1)
PoolFactory = Callable[[], Awaitable[AsyncConnectionPool]]


class DeliveredLog:
    """``webhook_delivered`` over the worker's async pool."""

    def __init__(self, pool: PoolFactory) -> None:
        self._pool = pool

    async def already(self, delivery_ids: Sequence[str]) -> set[str]:
        """The ids among ``delivery_ids`` a receiver acknowledged before; empty when the
        database cannot tell (then nothing is skipped)."""
        return await already(self._pool, delivery_ids)

    async def record(self, delivery_ids: Sequence[str]) -> None:
        """Record acknowledged deliveries (never raises)."""
        await record(self._pool, delivery_ids)

    async def prune(self) -> int:
        return await prune(self._pool)


async def already(pool: PoolFactory, delivery_ids: Sequence[str]) -> set[str]:
    """The ids among ``delivery_ids`` a receiver acknowledged before; empty when the
    database cannot tell (then nothing is skipped)."""
    if not delivery_ids:
        return set()
    try:
        p = await pool()
        async with reading(p) as conn:
            cur = await conn.execute(
                "SELECT delivery_id FROM webhook_delivered WHERE delivery_id = ANY(%s)",
                (list(delivery_ids),),
            )
            return {str(r[0]) for r in await cur.fetchall()}
    except Exception as exc:
        log.warning("webhook.delivered.read_failed", extra={"error": repr(exc)})
        return set()


async def record(pool: PoolFactory, delivery_ids: Sequence[str]) -> None:
    """Record acknowledged deliveries; a failure is logged (they may be sent again)."""
    if not delivery_ids:
        return
    try:
        p = await pool()
        async with p.connection() as conn:
            await conn.execute(
                "INSERT INTO webhook_delivered (delivery_id) SELECT unnest(%s::text[]) "
                "ON CONFLICT DO NOTHING",
                (list(delivery_ids),),
            )
    except Exception as exc:
        log.warning(
            "webhook.delivered.record_failed",
            extra={"error": repr(exc), "deliveries": len(delivery_ids)},
        )


async def prune(pool: PoolFactory, keep: dt.timedelta = KEEP) -> int:
    """Forget acknowledgements older than ``keep``; returns the rows deleted."""
    p = await pool()
    async with p.connection() as conn:
        cur = await conn.execute(
            "DELETE FROM webhook_delivered WHERE delivered_at < now() - %s", (keep,)
        )
        return cur.rowcount
