"""The write side of ``scheduled_messages``: encoded messages stored for a later publish.

A row is written either in the caller's transaction (``conn=``: published only if it
commits) or on its own (autocommit). Its due time is computed on the database's clock,
the clock the pump compares with, so a client whose clock is off never makes a
message early. A NOTIFY wakes the pump at commit.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from streams.db.pool import pool_options

NOTIFY_CHANNEL = "streams_scheduled"

_INSERT = b"""
WITH ins AS (
    INSERT INTO scheduled_messages
        (due_at, topic, key, value, header_names, header_values, dedupe_id)
    VALUES (clock_timestamp() + make_interval(secs => %s), %s, %s, %s, %s, %s, %s)
    ON CONFLICT (dedupe_id) DO NOTHING
    RETURNING id, due_at
)
SELECT id, due_at, pg_notify('streams_scheduled', '') FROM ins
"""


@dataclass(frozen=True)
class Prepared:
    """One message, checked and encoded, as the broker will receive it."""

    topic: str  # full (prefixed) name
    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True)
class Scheduled:
    """A stored delayed message. ``id`` is None when its dedupe id was already stored."""

    id: int | None
    due_at: dt.datetime | None
    dedupe_id: str | None


def _params(msg: Prepared, delay: float, dedupe_id: str | None) -> tuple[Any, ...]:
    names = [k for k, _ in msg.headers]
    values = [v for _, v in msg.headers]
    return (delay, msg.topic, msg.key, msg.value, names, values, dedupe_id)


def _scheduled(row: Any, dedupe_id: str | None) -> Scheduled:
    if row is None:
        return Scheduled(None, None, dedupe_id)
    return Scheduled(int(row[0]), row[1], dedupe_id)


def insert(
    conn: psycopg.Connection[Any], msg: Prepared, delay: float, dedupe_id: str | None = None
) -> Scheduled:
    """Store ``msg`` in ``conn``'s current transaction, due ``delay`` s from now."""
    row = conn.execute(_INSERT, _params(msg, delay, dedupe_id)).fetchone()
    return _scheduled(row, dedupe_id)


async def insert_async(
    conn: psycopg.AsyncConnection[Any],
    msg: Prepared,
    delay: float,
    dedupe_id: str | None = None,
) -> Scheduled:
    """``insert`` for an asyncio connection."""
    cur = await conn.execute(_INSERT, _params(msg, delay, dedupe_id))
    return _scheduled(await cur.fetchone(), dedupe_id)


async def insert_many_async(
    conn: psycopg.AsyncConnection[Any],
    items: Sequence[tuple[Prepared, float, str | None]],
) -> None:
    """Store several messages in ``conn``'s transaction (follow-ons, retries)."""
    for msg, delay, dedupe_id in items:
        await conn.execute(_INSERT, _params(msg, delay, dedupe_id))


class DelayedWriter:
    """Stores delayed messages on a small pool of its own (callers without a transaction)."""

    def __init__(self, dsn: str, *, max_size: int = 4) -> None:
        self._pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=max_size,
            open=False,
            name="streams-delayed",
            **pool_options(sync=True),
        )
        self._lock = threading.Lock()
        self._opened = False

    def _ensure(self) -> ConnectionPool:
        if not self._opened:
            with self._lock:
                if not self._opened:
                    self._pool.open(wait=True, timeout=30)
                    self._opened = True
        return self._pool

    def store(self, msg: Prepared, delay: float, dedupe_id: str | None = None) -> Scheduled:
        """Store and commit one message; returns once it is durable."""
        with self._ensure().connection() as conn:
            out = insert(conn, msg, delay, dedupe_id)
        return out

    def store_many(self, items: Sequence[tuple[Prepared, float, str | None]]) -> int:
        """Store several messages in one transaction (one commit); returns how many."""
        with self._ensure().connection() as conn, conn.cursor() as cur:
            cur.executemany(_INSERT, [_params(m, d, i) for m, d, i in items])
        return len(items)

    def close(self) -> None:
        if self._opened:
            self._pool.close()
