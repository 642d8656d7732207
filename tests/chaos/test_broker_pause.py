"""The broker frozen for 10 s (30 s and 70 s with STREAMS_SOAK=1; SIGSTOP, its memory
kept): nothing lost, counters exact, the worker applies new increments within 5 s of the
broker's return, and its /health answers 503 not_ready while the broker is unreachable
(before: 200 ready throughout)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from streams.client import incr
from streams.publisher import Publisher
from tests.buffers import support as bs
from tests.chaos.support import RECOVERY_BOUND, SOAK, Case, figure, health, timed
from tests.support import harness

PAUSES = [30.0, 70.0] if SOAK else [10.0]  # the default suite stays under ~3 min


@pytest.mark.parametrize("pause", PAUSES)
def test_broker_paused_then_resumed_the_worker_recovers_within_5s(
    case: Case, pause: float, processes: list[harness.Proc], tmp_path: Path
) -> None:
    ids = bs.seed_groups(case.dsn, 20)
    env = {"STREAMS_AGENTS": "buffers", "STREAMS_BUFFER_FLUSH_INTERVAL": "0.5"}
    worker = harness.start_worker(case.settings, tmp_path / "worker.log", env=env)
    processes.append(worker)
    publisher = Publisher(case.settings)
    expected: Counter[int] = Counter()

    def send(n: int) -> None:
        with bs.client_publisher(publisher):
            for i in range(n):
                gid = ids[i % len(ids)]
                incr("issue_group", {"times_seen": 1}, {"id": gid})
                expected[gid] += 1
        publisher.flush()

    try:
        send(1000)
        harness.wait_for(lambda: bs.times_seen(case.dsn) == dict(expected), 60, 0.2, "applied")
        case.stack.broker_pause()
        paused_at = time.monotonic()
        answers: set[tuple[int, str]] = set()
        while time.monotonic() - paused_at < pause:  # the outage itself: its length is tested
            answers.add(health(worker))
            time.sleep(1.0)
        back = case.stack.broker_resume()
        send(500)
        caught_up = timed(lambda: bs.times_seen(case.dsn) == dict(expected), back, 60, "caught up")
        ready = timed(lambda: health(worker) == (200, "ready"), back, 60, "/health ready")
        figure(
            f"broker paused {pause:.0f}s: 500 new increments applied {caught_up:.1f}s after "
            f"its return (exact); /health during the pause {sorted(answers)}, ready again "
            f"after {ready:.1f}s"
        )
        assert worker.alive()
        assert (503, "not_ready") in answers, answers
        assert caught_up < RECOVERY_BOUND
        assert ready < RECOVERY_BOUND
    finally:
        publisher.close()
