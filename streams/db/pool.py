"""Connections and pools built from settings (psycopg 3)."""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg_pool.pool
import psycopg_pool.pool_async
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from psycopg_pool.base import AttemptWithBackoff

from streams.settings import Settings

# Recovery time independent of outage length (issue 14). psycopg_pool doubles the delay
# between reconnection attempts until ``reconnect_timeout`` (default 300 s): after a
# 70 s outage the next attempt could be a minute away. Attempts are capped at
# RECONNECT_CAP apart and never given up (a pool that gave up stays empty until a
# client asks); a client waits WAIT_TIMEOUT for a connection and its caller retries,
# instead of psycopg_pool's 30 s; a connection is checked before it is handed out, so
# one broken by a PostgreSQL restart is replaced, not used.
RECONNECT_CAP = 1.0
RECONNECT_TIMEOUT = 24 * 3600.0
WAIT_TIMEOUT = 5.0
# The check is a round trip per checkout (two more, BEGIN and COMMIT, for a read in a
# transaction): a worker's webhook path paid about a third of its latency in them. A
# connection handed back in good order less than CHECK_AFTER ago is not checked again;
# one broken meanwhile fails its query, which the caller retries like any database
# error, and the pool then replaces it.
CHECK_AFTER = 1.0


class CappedAttempt(AttemptWithBackoff):
    """psycopg_pool's reconnection backoff, with the delay capped at ``RECONNECT_CAP``."""

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, RECONNECT_CAP)


def _cap_reconnect_backoff() -> None:
    # The pools look the class up in their module at each attempt; psycopg_pool has no
    # option for a cap. Checked by tests/chaos (recovery within 5 s of a 70 s outage).
    for module in (psycopg_pool.pool_async, psycopg_pool.pool):
        setattr(module, "AttemptWithBackoff", CappedAttempt)  # noqa: B010 (not exported)


_cap_reconnect_backoff()


def pool_options(*, sync: bool = False) -> dict[str, Any]:
    """Keyword arguments every pool of streams takes (short waits, quick reconnection)."""
    options: dict[str, Any] = {"timeout": WAIT_TIMEOUT, "reconnect_timeout": RECONNECT_TIMEOUT}
    if sync:
        return {**options, "check": ConnectionPool.check_connection}
    return {**options, "check": _check_unless_recent, "reset": _returned}


# When each connection of the async pools was last handed back in good order.
_RETURNED: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
    weakref.WeakKeyDictionary()
)


async def _returned(conn: psycopg.AsyncConnection[Any]) -> None:
    # Called by the pool for a connection handed back idle (a broken one is discarded).
    if conn.autocommit:
        await conn.set_autocommit(False)  # client-side only while idle: no round trip
    _RETURNED[conn] = time.monotonic()


async def _check_unless_recent(conn: psycopg.AsyncConnection[Any]) -> None:
    at = _RETURNED.get(conn)
    if at is None or time.monotonic() - at >= CHECK_AFTER:
        await AsyncConnectionPool.check_connection(conn)


@asynccontextmanager
async def reading(pool: AsyncConnectionPool) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection for reads only, in autocommit: each statement is one round trip,
    without the BEGIN and COMMIT a transaction would add (the pool turns autocommit
    off again when the connection comes back)."""
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        yield conn


MASK = "***"
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"((?:^|&)password=)[^&]*", re.IGNORECASE)


def redacted_url(url: str) -> str:
    """``url`` fit to print: ``postgresql://user:***@host/db`` (key=value DSNs too)."""
    if "://" not in url:
        return _KEYWORD_PASSWORD.sub(rf"\g<1>{MASK}", url)
    parts = urlsplit(url)
    query = _QUERY_PASSWORD.sub(rf"\g<1>{MASK}", parts.query)  # libpq reads it there too
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:{MASK}@{host}"
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def connect(
    settings: Settings, *, autocommit: bool = False
) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(settings.database_url.get(), autocommit=autocommit)


async def async_pool(
    settings: Settings, *, min_size: int = 1, max_size: int = 8
) -> AsyncConnectionPool:
    pool = AsyncConnectionPool(
        settings.database_url.get(),
        min_size=min_size,
        max_size=max_size,
        open=False,
        name="streams-async",
        **pool_options(),
    )
    await pool.open(wait=True, timeout=30)
    return pool
