"""The broker frozen for 30 s (SIGSTOP, its memory kept): nothing lost, counters exact,
the worker applies new increments within 5 s of the broker's return."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from streams.client import incr
from streams.publisher import Publisher
from tests.buffers import support as bs
from tests.chaos.support import RECOVERY_BOUND, SOAK, Case, figure, timed
from tests.support import harness

PAUSE = 70.0 if SOAK else 30.0


def test_broker_paused_then_resumed_the_worker_recovers_within_5s(
    case: Case, processes: list[harness.Proc], tmp_path: Path
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
        time.sleep(PAUSE)  # the outage itself: its length is what is tested
        back = case.stack.broker_resume()
        send(500)
        caught_up = timed(lambda: bs.times_seen(case.dsn) == dict(expected), back, 60, "caught up")
        figure(
            f"broker paused {PAUSE:.0f}s: 500 new increments applied {caught_up:.1f}s after "
            "its return (exact)"
        )
        assert worker.alive()
        assert caught_up < RECOVERY_BOUND
    finally:
        publisher.close()
