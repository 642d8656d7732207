"""Invalidation debounce under load: one worker, 10k requests/s across 1,000 projects.

Offers ``RATE`` requests/s (default 10,000) for ``DURATION`` s (default 60) to
``project-config-invalidations``, spread at random over 1,000 projects (10
organizations), with the default 5 s countdown, to one ``streams worker``. Then:

- sustained: requests the worker decided (scheduled + skipped) per second, from the
  first request to the last decision; goal: all of the offered rate;
- recomputes: configs published vs the distinct (scope, countdown window) pairs of
  the requests sent (computed here from the request times alone): must be equal;
- latency: request that opened a window -> its config acknowledged, minus the
  countdown, p50 / p99.

Env: BENCH_RATE, BENCH_DURATION, BENCH_PROJECTS, BENCH_LINGER_MS; KAFKA_BOOTSTRAP_SERVERS +
DATABASE_URL to use an existing stack instead of starting the embedded one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import psycopg
from confluent_kafka import Consumer, TopicPartition

from bench import _stack
from streams import catalogue, kafka_config, topics
from streams.db.migrate import migrate
from streams.dev import stack
from streams.projectconfigs.scopes import Scope, ScopeKind, request_value
from streams.publisher import Publisher
from streams.settings import Secret, Settings

ROOT = Path(__file__).resolve().parents[1]
RATE = int(os.environ.get("BENCH_RATE", "10000"))
DURATION = float(os.environ.get("BENCH_DURATION", "60"))
PROJECTS = int(os.environ.get("BENCH_PROJECTS", "1000"))
# The offering producer's batching: the worker's consumer pays per fetched batch, so
# fewer, larger batches are cheaper for it (20 ms: ~50 records per partition batch).
LINGER_MS = int(os.environ.get("BENCH_LINGER_MS", "20"))
ORGS = 10
COUNTDOWN = 5.0
TICK = 0.01


def seed(dsn: str, tag: str) -> list[tuple[int, int]]:
    """(organization id, project id) of PROJECTS projects, one key each (set-based inserts)."""
    out: list[tuple[int, int]] = []
    per_org = max(1, PROJECTS // ORGS)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for o in range(ORGS):
            org = conn.execute(
                "INSERT INTO organization (slug) VALUES (%s) RETURNING id", (f"bench-{tag}-{o}",)
            ).fetchone()
            assert org is not None
            rows = conn.execute(
                "INSERT INTO project (organization_id, slug)"
                " SELECT %s, 'p' || g FROM generate_series(1, %s) g RETURNING id",
                (org[0], per_org),
            ).fetchall()
            conn.execute(
                "INSERT INTO project_key (project_id, public_key)"
                " SELECT id, md5(random()::text || id) FROM unnest(%s::bigint[]) id",
                ([r[0] for r in rows],),
            )
            out += [(org[0], r[0]) for r in rows]
    return out


def worker_env(settings: Settings) -> dict[str, str]:
    # Tansu holds a fetch for the whole wait (streams/faust_fetch.py): 0.1 s unless set.
    wait = float(os.environ.get("STREAMS_CONSUMER_FETCH_MAX_WAIT") or 0.1)
    return _stack.worker_env(
        settings, invalidation_countdown=COUNTDOWN, consumer_fetch_max_wait=wait
    )


def profile(pid: int, settings: Settings) -> subprocess.Popen[bytes] | None:
    """With BENCH_PROFILE=<file>, py-spy samples the worker for the offering period
    (raw collapsed stacks; ``bench/topframes.py`` summarises them)."""
    out = os.environ.get("BENCH_PROFILE")
    if not out:
        return None
    spy = Path(sys.executable).with_name("py-spy")
    cmd = [str(spy), "record", "-p", str(pid), "-d", str(int(DURATION)), "-r", "50"]
    return subprocess.Popen([*cmd, "-f", "raw", "-o", out, "--nonblocking"])


def http(settings: Settings, path: str) -> str:
    url = f"http://127.0.0.1:{settings.web_port}{path}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def metric(settings: Settings, name: str) -> float:
    total = 0.0
    for line in http(settings, "/metrics").splitlines():
        m = re.match(rf"^{name}(\{{[^}}]*\}})? (\S+)$", line)
        if m:
            total += float(m.group(2))
    return total


def wait_ready(settings: Settings, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("worker exited during start-up")
        try:
            if json.loads(http(settings, "/health")).get("status") == "ready":
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit("worker not ready")


class ConfigReader(threading.Thread):
    """Records every project-configs message: (key, requested_at ms, ack time ms)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.seen: list[tuple[str, int, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        topic = catalogue.spec("project-configs").full_name(self.settings.topic_prefix)
        consumer = Consumer(kafka_config.consumer(self.settings, f"bench-{uuid.uuid4().hex}"))
        parts = catalogue.spec("project-configs").partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in range(parts)])
        while not self.stop.is_set():
            for m in consumer.consume(1000, timeout=0.1):
                if m.error() is None:
                    headers = dict(m.headers() or [])
                    requested = int(headers.get("invalidation.requested_at") or b"0")
                    self.seen.append(((m.key() or b"").decode(), requested, m.timestamp()[1]))
        consumer.close()


