"""Schedules across real worker processes: one run per slot with a worker killed, and one
catch-up run after every worker was down (real broker and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from streams.dev.stack import free_port
from streams.settings import Settings
from tests.reports.support import metric
from tests.schedules.probe import TABLE_SQL
from tests.support import harness

INTERVAL = 2.0
SLOTS = 20


def _rows(settings: Settings) -> list[tuple[dt.datetime, str, int, int]]:
    with psycopg.connect(settings.database_url.get()) as conn:
        return [
            (r[0], r[1], r[2], r[3])
            for r in conn.execute("SELECT slot, kind, missed, pid FROM probe_runs ORDER BY slot")
        ]


def _start(
    settings: Settings, tmp_path: Path, procs: list[harness.Proc], n: int, grace: float
) -> harness.Proc:
    s = settings.with_(web_port=free_port())
    proc = harness.start_worker(
        s,
        tmp_path / f"worker-{n}.log",
        ready=False,
        STREAMS_AGENTS="schedules",
        STREAMS_AGENT_MODULES="tests.schedules.probe",
        STREAMS_SCHEDULE_TICK="0.25",
        PROBE_INTERVAL=str(INTERVAL),
        PROBE_GRACE=str(grace),
    )
    procs.append(proc)
    return proc


@pytest.mark.slow  # `make test-slow` (CI runs it): a load or kill -9 test
def test_one_run_per_slot_with_a_worker_killed_then_one_catch_up(
    settings: Settings, processes: list[harness.Proc], tmp_path: Path
) -> None:
    with psycopg.connect(settings.database_url.get()) as conn:
        conn.execute(TABLE_SQL)
    # Grace 10 s: a tick delayed by load still runs every slot on its own.
    workers = [_start(settings, tmp_path, processes, n, grace=10.0) for n in range(3)]
    first = harness.wait_for(lambda: _rows(settings), 90, 0.2, "a first run")[0][0]
    last = first + dt.timedelta(seconds=INTERVAL * (SLOTS - 1))

    def slots_done(n: int) -> bool:
        return len({r[0] for r in _rows(settings)}) >= n

    harness.wait_for(lambda: slots_done(5), 60, 0.2, "5 slots")
    # Kill the worker that ran the newest slot (kill -9, by PID).
    newest_pid = _rows(settings)[-1][3]
    victim = next((w for w in workers if w.pid == newest_pid), workers[0])
    victim.kill9()
    harness.wait_for(lambda: any(r[0] >= last for r in _rows(settings)), 120, 0.2, f"slot {last}")
    rows = [r for r in _rows(settings) if first <= r[0] <= last]
    per_slot = Counter(r[0] for r in rows)
    expected = [first + dt.timedelta(seconds=INTERVAL * k) for k in range(SLOTS)]
    assert sorted(per_slot) == expected, "every slot ran"
    assert set(per_slot.values()) == {1}, f"doubled: {[s for s, n in per_slot.items() if n > 1]}"
    assert len({r[3] for r in rows}) >= 2, "the runs were spread over the workers"

    # Every worker down for 3 slots and more, then one worker back: one catch-up run.
    for w in workers:
        if w.alive():
            w.kill9()
    down_after = _rows(settings)[-1][0]
    harness.wait_for(
        lambda: dt.datetime.now(dt.UTC) > down_after + dt.timedelta(seconds=INTERVAL * 4),
        30,
        0.1,
        "3 slots missed",
    )
    restarted_at = dt.datetime.now(dt.UTC)
    # Grace 1 s: every slot that passed while nobody ran is missed.
    back = _start(settings, tmp_path, processes, 3, grace=1.0)
    catch_up = harness.wait_for(
        lambda: [r for r in _rows(settings) if r[1] == "catch_up"], 90, 0.2, "catch-up run"
    )
    assert len(catch_up) == 1
    slot, _, missed, _ = catch_up[0]
    assert slot >= restarted_at - dt.timedelta(seconds=INTERVAL), "the newest missed slot"
    # Nothing else ran for the slots the outage covered: one run stands for all of them.
    assert [r for r in _rows(settings) if down_after < r[0] <= slot] == catch_up
    assert missed == round((slot - down_after).total_seconds() / INTERVAL) - 1
    assert missed >= 3
    after = catch_up[0][0] + dt.timedelta(seconds=INTERVAL * 2)
    harness.wait_for(lambda: any(r[0] >= after for r in _rows(settings)), 30, 0.2, "regular runs")
    resumed = Counter(r[0] for r in _rows(settings) if r[0] > catch_up[0][0])
    assert set(resumed.values()) == {1}
    assert all(r[1] == "run" for r in _rows(settings) if r[0] > catch_up[0][0])
    # The worker's metrics tell the same story.
    assert metric(back, "streams_schedule_runs_total", schedule="probe.tick", kind="catch_up") == 1
    assert metric(back, "streams_schedule_runs_total", schedule="probe.tick", kind="run") >= 1
    assert (
        metric(back, "streams_schedule_last_success_timestamp_seconds", schedule="probe.tick") > 0
    )
    assert metric(back, "streams_schedule_next_run_timestamp_seconds", schedule="probe.tick") > (
        catch_up[0][0].timestamp()
    )
