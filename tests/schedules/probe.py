"""A schedule for tests: every PROBE_INTERVAL s, each run inserts a row in ``probe_runs``
in its claiming transaction (no unique key there, so a doubled run would show).

Loaded by workers through ``STREAMS_AGENT_MODULES=tests.schedules.probe``.
"""

from __future__ import annotations

import os
from typing import Any

from streams.schedules.model import CatchUp, Run, Schedule

TABLE_SQL = (
    "CREATE TABLE IF NOT EXISTS probe_runs (slot timestamptz NOT NULL, kind text NOT NULL,"
    " missed integer NOT NULL, pid integer NOT NULL, at timestamptz NOT NULL DEFAULT now())"
)


async def _fire(conn: Any, run: Run) -> None:
    await conn.execute(
        "INSERT INTO probe_runs (slot, kind, missed, pid) VALUES (%s, %s, %s, %s)",
        (run.slot, "catch_up" if run.catch_up else "run", run.missed, os.getpid()),
    )


def schedules(settings: Any) -> list[Schedule]:
    return [
        Schedule(
            "probe.tick",
            _fire,
            interval=float(os.environ.get("PROBE_INTERVAL", "2")),
            grace=float(os.environ.get("PROBE_GRACE", "10")),
            catch_up=CatchUp(os.environ.get("PROBE_CATCH_UP", "once")),
        )
    ]


def install(app: Any, runtime: Any) -> None:
    """Nothing to install: the schedules agent picks ``schedules`` up."""
