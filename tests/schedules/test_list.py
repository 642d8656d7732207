"""``streams schedules list`` against claimed slots in a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import psycopg

from streams.settings import Settings
from tests.support import harness

HOUR = dt.timedelta(hours=1)


def _list(settings: Settings) -> list[str]:
    env = harness.env_for(
        settings,
        STREAMS_AGENT_MODULES="tests.schedules.probe",
        STREAMS_SILO_MODE="monolith",
        PROBE_INTERVAL="3600",
    )
    done = subprocess.run(
        [sys.executable, "-m", "streams", "schedules", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=harness.ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _line(lines: list[str], name: str) -> str:
    return next(line for line in lines if line.startswith(name))


def test_list_shows_each_schedule_with_last_and_next_run_and_status(settings: Settings) -> None:
    now = dt.datetime.now(dt.UTC)
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    with psycopg.connect(settings.database_url.get()) as conn:
        conn.execute(
            "INSERT INTO schedule_run (schedule, slot, kind, claimed_by)"
            " VALUES ('probe.tick', %s, 'run', 'test')",
            (this_hour,),
        )
    lines = _list(settings)
    assert lines[0].split()[:3] == ["schedule", "when", "last"]
    weekly = _line(lines, "reports.weekly")
    assert "cron 0 9 * * 1" in weekly and weekly.endswith("never run")
    probe = _line(lines, "probe.tick")
    assert f"{this_hour:%Y-%m-%d %H:%M:%S}Z (run)" in probe
    assert f"{this_hour + HOUR:%Y-%m-%d %H:%M:%S}Z" in probe
    assert probe.endswith("ok")

    # The last claimed slot two hours ago: the slot due since then was missed.
    with psycopg.connect(settings.database_url.get()) as conn:
        conn.execute("UPDATE schedule_run SET slot = slot - interval '2 hours'")
    if now - this_hour > dt.timedelta(seconds=10):  # past the probe's 10 s grace
        assert f"MISSED {this_hour:%Y-%m-%d %H:%M:%S}Z" in _line(_list(settings), "probe.tick")
