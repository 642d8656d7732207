"""A broker that lost its log (restarted; a topic deleted and recreated) under a kept
database: the flush marks are recognised as another log's, reported, and voided, and
every new increment is applied. Before: all 400 were skipped as "already applied"."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import psycopg
import pytest

from streams import topics
from streams.client import incr
from streams.publisher import Publisher
from tests.buffers import support as bs
from tests.chaos.support import Case, figure
from tests.support import harness

ENV = {"STREAMS_AGENTS": "buffers", "STREAMS_BUFFER_FLUSH_INTERVAL": "0.5"}


def _send(case: Case, ids: list[int], expected: Counter[int], n: int) -> None:
    publisher = Publisher(case.settings)
    try:
        with bs.client_publisher(publisher):
            for i in range(n):
                gid = ids[i % len(ids)]
                incr("issue_group", {"times_seen": 1}, {"id": gid})
                expected[gid] += 1
        publisher.flush()
    finally:
        publisher.close()


def _resets(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT coalesce(sum(resets), 0) FROM buffer_flush_marks").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.allow_errors  # marks.reset.detected is an error log, by design
def test_after_a_broker_reset_new_increments_are_applied_not_skipped(
    case: Case, processes: list[harness.Proc], tmp_path: Path
) -> None:
    ids = bs.seed_groups(case.dsn, 40)
    expected: Counter[int] = Counter()
    worker = harness.start_worker(case.settings, tmp_path / "w1.log", env=ENV)
    processes.append(worker)
    _send(case, ids, expected, 4000)
    harness.wait_for(lambda: bs.times_seen(case.dsn) == dict(expected), 90, 0.2, "4000 applied")
    worker.stop()

    case.stack.broker_restart()  # every topic and offset gone; PostgreSQL keeps its marks
    topics.create_all(case.settings)
    worker = harness.start_worker(case.settings, tmp_path / "w2.log", env=ENV)
    processes.append(worker)
    _send(case, ids, expected, 400)

    def applied() -> int:
        return sum(bs.times_seen(case.dsn).values()) - 4000

    harness.wait_for(lambda: applied() == 400, 60, 0.2, "the 400 new increments applied")
    figure(f"broker reset: {applied()} of 400 new increments applied (before: 0)")
    assert bs.times_seen(case.dsn) == dict(expected)
    assert _resets(case.dsn) >= 1
    assert bs.metric(worker, "streams_offset_mark_resets_total", kind="buffer_flush") >= 1
    assert "marks.reset.detected" in worker.output()
