"""The buffer agent in a real worker, against the real broker and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from streams.client import incr
from streams.dev import stack
from streams.publisher import Publisher
from streams.settings import Settings
from tests.buffers import support as s
from tests.support import harness

Worker = Callable[..., harness.Proc]
ONLY_BUFFERS = {"STREAMS_AGENTS": "buffers"}
# A killed member holds its partitions until its session expires: keep that short.
# Windows longer than Faust's 1 s commit interval: an agent that acknowledged messages
# before their flush would let the consumer commit past unapplied increments.
KILL_INTERVAL = 2.0
FAST_REJOIN = {"STREAMS_KAFKA_SESSION_TIMEOUT": "3", "STREAMS_KAFKA_HEARTBEAT_INTERVAL": "0.5"}


def start(worker: Worker, interval: float, **env: Any) -> harness.Proc:
    return worker(**ONLY_BUFFERS, STREAMS_BUFFER_FLUSH_INTERVAL=str(interval), **env)


@pytest.mark.slow  # `make test-slow` (CI runs it): a load or kill -9 test
def test_100k_increments_over_500_rows_sum_exactly_in_few_statements(
    settings: Settings, database: str, publisher: Publisher, worker: Worker
) -> None:
    ids = s.seed_groups(database, 500)
    proc = start(worker, 1.0)
    rng = random.Random(6)
    expected: Counter[int] = Counter()
    with s.client_publisher(publisher):
        for _ in range(100_000):
            gid = rng.choice(ids)
            n = rng.randint(1, 3)
            incr("issue_group", {"times_seen": n}, {"id": gid})
            expected[gid] += n
        publisher.flush()

    def done() -> bool:
        return s.times_seen(database) == {i: expected[i] for i in ids}

    harness.wait_for(done, 120, 0.5, "every counter equal to its exact sum")
    flushes = s.metric(proc, "streams_buffer_flushes_total", outcome="ok")
    statements = s.metric(proc, "streams_buffer_statements_total", kind="row")
    print(f"100k increments, 500 rows: {statements:.0f} row statements in {flushes:.0f} flushes")
    assert s.metric(proc, "streams_buffer_increments_total", model="issue_group") == 100_000
    assert flushes >= 1
    assert statements <= 500 * flushes  # one statement per row per window, at most
    assert statements < 100_000 / 4
    assert sum(m[3] for m in s.marks(database)) == 100_000
    assert s.parked(database) == []


class Flow:
    """Increments flowing from a background thread while workers come and go."""

    def __init__(self, publisher: Publisher, ids: list[int], per_tick: int = 100) -> None:
        self.publisher = publisher
        self.ids = ids
        self.per_tick = per_tick
        self.expected: Counter[int] = Counter()
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Flow:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.publisher.flush()

    def _run(self) -> None:
        rng = random.Random(66)
        while not self._stop.wait(0.05):
            for _ in range(self.per_tick):
                gid = rng.choice(self.ids)
                n = rng.randint(1, 5)
                incr("issue_group", {"times_seen": n}, {"id": gid})
                self.expected[gid] += n
                self.sent += 1


def _replayed(proc: harness.Proc) -> float:
    try:
        return s.metric(proc, "streams_buffer_replayed_total")
    except (OSError, AssertionError):
        return 0.0


def _kill_during_flush(database: str, proc: harness.Proc, gid: int) -> None:
    """Hold a row lock so the worker's next flush blocks inside its transaction; kill it."""
    with psycopg.connect(database) as conn:
        conn.execute("SELECT 1 FROM issue_group WHERE id = %s FOR UPDATE", (gid,))

        def flush_blocked() -> bool:
            with psycopg.connect(database, autocommit=True) as probe:
                row = probe.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'UPDATE%%issue_group%%'"
                ).fetchone()
            return bool(row and row[0])

        harness.wait_for(flush_blocked, 30, 0.05, "a flush waiting on the locked row")
        proc.kill9()
        conn.rollback()


def _kill_after_commit(database: str, proc: harness.Proc) -> None:
    """Kill right after a flush committed: before the consumer commits its offsets."""
    before = sum(m[2] for m in s.marks(database))
    harness.wait_for(
        lambda: sum(m[2] for m in s.marks(database)) > before, 30, 0.005, "a flush commit"
    )
    proc.kill9()


