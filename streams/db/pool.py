"""Connections and pools built from settings (psycopg 3)."""

from __future__ import annotations

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from streams.settings import Settings


def connect(
    settings: Settings, *, autocommit: bool = False
) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(settings.database_url.get(), autocommit=autocommit)


def sync_pool(settings: Settings, *, min_size: int = 1, max_size: int = 8) -> ConnectionPool:
    return ConnectionPool(
        settings.database_url.get(),
        min_size=min_size,
        max_size=max_size,
        open=True,
        name="streams",
    )


async def async_pool(
    settings: Settings, *, min_size: int = 1, max_size: int = 8
) -> AsyncConnectionPool:
    pool = AsyncConnectionPool(
        settings.database_url.get(),
        min_size=min_size,
        max_size=max_size,
        open=False,
        name="streams-async",
    )
    await pool.open(wait=True, timeout=30)
    return pool
