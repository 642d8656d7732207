"""Connections and pools built from settings (psycopg 3)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import AsyncConnectionPool

from streams.settings import Settings

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
    )
    await pool.open(wait=True, timeout=30)
    return pool
