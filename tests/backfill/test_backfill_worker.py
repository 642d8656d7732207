"""The backfill through real worker processes and the relay: end to end, and kill -9."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.settings import Settings
from tests.backfill.support import add_organizations, outbox_objects, state
from tests.relay.support import TopicReader, start_relay, wait_empty
from tests.support import harness

FAST = {
    "STREAMS_BACKFILL_INTERVAL": "0.5",
    "STREAMS_BACKFILL_MAX_RATE": "0",  # rate limit off
}


@pytest.mark.slow  # `make test-slow` (CI runs it): a load or kill -9 test
def test_50k_rows_become_exactly_one_outbox_message_each(
    settings: Settings,
    worker: Callable[..., harness.Proc],
    processes: list[harness.Proc],
    tmp_path: Path,
) -> None:
    dsn = settings.database_url.get()
    n = 50_000
    add_organizations(dsn, n)
    reader = TopicReader(settings, ["outbox.region"])
    try:
        relay = start_relay(settings, processes, tmp_path / "relay.log", concurrency=2)
        worker(**FAST)
        harness.wait_for(lambda: state(dsn) == (0, 2), 90, 0.5, "backfill done")
        wait_empty(dsn, 60, relay)
        records = reader.wait_for(lambda rs: len(rs) >= n, 60, f"{n} messages")
        reader.drain(quiet=1.0)
    finally:
        reader.close()
    objects = [r.value["object_identifier"] for r in reader.records]
    assert len(objects) == n, "one message per instance, no more"
    assert set(objects) == set(range(1, n + 1))
    assert {r.value["category"] for r in records} == {"organization_update"}


@pytest.mark.slow  # `make test-slow` (CI runs it): a load or kill -9 test
def test_kill_9_mid_backfill_then_restart_completes_without_moving_back(
    settings: Settings, worker: Callable[..., harness.Proc], tmp_path: Path
) -> None:
    dsn = settings.database_url.get()
    n = 20_000
    add_organizations(dsn, n)
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def sample() -> None:  # the state as an observer sees it, every 20 ms
        while not stop.is_set():
            s = state(dsn)
            if s is not None:
                seen.append(s)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        env = {**FAST, "STREAMS_BACKFILL_BATCH_SIZE": "250"}
        first = worker(**env)
        harness.wait_for(lambda: (state(dsn) or (0, 0))[0] > 3_000, 60, 0.05, "mid-backfill")
        first.kill9()
        at_kill = state(dsn)
        assert at_kill is not None and at_kill[1] == 1 and at_kill[0] < n, at_kill
        worker(**env)
        harness.wait_for(lambda: state(dsn) == (0, 2), 90, 0.2, "backfill done after restart")
    finally:
        stop.set()
        sampler.join()
    ordered = [(v, lo) for lo, v in seen]
    assert ordered == sorted(ordered), "the processing state moved backwards"
    objects = outbox_objects(dsn)
    assert set(objects) == set(range(1, n + 1)), "an instance was skipped"
    assert len(objects) == n, f"{len(objects) - n} instances written twice"


def test_cli_synchronous_run_shows_progress_and_completes(
    settings: Settings, processes: list[harness.Proc], tmp_path: Path
) -> None:
    dsn = settings.database_url.get()
    add_organizations(dsn, 3_000)
    proc = harness.spawn(
        ["backfill", "--model", "organization", "--rate", "0", "--synchronous"],
        harness.env_for(settings, STREAMS_BACKFILL_BATCH_SIZE="500"),
        tmp_path / "backfill.log",
    )
    processes.append(proc)
    assert proc.popen.wait(60) == 0, proc.output()
    out = proc.output()
    assert "3,000/3,000 rows (100.0%)" in out
    assert "backfill complete: organization" in out
    assert state(dsn) == (0, 2)
    assert sorted(outbox_objects(dsn)) == list(range(1, 3_001))


def test_cli_hands_batches_to_a_running_worker_and_waits_for_it(
    settings: Settings,
    worker: Callable[..., harness.Proc],
    processes: list[harness.Proc],
    tmp_path: Path,
) -> None:
    dsn = settings.database_url.get()
    add_organizations(dsn, 2_000)
    worker(STREAMS_BACKFILL_INTERVAL="3600")  # its own timer stays out of the way
    proc = harness.spawn(
        ["backfill", "--model", "organization", "--rate", "0"],
        harness.env_for(settings, STREAMS_BACKFILL_BATCH_SIZE="300"),
        tmp_path / "backfill.log",
    )
    processes.append(proc)
    assert proc.popen.wait(60) == 0, proc.output()
    assert "2,000/2,000 rows (100.0%)" in proc.output()
    assert state(dsn) == (0, 2)
    assert sorted(outbox_objects(dsn)) == list(range(1, 2_001))
