"""PostgreSQL down for 20 s (30 s, 70 s and 5 min with STREAMS_SOAK=1): nothing lost,
counters exact, and the worker (buffers) and the relay work again within 5 s of its
return."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from streams.client import incr
from streams.publisher import Publisher
from tests.buffers import support as bs
from tests.chaos.support import RECOVERY_BOUND, SOAK, Case, figure, timed
from tests.relay import support as rs
from tests.support import harness

OUTAGES = [30.0, 70.0, 300.0] if SOAK else [20.0]  # the default suite stays under ~3 min


def _send(publisher: Publisher, ids: list[int], expected: Counter[int], n: int) -> None:
    with bs.client_publisher(publisher):
        for i in range(n):
            gid = ids[i % len(ids)]
            incr("issue_group", {"times_seen": 1}, {"id": gid})
            expected[gid] += 1
        publisher.flush()


def _health(proc: harness.Proc) -> str:
    """The /health status, whatever the HTTP code (503 while a dependency is down)."""
    try:
        _, body = proc.get("/health", timeout=10)
        return str(json.loads(body).get("status"))
    except (OSError, ValueError):
        return "unreachable"


@pytest.mark.allow_errors  # the processes log their lost connections; the test's own do not
@pytest.mark.timeout(max(OUTAGES) + 240)  # the 5 min soak outage outlasts the default 300 s
@pytest.mark.parametrize("outage", OUTAGES)
def test_postgres_down_then_back_every_process_recovers_within_5s(
    case: Case, outage: float, processes: list[harness.Proc], tmp_path: Path
) -> None:
    ids = bs.seed_groups(case.dsn, 20)
    worker = harness.start_worker(
        case.settings,
        tmp_path / "worker.log",
        STREAMS_AGENTS="buffers",
        STREAMS_BUFFER_FLUSH_INTERVAL="0.5",
    )
    processes.append(worker)
    relay = rs.start_relay(case.settings, processes, tmp_path / "relay.log")
    publisher = Publisher(case.settings)
    expected: Counter[int] = Counter()
    try:
        _send(publisher, ids, expected, 500)
        harness.wait_for(lambda: bs.times_seen(case.dsn) == dict(expected), 60, 0.2, "applied")
        rs.write(case.dsn, [(s, s) for s in range(10)])
        rs.wait_empty(case.dsn, 60, relay)

        case.stack.pg_stop()
        down_at = time.monotonic()
        statuses: set[str] = set()
        while time.monotonic() - down_at < outage:
            _send(publisher, ids, expected, 20)  # the broker is up: increments queue there
            statuses.add(_health(worker))
            time.sleep(1.0)
        back = case.stack.pg_start()
        rs.write(case.dsn, [(s, 100 + s) for s in range(10)])
        relay_s = timed(lambda: rs.queued(case.dsn) == 0, back, 60, "relay drained")
        buffers_s = timed(
            lambda: bs.times_seen(case.dsn) == dict(expected), back, 60, "buffers caught up"
        )
        health_s = timed(lambda: _health(worker) == "ready", back, 60, "worker ready")
        figure(
            f"postgres down {outage:.0f}s: relay working again after {relay_s:.1f}s, "
            f"buffers caught up after {buffers_s:.1f}s, /health ready after {health_s:.1f}s "
            f"({sum(expected.values())} increments, exact)"
        )
        assert worker.alive() and relay.alive()
        assert "not_ready" in statuses, statuses
        assert relay_s < RECOVERY_BOUND
        assert buffers_s < RECOVERY_BOUND
        assert bs.times_seen(case.dsn) == dict(expected)
    finally:
        publisher.close()
