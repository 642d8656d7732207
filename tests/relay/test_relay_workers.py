"""`streams relay --concurrency 2`: worker processes drain, report, and die with the relay."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from streams.dev.stack import free_port
from streams.settings import Settings
from tests.relay.support import TopicReader, ids_of, start_relay, wait_empty, write
from tests.relay.test_relay_processes import metric, wait_serving
from tests.support import harness


@pytest.fixture
def reader(settings: Settings) -> Iterator[TopicReader]:
    r = TopicReader(settings, ["outbox.region"])
    try:
        yield r
    finally:
        r.close()


def workers_of(pid: int) -> set[int]:
    """The relay's worker processes (its multiprocessing children)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def running(pid: int) -> bool:
    """Alive (a zombie left for init to reap counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def drained_by(dsn: str) -> set[int]:
    """The pids whose drained rows were counted (the backfill budget's slots)."""
    with psycopg.connect(dsn) as conn:
        slots = conn.execute("SELECT slot FROM outbox_drain_minutes").fetchall()
    return {int(s.rsplit(":", 1)[1]) for (s,) in slots}


def test_worker_processes_drain_count_in_the_relays_metrics_and_die_with_it(
    settings: Settings, processes: list[harness.Proc], tmp_path: Path, reader: TopicReader
) -> None:
    dsn = settings.database_url.get()
    port = free_port()
    relay = start_relay(
        settings,
        processes,
        tmp_path / "relay.log",
        concurrency=2,
        STREAMS_METRICS_PORT=str(port),
        STREAMS_RELAY_BATCH_SIZE="50",  # 400 rows: ranges of several batches each
    )
    wait_serving(port)
    harness.wait_for(lambda: len(workers_of(relay.pid)) == 2, 60, 0.2, "2 worker processes")
    workers = workers_of(relay.pid)
    with psycopg.connect(dsn) as conn:
        conn.execute("DELETE FROM outbox_drain_minutes")
        conn.commit()
    written = write(dsn, [(n % 40, n) for n in range(400)])
    wait_empty(dsn, 60, relay)
    records = reader.wait_for(lambda rs: set(written) <= set(ids_of(rs)), 15, "every row")
    assert sorted(set(ids_of(records))) == sorted(written)
    # The workers did the draining, and their counts reached the relay's /metrics.
    assert drained_by(dsn) & workers, (drained_by(dsn), workers)
    harness.wait_for(
        lambda: metric(port, "streams_relay_rows_published_total") >= len(written),
        10,
        0.2,
        "the workers' counts in the relay's metrics",
    )
    relay.kill9()
    harness.wait_for(
        lambda: not any(running(w) for w in workers),
        10,
        0.1,
        "the workers gone with their relay",
    )


def test_workers_still_starting_when_the_relay_is_killed_do_not_linger(
    settings: Settings, processes: list[harness.Proc], tmp_path: Path
) -> None:
    """A kill -9 before the workers asked for their death signal (they import for a
    second or more): they notice the relay is gone once started, and exit."""
    relay = start_relay(settings, processes, tmp_path / "relay.log", concurrency=2)
    workers = harness.wait_for(lambda: workers_of(relay.pid), 30, 0.01, "worker processes")
    relay.kill9()
    harness.wait_for(
        lambda: not any(running(w) for w in workers), 60, 0.2, "the orphaned workers gone"
    )
