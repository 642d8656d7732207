"""`streams relay` processes: concurrent relays, kill -9, late commits, a paused broker."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from streams.dev.stack import free_port
from streams.outbox import enqueue_outbox
from streams.settings import Settings
from tests.relay.support import (
    Record,
    TopicReader,
    by_shard,
    ids_of,
    queued,
    start_relay,
    wait_empty,
    write,
)
from tests.support import harness

SOAK = os.environ.get("STREAMS_SOAK", "") not in ("", "0")


@pytest.fixture
def reader(settings: Settings) -> Iterator[TopicReader]:
    r = TopicReader(settings, ["outbox.region"])
    try:
        yield r
    finally:
        r.close()


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    values = [float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M)]
    return sum(values)


def wait_serving(port: int, timeout: float = 60.0) -> None:
    """Until the relay on ``port`` is past its start-up checks and serves its metrics."""

    def serving() -> bool:
        try:
            metric(port, "streams_relay_rows_published_total")
        except OSError:
            return False
        return True

    harness.wait_for(serving, timeout, 0.1, f"the relay serving metrics on {port}")


def assert_shard_order(records: list[Record]) -> None:
    """Per shard, outbox ids first seen in strictly increasing order."""
    for shard, recs in by_shard(records).items():
        seen: list[int] = []
        for r in recs:
            if r.outbox_id not in seen:
                seen.append(r.outbox_id)
        assert seen == sorted(seen), f"shard {shard} out of order: {seen}"


def backoff_steps(dsn: str) -> set[float]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT DISTINCT extract(epoch FROM scheduled_for - scheduled_from)::float8"
            " FROM region_outbox"
        ).fetchall()
    return {float(r[0]) for r in rows}


def test_a_commit_wakes_an_idle_relay_long_before_its_poll_interval(
    settings: Settings, processes: list[harness.Proc], tmp_path: Path, reader: TopicReader
) -> None:
    dsn = settings.database_url.get()
    relay = start_relay(
        settings, processes, tmp_path / "relay.log", STREAMS_RELAY_POLL_INTERVAL="60"
    )
    time.sleep(2.0)  # started, first pass done, now waiting on LISTEN
    assert relay.alive(), relay.output()
    started = time.monotonic()
    [row_id] = write(dsn, [(1, 1)])
    reader.wait_for(lambda rs: row_id in ids_of(rs), 5, "the row")
    assert time.monotonic() - started < 5
    # Idle on a 60 s poll interval, it still stops promptly (SIGTERM), by itself.
    asked = time.monotonic()
    relay.stop(timeout=10)
    assert relay.popen.returncode == 0, relay.output()[-2000:]
    assert time.monotonic() - asked < 5


def test_per_shard_order_with_8_writers_and_3_relays(
    settings: Settings, processes: list[harness.Proc], tmp_path: Path, reader: TopicReader
) -> None:
    dsn = settings.database_url.get()
    ports = [free_port() for _ in range(3)]
    relays = [
        start_relay(
            settings,
            processes,
            tmp_path / f"relay-{i}.log",
            concurrency=2,
            STREAMS_METRICS_PORT=str(port),
        )
        for i, port in enumerate(ports)
    ]
    for port in ports:  # all three running before the writers start, so they can share
        wait_serving(port)
    written: dict[tuple[int, int], int] = {}  # (shard, object) -> newest id
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w: int) -> None:
        rnd = random.Random(w)
        with psycopg.connect(dsn) as conn:
            while not stop.is_set():
                shard = rnd.choice([w, w + 8, w + 16])
                with conn.transaction():
                    rows = [(shard, rnd.randrange(5)) for _ in range(rnd.randint(1, 3))]
                    ids = [
                        enqueue_outbox(
                            conn,
                            scope="organization_scope",
                            shard_identifier=s,
                            category="organization_update",
                            object_identifier=o,
                        )
                        for s, o in rows
                    ]
                with lock:
                    for key, i in zip(rows, ids, strict=True):
                        written[key] = max(i, written.get(key, 0))
                time.sleep(rnd.uniform(0, 0.01))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    time.sleep(4.0)
    stop.set()
    for t in threads:
        t.join()
    wait_empty(dsn, 30, relays[0])
    records = reader.drain(quiet=1.0)
    published = ids_of(records)
    assert len(published) == len(set(published)), "a message was published twice"
    assert_shard_order(records)
    # Coalescing may drop older rows, never the newest of an object.
    assert set(written.values()) <= set(published)
    counts = [metric(p, "streams_relay_rows_published_total") for p in ports]
    assert sum(counts) == len(published)
    assert sum(1 for c in counts if c > 0) >= 2, f"one relay did everything: {counts}"


CRASH_ARGS = ("--after", "1", "--concurrency", "1")


def start_crashing_relay(
    settings: Settings, processes: list[harness.Proc], log: Path
) -> harness.Proc:
    """A relay (concurrency 1) that kills itself after its first acked batch, before the delete."""
    env = harness.env_for(settings, STREAMS_RELAY_POLL_INTERVAL="0.2", STREAMS_METRICS_PORT="0")
    with log.open("ab") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "tests.support.crashing_relay", *CRASH_ARGS],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=harness.ROOT,
        )
    proc = harness.Proc(popen, log)
    processes.append(proc)
    return proc


def beyond(held: set[int]) -> Callable[[list[Record]], bool]:
    """A predicate: records other than the ``held`` outbox ids went out."""
    return lambda records: bool(set(ids_of(records)) - held)


def test_kill_9_between_ack_and_delete_loses_nothing(
    settings: Settings, processes: list[harness.Proc], tmp_path: Path, reader: TopicReader
) -> None:
    """The relay is killed after the broker acked a batch and before its delete."""
    dsn = settings.database_url.get()
    reps = 20 if SOAK else 5
    written: list[int] = []
    for rep in range(reps):
        written += write(dsn, [(s, rep * 100 + s * 10 + k) for s in (1, 2, 3) for k in range(2)])
        proc = start_crashing_relay(settings, processes, tmp_path / f"relay-{rep}.log")
        assert proc.popen.wait(30) == -signal.SIGKILL, proc.output()[-2000:]
        assert queued(dsn) == len(written), "rows were deleted without a completed commit"
    final = start_relay(settings, processes, tmp_path / "relay-final.log", concurrency=1)
    wait_empty(dsn, 30, final)
    records = reader.drain(quiet=1.0)
    assert set(ids_of(records)) == set(written)
    assert len(records) > len(written)  # the crashed batches were re-sent ...
    by_id: dict[int, list[Record]] = {}
    for r in records:
        by_id.setdefault(r.outbox_id, []).append(r)
    for outbox_id, copies in by_id.items():  # ... each copy carrying the same outbox id
        assert {c.value["outbox_id"] for c in copies} == {outbox_id}
        assert len({(c.key, c.value["object_identifier"]) for c in copies}) == 1
    assert_shard_order(records)


def test_rows_committed_out_of_order_are_all_published(
    settings: Settings, processes: list[harness.Proc], tmp_path: Path, reader: TopicReader
) -> None:
    """16 writers take ids in one order and commit in a shuffled one, while the relay runs."""
    dsn = settings.database_url.get()
    relay = start_relay(settings, processes, tmp_path / "relay.log", concurrency=4)
    conns = [psycopg.connect(dsn) for _ in range(16)]
    written: list[int] = []
    rnd = random.Random(7)
    obj = 0
    try:
        for rnd_no in range(5):  # 5 rounds x 16 transactions = 80 transactions, 1,000 rows
            for k, c in enumerate(conns):
                t = rnd_no * 16 + k
                for _ in range(1000 * (t + 1) // 80 - 1000 * t // 80):
                    obj += 1
                    written.append(
                        enqueue_outbox(
                            c,
                            scope="organization_scope",
                            shard_identifier=obj % 10,
                            category="organization_update",
                            object_identifier=obj,
                        )
                    )
            order = list(conns)
            rnd.shuffle(order)
            if rnd_no == 0:  # make sure of one late commit: the round's lowest ids go last
                order.remove(conns[0])
            for c in order:
                c.commit()
                time.sleep(0.03)  # let the relay drain higher ids before lower ones commit
            if rnd_no == 0:
                held = set(written[: 1000 // 80])
                reader.wait_for(beyond(held), 10, "higher ids out")
                conns[0].commit()
    finally:
        for c in conns:
            c.close()
    assert len(written) == 1000
    wait_empty(dsn, 30, relay)
    records = reader.wait_for(lambda rs: len(rs) >= len(written), 10, "all rows")
    assert sorted(ids_of(records)) == sorted(written)
    # The scenario really happened: some lower ids went out after higher ones.
    logs: dict[int, list[int]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        logs.setdefault(r.partition, []).append(r.outbox_id)
    assert any(ids != sorted(ids) for ids in logs.values())


def test_broker_paused_rows_accumulate_then_all_go_out_in_order(
    settings: Settings,
    processes: list[harness.Proc],
    tmp_path: Path,
    reader: TopicReader,
    real_stack: harness.Stack,
) -> None:
    """SIGSTOP the broker (10 s in CI, 30 s with STREAMS_SOAK=1) while writers keep going."""
    if real_stack.started is None or real_stack.started.broker_pid is None:
        pytest.skip("the broker is not ours to pause")
    broker = real_stack.started.broker_pid
    pause = 30.0 if SOAK else 10.0
    dsn = settings.database_url.get()
    port = free_port()
    relay = start_relay(
        settings,
        processes,
        tmp_path / "relay.log",
        concurrency=2,
        STREAMS_METRICS_PORT=str(port),
        STREAMS_RELAY_PUBLISH_TIMEOUT="3",
    )
    written: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            written.extend(write(dsn, [(n % 10, n)]))
            time.sleep(0.01)

    wait_serving(port)  # past its start-up check: the pause must meet a running relay
    t = threading.Thread(target=writer)
    t.start()
    try:
        harness.wait_for(
            lambda: metric(port, "streams_relay_rows_published_total") > 0, 30, 0.1, "publishing"
        )
        time.sleep(1.0)
        os.kill(broker, signal.SIGSTOP)
        try:
            before = queued(dsn)
            steps = set()
            deadline = time.monotonic() + pause
            while time.monotonic() < deadline:
                steps |= backoff_steps(dsn)
                time.sleep(0.5)
            during = queued(dsn)
        finally:
            os.kill(broker, signal.SIGCONT)
        assert during > before + 100, (before, during)
        assert {1.0, 2.0} <= steps, f"backoff did not double: {sorted(steps)}"
        assert metric(port, "streams_relay_shards_rescheduled_total") > 0
        time.sleep(2.0)
    finally:
        stop.set()
        t.join()
    wait_empty(dsn, 60, relay)
    records = reader.wait_for(
        lambda rs: set(written) <= set(ids_of(rs)), 15, "every written row published"
    )
    assert_shard_order(records)
