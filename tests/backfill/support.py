"""Helpers for backfill tests: domain rows, processing state, synchronous runs."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from typing import Any

import psycopg

from streams.backfill.models import OutboxProducingModel
from streams.backfill.run import run
from streams.settings import Settings


def add_organizations(dsn: str, n: int, start: int = 1) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO organization (slug, name) SELECT 'org-' || i, 'Org ' || i"
            " FROM generate_series(%s::int, %s::int) AS i",
            (start, start + n - 1),
        )
        conn.commit()


def state(dsn: str, table: str = "organization") -> tuple[int, int] | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT lower, version FROM outbox_backfill_state WHERE table_name = %s", (table,)
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else None


def outbox_objects(dsn: str, category: str = "organization_update") -> list[int]:
    """Object ids of the backfill's outbox rows still in region_outbox."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT object_identifier FROM region_outbox WHERE backfill AND category = %s",
            (category,),
        ).fetchall()
    return [int(r[0]) for r in rows]


def clear_outbox(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("DELETE FROM region_outbox")
        conn.commit()


def run_sync(
    settings: Settings, models: Sequence[OutboxProducingModel], rate: int = 0
) -> tuple[int, str]:
    """``streams backfill --synchronous`` in-process; returns (rows written, progress output)."""
    out = io.StringIO()
    written = asyncio.run(run(settings, models, rate=rate, synchronous=True, out=out))
    return written, out.getvalue()


async def aconnect(dsn: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)