@pytest.mark.slow  # `make test-slow` (CI runs it): a load or kill -9 test
def test_kill9_at_any_moment_neither_loses_nor_repeats_an_increment(
    settings: Settings, database: str, publisher: Publisher, worker: Worker
) -> None:
    ids = s.seed_groups(database, 50)
    rng = random.Random()
    reps = 10 if os.environ.get("STREAMS_SOAK") else 4
    replayed = 0.0
    moments: list[str] = []
    with s.client_publisher(publisher), Flow(publisher, ids, per_tick=40) as flow:
        for rep in range(reps + 2):
            t0 = time.monotonic()
            proc = start(worker, KILL_INTERVAL, **FAST_REJOIN)
            print(f"rep {rep}: ready in {time.monotonic() - t0:.1f}s")
            if rep == 0:
                _kill_during_flush(database, proc, rng.choice(ids))
                moments.append("during-flush")
                continue
            if rep == 1:
                replayed += _replayed(proc)
                _kill_after_commit(database, proc)
                moments.append("after-commit")
                continue
            delay = rng.uniform(0.0, 4.0)
            time.sleep(delay)
            replayed += _replayed(proc)
            proc.kill9()
            moments.append(f"{delay:.2f}s")
    applied_during = sum(m[3] for m in s.marks(database))
    t0 = time.monotonic()
    last = start(worker, KILL_INTERVAL, **FAST_REJOIN)
    print(f"last: ready in {time.monotonic() - t0:.1f}s")

    def exact() -> bool:
        return s.times_seen(database) == {i: flow.expected[i] for i in ids}

    harness.wait_for(exact, 90, 0.5, "counters equal to the exact sums after the kills")
    print(f"drained in {time.monotonic() - t0:.1f}s")
    replayed += _replayed(last)
    print(
        f"kill -9 at {moments}: {flow.sent} increments, {applied_during} applied before the "
        f"last restart, {replayed:.0f} replayed increments skipped"
    )
    assert 0 < applied_during < flow.sent  # the kills happened while increments flowed
    assert replayed > 0  # offsets were read again after a kill, and not counted twice
    assert sum(m[3] for m in s.marks(database)) == flow.sent
    assert s.parked(database) == []


def _wire(
    gid: int, at_ms: int, n: int = 1, signal_only: bool = False, **extra: Any
) -> dict[str, Any]:
    return {
        "model": "issue_group",
        "filters": {"id": gid},
        "columns": {"times_seen": n},
        "extra": extra or None,
        "signal_only": signal_only,
        "event_time": at_ms,
    }


def test_extra_keeps_the_latest_event_and_signal_only_emits_a_completion_instead(
    settings: Settings, database: str, publisher: Publisher, worker: Worker
) -> None:
    a, b = s.seed_groups(database, 2)
    t0 = int(time.time() * 1000)  # after the rows were created: last_seen never goes back
    key_a, key_b = f'issue_group:{{"id":{a}}}', f'issue_group:{{"id":{b}}}'
    # Published before the worker starts, so all of them fall into its first window;
    # the older event arrives last and must not win.
    for value in (
        _wire(a, t0 + 3_000, level="warning", status=1, last_seen=t0 + 3_000),
        _wire(a, t0 + 9_000, n=2, level="fatal", last_seen=t0 + 9_000),
        _wire(a, t0 + 1_000, level="info", status=2, last_seen=t0 + 1_000),
    ):
        publisher.publish("buffer-increments", value, key=key_a)
    for n in (1, 2, 3):
        publisher.publish(
            "buffer-increments", _wire(b, t0 + n, n=n, signal_only=True, level="x"), key=key_b
        )
    proc = start(worker, 1.0)
    completions = harness.wait_for(
        lambda: s.read_topic(settings, "buffer-completions"), 30, 0.5, "a completion event"
    )
    harness.wait_for(lambda: s.times_seen(database)[a] == 4, 30, 0.2, "row a flushed")
    rows = s.groups(database)
    assert rows[a]["level"] == "fatal"  # latest event time, not latest arrival
    assert rows[a]["status"] == 1  # set by t0+3s; the t0+1s value is older
    assert rows[a]["last_seen"] == dt.datetime.fromtimestamp((t0 + 9_000) / 1000, dt.UTC)
    assert rows[b]["times_seen"] == 0  # signal_only wrote nothing
    [(key, value, _)] = completions
    assert key == key_b.encode()
    assert value["filters"] == {"id": b}
    assert value["columns"] == {"times_seen": 6}
    assert (value["increments"], value["extra"]) == (3, {"level": "x"})
    assert s.metric(proc, "streams_buffer_rows_flushed_total", outcome="signalled") == 1