def offer(
    settings: Settings, projects: list[tuple[int, int]]
) -> tuple[dict[int, list[int]], int, float]:
    """Send RATE req/s for DURATION s; returns request times (ms) per project, count, s."""
    overrides: dict[str, Any] = {"linger.ms": LINGER_MS}
    publisher = Publisher(settings, **overrides)
    rng = random.Random(1)
    times: dict[int, list[int]] = defaultdict(list)
    per_tick = max(1, round(RATE * TICK))
    sent = 0
    started = time.monotonic()
    next_tick = started
    while time.monotonic() - started < DURATION:
        now = dt.datetime.now(dt.UTC)
        ms = round(now.timestamp() * 1000)
        # The wire carries milliseconds: the reference below uses the same times.
        now = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        for _ in range(per_tick):
            org, project = projects[rng.randrange(len(projects))]
            scope = Scope(ScopeKind.PROJECT, organization_id=org, project_id=project)
            value = request_value(scope, trigger="bench", countdown=COUNTDOWN, requested_at=now)
            publisher.send("project-config-invalidations", value, key=scope.message_key)
            times[project].append(ms)
        sent += per_tick
        next_tick += TICK
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.monotonic() - started
    publisher.close()
    return times, sent, elapsed


def distinct_windows(times: list[int], countdown_ms: int) -> int:
    """Countdown windows opened by the first request not inside an earlier one."""
    count, end = 0, -1
    for t in sorted(times):
        if t >= end:
            count, end = count + 1, t + countdown_ms
    return count


def run(settings: Settings) -> None:
    migrate(settings.database_url.get())
    topics.create_all(settings)
    projects = seed(settings.database_url.get(), settings.app_id)
    log = open(settings.state_dir / "bench-worker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "worker", "--loglevel", "warning"],
        env=worker_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    reader = ConfigReader(settings)
    profiler: subprocess.Popen[bytes] | None = None
    try:
        wait_ready(settings, proc)
        print(f"worker pid {proc.pid} ready (log {log.name})", flush=True)
        profiler = profile(proc.pid, settings)
        reader.start()
        print(
            f"offering {RATE} req/s for {DURATION:.0f} s across {len(projects)} projects",
            flush=True,
        )
        worker_proc = psutil.Process(proc.pid)
        cpu0 = sum(worker_proc.cpu_times()[:2])
        t0 = time.monotonic()
        times, sent, elapsed = offer(settings, projects)
        decided = 0.0
        while time.monotonic() - t0 < elapsed + 120:
            decided = metric(settings, "streams_invalidation_scheduled_total") + metric(
                settings, "streams_invalidation_skipped_total"
            )
            if decided >= sent:
                break
            time.sleep(0.2)
        drained = time.monotonic() - t0
        cpu = sum(worker_proc.cpu_times()[:2]) - cpu0
        expected = sum(distinct_windows(ts, int(COUNTDOWN * 1000)) for ts in times.values())
        deadline = time.monotonic() + COUNTDOWN + 30
        while len(reader.seen) < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)  # anything extra would show up now
        report(
            sent=sent,
            elapsed=elapsed,
            decided=decided,
            drained=drained,
            cpu=cpu,
            expected=expected,
            seen=reader.seen,
        )
    finally:
        reader.stop.set()
        if profiler is not None:
            profiler.wait(DURATION + 60)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def report(
    *,
    sent: int,
    elapsed: float,
    decided: float,
    drained: float,
    cpu: float,
    expected: int,
    seen: list[tuple[str, int, int]],
) -> None:
    lat = sorted((acked - requested) / 1000 - COUNTDOWN for _, requested, acked in seen)
    p50 = statistics.median(lat) if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    offered = sent / elapsed
    sustained = decided / drained
    print(f"offered     {offered:10.0f} req/s  ({sent} requests in {elapsed:.1f} s)")
    print(f"sustained   {sustained:10.0f} req/s  (goal: all of the offered {RATE})")
    print(f"decided     {decided:10.0f}        (all {sent} in {drained:.1f} s)")
    print(f"worker CPU  {cpu / max(1.0, decided) * 1e6:10.1f} us/request  ({cpu:.1f} s user+sys)")
    print(f"load avg    {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"recomputes  {len(seen):10d}        (must equal {expected} distinct windows)")
    print(f"latency - countdown p50 {p50:6.3f} s  p99 {p99:6.3f} s")
    if len(seen) != expected or decided < sent:
        raise SystemExit("FAILED: recomputes differ from distinct windows, or requests lost")


def main() -> None:
    state = ROOT / ".streams" / f"bench-invalidation-{os.getpid()}"
    info = stack.start(state, detach=False, env=dict(os.environ))
    try:
        assert info.kafka_bootstrap_servers and info.database_url
        tag = uuid.uuid4().hex[:6]
        settings = Settings(
            kafka_bootstrap_servers=info.kafka_bootstrap_servers,
            database_url=Secret(info.database_url),
            topic_prefix=f"bench{tag}.",
            app_id=f"bench-invalidation-{tag}",
            web_port=stack.free_port(),
            state_dir=state,
        )
        state.mkdir(parents=True, exist_ok=True)
        run(settings)
    finally:
        stack.stop(state)


if __name__ == "__main__":
    main()
