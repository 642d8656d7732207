"""kill -9 of the worker, then of the relay, under mixed load (outbox rows, increments,
resource changes that become webhook POSTs), each restarted at once: no outbox row,
increment or webhook lost, counters exact, work resumed within 5 s, no webhook POSTed
more than twice and duplicates under 1% of the POSTs of the 10 s before the kill (at
least 1 allowed). Prints the duplicate POSTs per kill and the 99th percentile of POSTs
per delivery. Before webhook_delivered: 4-11 duplicate POSTs, up to 3 per delivery."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from streams.client import incr
from streams.outbox.categories import OutboxCategory, OutboxScope
from streams.outbox.write import enqueue_outbox
from streams.publisher import Publisher
from tests.buffers import support as bs
from tests.chaos.support import RECOVERY_BOUND, SOAK, Case, figure, health, timed
from tests.relay import support as rs
from tests.support import harness
from tests.support.webhooks import Receiver, Rows

WORKER_ENV = {
    "STREAMS_AGENTS": "buffers,resource_changes,webhook_delivery",
    "STREAMS_BUFFER_FLUSH_INTERVAL": "0.5",
    "STREAMS_CONSUMER_FETCH_MAX_WAIT": "0.1",
    "STREAMS_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "STREAMS_WEBHOOK_RETRY_DELAY": "0.5",
    "STREAMS_WEBHOOK_TIMEOUT": "2",
}
PHASE = 15.0 if SOAK else 4.0  # seconds of load before, between and after the kills


class Load:
    """Every 0.1 s: 10 increments, and one transaction with an organization row and a new
    issue whose change (issue.created) a subscribed app receives as a POST."""

    def __init__(self, case: Case, rows: Rows, groups: list[int]) -> None:
        self.case, self.rows, self.groups = case, rows, groups
        self.expected: Counter[int] = Counter()
        self.outbox_ids: list[int] = []
        self.issues: list[int] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        publisher = Publisher(self.case.settings)
        try:
            with psycopg.connect(self.case.dsn) as conn, bs.client_publisher(publisher):
                tick = 0
                while not self.stop.is_set():
                    self._tick(conn, tick)
                    publisher.flush()
                    tick += 1
                    time.sleep(0.1)
        except BaseException as exc:
            self.error = exc
        finally:
            publisher.close()

    def _tick(self, conn: psycopg.Connection[tuple[Any, ...]], tick: int) -> None:
        for i in range(10):
            gid = self.groups[(tick + i) % len(self.groups)]
            incr("issue_group", {"times_seen": 1}, {"id": gid})
            self.expected[gid] += 1
        row = conn.execute(
            "INSERT INTO issue_group (project_id, title) VALUES (%s, %s) RETURNING id",
            (self.rows.project_id, f"chaos {tick}"),
        ).fetchone()
        assert row is not None
        issue = int(row[0])
        enqueue_outbox(
            conn,
            scope=OutboxScope.ORGANIZATION,
            shard_identifier=self.rows.organization_id,
            category=OutboxCategory.ISSUE_CHANGE,
            object_identifier=issue,
            payload={"action": "created", "project_id": self.rows.project_id},
        )
        oid = enqueue_outbox(
            conn,
            scope="organization_scope",
            shard_identifier=tick % 10,
            category="organization_update",
            object_identifier=100_000 + tick,
        )
        conn.commit()
        self.issues.append(issue)
        self.outbox_ids.append(oid)


def _diff(seen: dict[int, int], expected: Counter[int]) -> str:
    off = {g: seen.get(g, 0) - n for g, n in expected.items() if seen.get(g, 0) != n}
    return f"applied {sum(seen.values())} of {sum(expected.values())}, off by group {off}"


def _exact(dsn: str, load: Load) -> bool:
    """The seeded groups' counters equal the increments sent (the load's own issues,
    also issue_group rows, stay at 0)."""
    seen = bs.times_seen(dsn)
    return {g: seen.get(g, 0) for g in load.groups} == {g: load.expected[g] for g in load.groups}


def _applied(dsn: str) -> int:
    return sum(bs.times_seen(dsn).values())


def _posts(receiver: Receiver) -> Counter[str]:
    return Counter(str(r.json()["data"]["issue"]["id"]) for r in receiver.received())


def _p99(counts: Counter[str]) -> int:
    per = sorted(counts.values())
    return per[min(len(per) - 1, int(len(per) * 0.99))] if per else 0


def _kill_worker(
    case: Case, worker: harness.Proc, processes: list[harness.Proc], log: Path
) -> tuple[harness.Proc, float, float]:
    """kill -9 and restart at once: (new worker, s to /health ready, s to work resumed)."""
    worker.kill9()
    killed = time.monotonic()
    at_kill = _applied(case.dsn)
    new = harness.start_worker(case.settings, log, ready=False, env=WORKER_ENV)
    processes.append(new)
    ready = timed(lambda: health(new) == (200, "ready"), killed, 90, "worker ready")
    resumed = timed(lambda: _applied(case.dsn) > at_kill, killed, 90, "increments resumed")
    return new, ready, resumed


def _kill_relay(
    case: Case, relay: harness.Proc, processes: list[harness.Proc], log: Path
) -> tuple[harness.Proc, float]:
    """kill -9 and restart at once: (new relay, s until the rows queued at the kill are out)."""
    relay.kill9()
    killed = time.monotonic()
    with psycopg.connect(case.dsn) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM region_outbox").fetchone()
    newest = int(row[0]) if row else 0
    new = rs.start_relay(case.settings, processes, log)

    def out() -> bool:
        with psycopg.connect(case.dsn) as conn:
            left = conn.execute("SELECT count(*) FROM region_outbox WHERE id <= %s", (newest,))
            found = left.fetchone()
        return found is not None and int(found[0]) == 0

    return new, timed(out, killed, 90, "rows queued at the kill published")


@pytest.mark.allow_errors  # lost connections and rebalances are logged by the processes
def test_kill9_of_the_worker_then_the_relay_under_mixed_load(
    case: Case, processes: list[harness.Proc], tmp_path: Path
) -> None:
    rows = Rows(case.dsn)
    groups = bs.seed_groups(case.dsn, 20)
    with Receiver() as receiver:
        rows.install(rows.app(receiver.url("/chaos"), ["issue.created"]))
        worker = harness.start_worker(case.settings, tmp_path / "w1.log", env=WORKER_ENV)
        processes.append(worker)
        relay = rs.start_relay(case.settings, processes, tmp_path / "r1.log")
        reader = rs.TopicReader(case.settings, ["outbox.region"])
        try:
            with Load(case, rows, groups) as load:
                time.sleep(PHASE)
                killed_at = time.time()
                before_kill = [r for r in receiver.received() if r.at > killed_at - 10]
                worker, w_ready, w_resumed = _kill_worker(
                    case, worker, processes, tmp_path / "w2.log"
                )
                time.sleep(PHASE)
                relay, r_resumed = _kill_relay(case, relay, processes, tmp_path / "r2.log")
                time.sleep(PHASE)
            assert load.error is None, load.error
            try:
                harness.wait_for(lambda: _exact(case.dsn, load), 90, 0.5, "exact")
            except AssertionError:
                raise AssertionError(_diff(bs.times_seen(case.dsn), load.expected)) from None
            rs.wait_empty(case.dsn, 90, relay)
            harness.wait_for(
                lambda: set(_posts(receiver)) >= {str(i) for i in load.issues},
                90,
                0.5,
                "every issue POSTed",
            )
            time.sleep(2.0)  # late duplicates would arrive by now
            published = set(rs.ids_of(reader.drain(quiet=1.0)))
        finally:
            reader.close()
        posts = _posts(receiver)
    duplicates = sum(posts.values()) - len(posts)
    figure(
        f"kill -9 under mixed load: worker /health ready {w_ready:.1f}s and increments "
        f"resumed {w_resumed:.1f}s after its kill; relay published the rows queued at its "
        f"kill {r_resumed:.1f}s after it; {sum(load.expected.values())} increments exact, "
        f"{len(load.outbox_ids)} outbox rows all published, {len(load.issues)} webhooks "
        f"all delivered with {duplicates} duplicate POSTs ({len(before_kill)} POSTs in the "
        f"10 s before the worker's kill), POSTs per delivery p99 {_p99(posts)}, max "
        f"{max(posts.values())}"
    )
    assert set(load.outbox_ids) <= published
    assert _exact(case.dsn, load)
    assert {str(i) for i in load.issues} <= set(posts)
    assert max(posts.values()) <= 2, "no delivery POSTed more than twice"
    # Under 1% of the deliveries of the 10 s before the kill (at least 1 allowed: the
    # batch whose POSTs were out but not recorded when the worker died).
    assert duplicates <= max(1, len(before_kill) // 100), duplicates
    assert r_resumed < RECOVERY_BOUND
    assert w_resumed - w_ready < RECOVERY_BOUND, "work resumed within 5 s of the restart"
    assert worker.alive() and relay.alive()