def test_bad_messages_are_dead_lettered_and_the_row_keeps_counting(
    settings: Settings, database: str, publisher: Publisher, worker: Worker
) -> None:
    (a,) = s.seed_groups(database, 1)
    key = f'issue_group:{{"id":{a}}}'.encode()
    topic = publisher.encode("buffer-increments", _wire(a, 0))[0]
    garbage = b"not avro at all"
    outsider = dict(_wire(a, 0), model="auth_user")  # fits the schema, not the allow-list
    publisher.publish("buffer-increments", _wire(a, 1_000, n=2), key=key)
    publisher.send_raw(topic, garbage, key=key, headers=[])
    publisher.publish("buffer-increments", outsider, key=key)
    publisher.publish("buffer-increments", _wire(a, 2_000, n=3), key=key)
    start(worker, 0.5)
    harness.wait_for(lambda: s.times_seen(database)[a] == 5, 30, 0.2, "valid increments applied")
    letters = harness.wait_for(
        lambda: [v for _, v, _ in s.read_topic(settings, "dead-letters")] or None, 15, 0.5
    )
    assert len(letters) == 2 and letters[0] == garbage
    assert publisher.codec.decode("buffer-increments", letters[1])["model"] == "auth_user"
    harness.wait_for(lambda: sum(m[1] for m in s.marks(database)) == 4, 10, 0.2, "mark past all")


def test_a_model_or_column_outside_the_allow_list_raises_and_publishes_nothing(
    settings: Settings, publisher: Publisher
) -> None:
    bad_calls: list[tuple[Any, ...]] = [
        ("auth_user", {"times_seen": 1}, {"id": 1}),
        ("issue_group", {"title": 1}, {"id": 1}),
        ("issue_group", {"times_seen": 1}, {"project_id": 1}),
        ("issue_group", {"times_seen": 1}, {"id": 1}, {"title": "x"}),
        ("issue_group", {"times_seen": "1"}, {"id": 1}),
    ]
    with s.client_publisher(publisher):
        for args in bad_calls:
            with pytest.raises(TypeError):
                incr(*args, wait=True)
    publisher.flush()
    assert s.read_topic(settings, "buffer-increments") == []


@pytest.mark.slow  # `make test-slow` (CI runs it): a load or kill -9 test
def test_a_worker_joining_and_one_stopping_hand_over_partitions_exactly(
    settings: Settings, database: str, publisher: Publisher, worker: Worker
) -> None:
    ids = s.seed_groups(database, 50)
    with s.client_publisher(publisher), Flow(publisher, ids, per_tick=40) as flow:
        # The first worker's windows never close by themselves during this test: the
        # rebalance and its stop must flush them at once (Faust waits for every
        # consumed message to be acknowledged before it hands partitions over).
        first = start(worker, 30.0)
        time.sleep(2)
        joining = time.monotonic()
        second = worker(
            settings.with_(web_port=stack.free_port()),
            **ONLY_BUFFERS,
            STREAMS_BUFFER_FLUSH_INTERVAL=str(KILL_INTERVAL),
        )
        join_seconds = time.monotonic() - joining
        harness.wait_for(
            lambda: len(first.health().get("assignment", [])) < 4, 30, 0.2, "a rebalance"
        )
        time.sleep(2)
        stopping = time.monotonic()
        first.stop(timeout=30)
        stop_seconds = time.monotonic() - stopping
        time.sleep(2)

    def exact() -> bool:
        return s.times_seen(database) == {i: flow.expected[i] for i in ids}

    harness.wait_for(exact, 60, 0.5, "counters exact after the hand-overs")
    print(
        f"hand-over: {flow.sent} increments exact; second worker ready in {join_seconds:.1f}s, "
        f"first stopped in {stop_seconds:.1f}s (its window: 30s)"
    )
    assert first.popen.returncode == 0
    assert join_seconds < 20 and stop_seconds < 10  # neither waited for the 30 s window
    assert second.alive()
    assert sum(m[3] for m in s.marks(database)) == flow.sent
