"""PostgreSQL frozen (SIGSTOP of the postmaster and every child; connections stay open
but nothing answers) for 10 s (30 s and 70 s with STREAMS_SOAK=1), then thawed: nothing
lost, counters exact, the relay and the worker (buffers) work again within 5 s, and
/health says not_ready during the freeze."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from streams.client import incr
from streams.publisher import Publisher
from tests.buffers import support as bs
from tests.chaos.support import RECOVERY_BOUND, SOAK, Case, figure, health, timed
from tests.relay import support as rs
from tests.support import harness

FREEZES = [30.0, 70.0] if SOAK else [10.0]


def _send(publisher: Publisher, ids: list[int], expected: Counter[int], n: int) -> None:
    with bs.client_publisher(publisher):
        for i in range(n):
            gid = ids[i % len(ids)]
            incr("issue_group", {"times_seen": 1}, {"id": gid})
            expected[gid] += 1
        publisher.flush()


@pytest.mark.allow_errors
@pytest.mark.parametrize("freeze", FREEZES)
def test_postgres_frozen_then_thawed_every_process_recovers_within_5s(
    case: Case, freeze: float, processes: list[harness.Proc], tmp_path: Path
) -> None:
    ids = bs.seed_groups(case.dsn, 20)
    env = {"STREAMS_AGENTS": "buffers", "STREAMS_BUFFER_FLUSH_INTERVAL": "0.5"}
    worker = harness.start_worker(case.settings, tmp_path / "worker.log", env=env)
    processes.append(worker)
    relay = rs.start_relay(case.settings, processes, tmp_path / "relay.log")
    publisher = Publisher(case.settings)
    expected: Counter[int] = Counter()
    reader = rs.TopicReader(case.settings, ["outbox.region"])
    try:
        _send(publisher, ids, expected, 500)
        harness.wait_for(lambda: bs.times_seen(case.dsn) == dict(expected), 60, 0.2, "applied")
        written = rs.write(case.dsn, [(s, s) for s in range(10)])
        rs.wait_empty(case.dsn, 60, relay)

        pids = case.stack.pg_freeze()
        frozen_at = time.monotonic()
        answers: set[tuple[int, str]] = set()
        try:
            while time.monotonic() - frozen_at < freeze:
                _send(publisher, ids, expected, 20)  # the broker is up: increments queue
                answers.add(health(worker))
                time.sleep(0.5)
        finally:
            back = case.stack.pg_thaw(pids)
        written += rs.write(case.dsn, [(s, 100 + s) for s in range(10)])
        relay_s = timed(lambda: rs.queued(case.dsn) == 0, back, 60, "relay drained")
        buffers_s = timed(
            lambda: bs.times_seen(case.dsn) == dict(expected), back, 60, "buffers caught up"
        )
        ready_s = timed(lambda: health(worker) == (200, "ready"), back, 60, "worker ready")
        published = rs.ids_of(reader.drain(quiet=1.0))
        figure(
            f"postgres frozen {freeze:.0f}s: relay working again after {relay_s:.1f}s, "
            f"buffers caught up after {buffers_s:.1f}s, /health ready after {ready_s:.1f}s; "
            f"/health during the freeze {sorted(answers)} "
            f"({sum(expected.values())} increments exact, {len(written)} rows published)"
        )
        assert worker.alive() and relay.alive()
        assert (503, "not_ready") in answers, answers
        assert sorted(set(published)) == sorted(written)  # none lost
        assert bs.times_seen(case.dsn) == dict(expected)
        assert relay_s < RECOVERY_BOUND
        assert buffers_s < RECOVERY_BOUND
    finally:
        reader.close()
        publisher.close()
