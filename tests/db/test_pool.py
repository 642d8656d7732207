"""The worker's async pool against the real PostgreSQL: reads in autocommit, and the
connection check skipped only for connections handed back moments ago."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from streams.db import pool as db_pool
from streams.settings import Settings


def _with_pool(settings: Settings, body: Any) -> Any:
    async def go() -> Any:
        pool = await db_pool.async_pool(settings, min_size=1, max_size=1)
        try:
            return await body(pool)
        finally:
            await pool.close()

    return asyncio.run(go())


def test_reads_run_in_autocommit_and_the_next_user_gets_a_transaction_again(
    settings: Settings,
) -> None:
    async def body(pool: AsyncConnectionPool) -> tuple[bool, str, bool, str]:
        async with db_pool.reading(pool) as conn:
            reading = conn.autocommit
            await conn.execute("SELECT 1")
            after_read = conn.info.transaction_status.name  # no BEGIN was sent
        async with pool.connection() as conn:  # the same (only) connection
            writing = conn.autocommit
            await conn.execute("SELECT 1")
            after_write = conn.info.transaction_status.name
        return reading, after_read, writing, after_write

    assert _with_pool(settings, body) == (True, "IDLE", False, "INTRANS")


def test_a_connection_is_checked_again_only_after_a_quiet_second(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[int] = []
    real = AsyncConnectionPool.check_connection

    async def counting(conn: psycopg.AsyncConnection[Any]) -> None:
        checked.append(1)
        await real(conn)

    monkeypatch.setattr(AsyncConnectionPool, "check_connection", staticmethod(counting))

    async def body(pool: AsyncConnectionPool) -> tuple[int, int]:
        for _ in range(20):  # back-to-back: handed back moments ago, not checked
            async with db_pool.reading(pool) as conn:
                await conn.execute("SELECT 1")
        busy = len(checked)
        monkeypatch.setattr(db_pool, "CHECK_AFTER", 0.0)  # as if a second had passed
        for _ in range(3):
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
        return busy, len(checked) - busy

    busy, quiet = _with_pool(settings, body)
    assert busy <= 1  # at most the first checkout of a new connection
    assert quiet == 3
