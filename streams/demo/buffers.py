"""``streams up`` demo workload and status line for buffered increments."""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from typing import cast

from streams.settings import Settings

log = logging.getLogger(__name__)

DEMO_ORG = "demo-buffers"
DEMO_GROUPS = 20


def _demo_groups(settings: Settings) -> list[int]:
    from streams.db.pool import connect

    with connect(settings) as conn:
        org = conn.execute(
            "INSERT INTO organization (slug, name) VALUES (%s, 'Buffers demo') "
            "ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            (DEMO_ORG,),
        ).fetchone()
        assert org is not None
        project = conn.execute(
            "INSERT INTO project (organization_id, slug) VALUES (%s, 'counters') "
            "ON CONFLICT (organization_id, slug) DO UPDATE SET slug = EXCLUDED.slug "
            "RETURNING id",
            (org[0],),
        ).fetchone()
        assert project is not None
        rows = conn.execute(
            "SELECT id FROM issue_group WHERE project_id = %s ORDER BY id", (project[0],)
        ).fetchall()
        ids = [cast(int, r[0]) for r in rows]
        for n in range(len(ids), DEMO_GROUPS):
            row = conn.execute(
                "INSERT INTO issue_group (project_id, title) VALUES (%s, %s) RETURNING id",
                (project[0], f"demo issue {n}"),
            ).fetchone()
            assert row is not None
            ids.append(cast(int, row[0]))
        conn.commit()
    return ids


def run_demo(settings: Settings, stop: threading.Event) -> None:
    """A few hundred increments a second over 20 demo issues; every 50th is signal_only."""
    from streams.client import incr

    try:
        ids = _demo_groups(settings)
    except Exception as exc:
        log.warning("buffers.demo.failed", extra={"error": repr(exc)})
        return
    n = 0
    while not stop.wait(0.05):
        for _ in range(20):
            n += 1
            incr(
                "issue_group",
                {"times_seen": 1},
                {"id": random.choice(ids)},
                extra={"last_seen": dt.datetime.now(dt.UTC)},
                signal_only=n % 50 == 0,
            )


def status(settings: Settings) -> str:
    """``buffers=<increments applied>/<flushes>`` from the flush marks."""
    from streams.db.pool import connect

    with connect(settings) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(increments), 0), coalesce(sum(flushes), 0) "
            "FROM buffer_flush_marks WHERE consumer_group = %s",
            (settings.app_id,),
        ).fetchone()
    applied, flushes = row if row is not None else (0, 0)
    return f"buffers={applied} applied/{flushes} flushes"
