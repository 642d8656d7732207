"""``streams backfill``: its --rate is the only rate while it runs (the workers' scheduler
yields), the progress line says when it waits for budget and ends at 100% at once;
``status`` and ``--reset``."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import psycopg

from streams.backfill.batch import Batch
from streams.backfill.models import model
from streams.backfill.scheduler import Limits, schedule
from streams.settings import Settings
from tests.backfill.support import aconnect, add_organizations, outbox_objects
from tests.cli.support import ROOT, streams
from tests.support import harness

ORG = model("organization")
BACKFILL = ["backfill", "--model", "organization"]


def workers_timer(settings: Settings) -> list[Batch]:
    """One tick of the workers' backfill timer (streams/agents/backfill.py), at 10k/min."""

    async def tick() -> list[Batch]:
        async with await aconnect(settings.database_url.get()) as conn:
            return await schedule(conn, [ORG], settings.silo_mode, Limits(10_000, 1_000), _discard)

    return asyncio.run(tick())


async def _discard(batch: Batch) -> None:
    pass


def emitted_per_minute(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT emitted_rows FROM outbox_backfill_minutes").fetchall()
    return [int(r[0]) for r in rows]


def test_cli_rate_is_the_only_rate_and_it_says_when_it_waits(
    settings: Settings, tmp_path: Path
) -> None:
    dsn = settings.database_url.get()
    add_organizations(dsn, 120)
    log = tmp_path / "backfill.err"
    with log.open("w") as err:
        cli = subprocess.Popen(
            [sys.executable, "-m", "streams", *BACKFILL, "--synchronous", "--rate", "40"],
            env=harness.env_for(settings),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    try:
        harness.wait_for(lambda: "waiting for budget" in log.read_text(), 30, 0.2, "waiting")
        assert "waiting for budget (40 rows/min), next in " in log.read_text()
        assert workers_timer(settings) == []  # the worker yields to the command's lease
        assert max(emitted_per_minute(dsn)) <= 40
        assert len(outbox_objects(dsn)) <= 40 * len(emitted_per_minute(dsn))
    finally:
        cli.send_signal(signal.SIGINT)  # Ctrl-C: the command gives its lease back
        cli.wait(15)
    assert workers_timer(settings), "the workers' scheduler did not resume"


def test_ends_at_100_percent_at_once_then_status_and_reset(settings: Settings) -> None:
    dsn = settings.database_url.get()
    env = harness.env_for(settings)
    add_organizations(dsn, 30)
    # The last batch uses up this minute's budget exactly: done must not wait for the next.
    result = streams(
        "backfill", "--model", "organization", "--synchronous", "--rate", "30", env=env
    )
    assert result.code == 0, result.stderr
    assert result.seconds < 15, f"took {result.seconds:.1f}s"
    assert "30/30 rows (100.0%)" in result.err_lines[-1]
    assert result.stdout.strip() == "backfill complete: organization"
    assert len(outbox_objects(dsn)) == 30

    status = streams("backfill", "status", "--model", "organization", env=env)
    assert status.code == 0, status.stderr
    assert status.stdout.splitlines()[1].split()[:3] == ["organization", "organization", "done"]

    refused = streams("backfill", "--reset", "--model", "organization", env=env)
    assert refused.code == 2
    assert "confirm with --yes (stdin is not a terminal)" in refused.err_lines[0]
    assert "done" in streams("backfill", "status", "--model", "organization", env=env).stdout

    reset = streams("backfill", "--reset", "--model", "organization", "--yes", env=env)
    assert reset.code == 0, reset.stderr
    shown = streams("backfill", "status", "--model", "organization", env=env)
    pending = shown.stdout
    assert len(pending.splitlines()) == 3, (reset.stdout, shown.stderr)
    assert pending.splitlines()[1].split()[2:] == ["pending", "1/1", "30", "30"]
    again = streams("backfill", "--model", "organization", "--synchronous", env=env)
    assert again.code == 0, again.stderr
    assert len(outbox_objects(dsn)) == 60  # every row emitted a second time
