"""Invalidation debounce under load: N workers, requests spread over many projects.

Offers ``BENCH_RATE`` requests/s (default 10,000) for ``BENCH_DURATION`` s (default 60)
to ``project-config-invalidations``, spread at random over ``BENCH_PROJECTS`` projects
(10 organizations, one key each), with a 5 s countdown, to ``BENCH_WORKERS`` (default 1)
``streams worker`` processes sharing the topic. Then it checks and prints:

- sustained: requests decided (scheduled + skipped) per second, first request to last
  decision; goal: all of the offered rate;
- windows: scheduled by the workers vs the distinct (scope, countdown window) pairs of
  the request times (computed here): must be equal, also under backlog;
- recomputes: configs published = scope recomputes counted by the workers, and
  recomputes + windows folded = windows;
- served: every request has a config of its key from a window due after it (the
  invariant that holds under backlog and skew): 0 unserved;
- latency: window due -> config acknowledged, p50 / p99;
- capacity: recomputes/s per worker on a burst of due windows, next to the bare cost
  of the same SQL and publish (``recompute`` + ``ConfigsOut.publish``) from here;
- with ``BENCH_MEMORY_SCOPES=N``: worker RSS before and after N distinct scopes pending.

Env: BENCH_RATE, BENCH_DURATION, BENCH_PROJECTS, BENCH_WORKERS, BENCH_LINGER_MS, BENCH_AGENTS,
BENCH_BURST (capacity burst size, default min(projects, 20000); 0 skips),
BENCH_MEMORY_SCOPES, BENCH_PROFILE=1 (py-spy profile of worker 1 while requests are
offered and until every window is published, ``bench/_profile.py``, with the samples
by component). Figures also go to ``.streams/bench/invalidation.json``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any, Final, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import psycopg
from confluent_kafka import Consumer, TopicPartition

from bench import _stack
from bench._profile import OUT as PROFILES
from bench._profile import profiled
from bench._results import Results
from bench.invalidation_checks import Seen, components, distinct_windows, percentiles, unserved
from streams import catalogue, kafka_config, topics, tracing
from streams.agents.project_configs import (
    H_TRIGGER,
    H_WINDOW,
    ConfigsOut,
    configs_publisher,
    window_of,
)
from streams.avro.codec import build_codec
from streams.avro.store import default_store
from streams.db.migrate import migrate
from streams.dev import stack
from streams.projectconfigs.debounce import DueWork
from streams.projectconfigs.recompute import recompute
from streams.projectconfigs.scopes import Scope, ScopeKind, request_value
from streams.publisher import Publisher
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
RATE = int(os.environ.get("BENCH_RATE", "10000"))
DURATION = float(os.environ.get("BENCH_DURATION", "60"))
PROJECTS = int(os.environ.get("BENCH_PROJECTS", "1000"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))
BURST = int(os.environ.get("BENCH_BURST", str(min(PROJECTS, 20_000))))
MEMORY_SCOPES = int(os.environ.get("BENCH_MEMORY_SCOPES", "0"))
# The worker's agents (STREAMS_AGENTS names); default all. `invalidation,project_configs`
# leaves out the other agents' background work (backfill, schedules, ...).
AGENTS = tuple(a for a in os.environ.get("BENCH_AGENTS", "").split(",") if a)
# The offering producer's batching: the worker's consumer pays per fetched batch.
LINGER_MS = int(os.environ.get("BENCH_LINGER_MS", "20"))
ORGS = 10
COUNTDOWN = 5.0
TICK = 0.01
BATCH = 2_000  # the worker's MAX_BATCH: the bare run recomputes in the same batches


def seed(dsn: str, tag: str) -> list[tuple[int, int, str]]:
    """(organization id, project id, public key) of PROJECTS projects (set-based inserts)."""
    out: list[tuple[int, int, str]] = []
    per_org = max(1, PROJECTS // ORGS)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for o in range(ORGS):
            org = conn.execute(
                "INSERT INTO organization (slug) VALUES (%s) RETURNING id", (f"bench-{tag}-{o}",)
            ).fetchone()
            assert org is not None
            rows = conn.execute(
                "WITH p AS (INSERT INTO project (organization_id, slug)"
                " SELECT %s, 'p' || g FROM generate_series(1, %s) g RETURNING id)"
                " INSERT INTO project_key (project_id, public_key)"
                " SELECT id, md5(random()::text || id) FROM p RETURNING project_id, public_key",
                (org[0], per_org),
            ).fetchall()
            out += [(org[0], r[0], r[1]) for r in rows]
        # Statistics, as any installation's tables have them (autovacuum): without them
        # PostgreSQL joined the keys by a sequential scan of project_key, 14-37 ms of its
        # CPU per recompute batch at 100k projects instead of 0.7 ms, and the benchmark
        # measured a database competing with the worker for the two cores.
        conn.execute("ANALYZE organization, project, project_key")
    return out


class Worker:
    """One ``streams worker`` process of the benchmark, with its own web port."""

    def __init__(self, settings: Settings, n: int) -> None:
        self.settings = settings.with_(web_port=stack.free_port()) if n else settings
        wait = float(os.environ.get("STREAMS_CONSUMER_FETCH_MAX_WAIT") or 0.1)
        changes: dict[str, Any] = {"agents": AGENTS} if AGENTS else {}
        env = _stack.worker_env(
            self.settings,
            invalidation_countdown=COUNTDOWN,
            consumer_fetch_max_wait=wait,
            **changes,
        )
        self.log = open(settings.state_dir / f"bench-worker-{n}.log", "wb")  # noqa: SIM115
        cmd = [sys.executable, "-m", "streams", "worker", "--loglevel", "warning"]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.ps = psutil.Process(self.proc.pid)

    def http(self, path: str) -> str:
        url = f"http://127.0.0.1:{self.settings.web_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())

    def metric(self, name: str, labels: str = "") -> float:
        """Sum of the samples of ``name`` (a regex) whose labels contain ``labels``."""
        total = 0.0
        for line in self.http("/metrics").splitlines():
            m = re.match(rf"^(?:{name})(?:\{{(?P<l>[^}}]*)\}})? (?P<v>\S+)$", line)
            if m and labels in (m.group("l") or ""):
                total += float(m.group("v"))
        return total

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise SystemExit(f"worker exited during start-up (log {self.log.name})")
        try:
            return bool(json.loads(self.http("/health")).get("status") == "ready")
        except OSError:
            return False

    def cpu(self) -> float:
        return float(sum(self.ps.cpu_times()[:2]))

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss / 1e6)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def total(workers: list[Worker], name: str, labels: str = "") -> float:
    return sum(w.metric(name, labels) for w in workers)


def wait_until(what: str, cond: Any, timeout: float) -> None:
    # Each check reads the workers' /metrics page: every 0.1 s for the first 3 s (a
    # worker that keeps up is done within them, and "sustained" is measured to within
    # 0.1 s, not 0.5 s: 1.7% of a 30 s run), then every 0.5 s, so the scraping's CPU
    # (which grows with how long a backlog takes) stays small.
    start = time.monotonic()
    deadline = start + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1 if time.monotonic() - start < 3.0 else 0.5)


def producer(settings: Settings, linger_ms: int) -> Publisher:
    overrides: dict[str, Any] = {"linger.ms": linger_ms}
    return Publisher(settings, **overrides)


class ConfigReader(threading.Thread):
    """Records every project-configs message of the run."""

    def __init__(self, settings: Settings, trigger: str) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.trigger = trigger.encode()
        self.seen: list[Seen] = []
        self.stop = threading.Event()

    def run(self) -> None:
        spec = catalogue.spec("project-configs")
        topic = spec.full_name(self.settings.topic_prefix)
        consumer = Consumer(kafka_config.consumer(self.settings, f"bench-{uuid.uuid4().hex}"))
        consumer.assign([TopicPartition(topic, p, 0) for p in range(spec.partitions)])
        while not self.stop.is_set():
            for m in consumer.consume(1000, timeout=0.1):
                h = dict(m.headers() or [])
                if m.error() is None and h.get(H_TRIGGER) == self.trigger:
                    window = h.get(H_WINDOW)
                    _, requested_ms, due_ms = window_of(
                        window if isinstance(window, bytes) else b"@0"
                    )
                    self.seen.append(
                        Seen((m.key() or b"").decode(), requested_ms, due_ms, m.timestamp()[1])
                    )
        consumer.close()


class Offering:
    """Requests made as cheaply as the worker reads them, so that the offering process
    keeps up at 20,000 req/s on a shared core: a ``Scope`` and key per project made
    once, each value encoded without the schema walk (the first one is checked), and
    produced with the publisher's metadata headers built once (a message id each)."""

    SUBJECT: Final = "project-config-invalidations"

    def __init__(self, publisher: Publisher, projects: list[tuple[int, int, str]]) -> None:
        self.publisher = publisher
        self.producer = publisher.producer
        self.topic = catalogue.spec(self.SUBJECT).full_name(publisher.settings.topic_prefix)
        self.scopes = [Scope(ScopeKind.PROJECT, org, project) for org, project, _ in projects]
        self.keys = [scope.message_key.encode() for scope in self.scopes]
        meta = tracing.metadata_headers(publisher.settings.producer_name)
        self.stem = dict(meta)[tracing.H_MESSAGE_ID][:24]
        self.meta = [(k, v) for k, v in meta if k != tracing.H_MESSAGE_ID]
        self.sent = 0
        value = request_value(self.scopes[0], trigger="bench", countdown=COUNTDOWN)
        publisher.codec.encode(self.SUBJECT, value)  # raises if the shape does not fit

    def send(self, i: int, requested_at: dt.datetime) -> None:
        value = request_value(
            self.scopes[i], trigger="bench", countdown=COUNTDOWN, requested_at=requested_at
        )
        data = self.publisher.codec.encode(self.SUBJECT, value, checked=True)
        self.sent += 1
        headers = [(tracing.H_MESSAGE_ID, self.stem + b"%08x" % self.sent), *self.meta]
        while True:
            try:
                self.producer.produce(self.topic, value=data, key=self.keys[i], headers=headers)
                return
            except BufferError:
                self.producer.poll(0.005)


def offer(
    settings: Settings, projects: list[tuple[int, int, str]]
) -> tuple[dict[str, list[int]], int, float]:
    """Send RATE req/s for DURATION s; returns request times (ms) per key, count, seconds."""
    publisher = producer(settings, LINGER_MS)
    offering = Offering(publisher, projects)
    rng = random.Random(1)
    times: dict[str, list[int]] = defaultdict(list)
    per_tick = max(1, round(RATE * TICK))
    sent = 0
    started = time.monotonic()
    next_tick = started
    while time.monotonic() - started < DURATION:
        ms = round(time.time() * 1000)
        # The wire carries milliseconds: the reference below uses the same times.
        now = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        for _ in range(per_tick):
            i = rng.randrange(len(projects))
            offering.send(i, now)
            times[projects[i][2]].append(ms)
        sent += per_tick
        next_tick += TICK
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.monotonic() - started
    publisher.close()
    return times, sent, elapsed


def settle(workers: list[Worker], reader: ConfigReader, timeout: float) -> dict[str, float]:
    """Wait until every scheduled window is published or folded; the workers' counters."""

    def counters() -> dict[str, float]:
        names = ("scheduled", "recomputes", "windows_folded", "pending")
        out = {n: total(workers, f"streams_invalidation_{n}(_total)?") for n in names}
        out["late"] = total(workers, "streams_invalidation_scheduled_total", '_late"')
        return out

    def done() -> bool:
        c = counters()
        return c["recomputes"] + c["windows_folded"] >= c["scheduled"] and len(reader.seen) >= int(
            c["recomputes"]
        )

    wait_until("every window published", done, timeout)
    time.sleep(2.0)  # anything extra would show up now
    return counters()


RESULTS: Results | None = None


def record(figure: str, value: float, unit: str, **kw: Any) -> None:
    if RESULTS is not None:
        RESULTS.add(figure, value, unit, **kw)


def main_run(workers: list[Worker], settings: Settings, projects: list[Any]) -> bool:
    reader = ConfigReader(settings, "bench")
    reader.start()
    print(
        f"offering {RATE} req/s for {DURATION:.0f} s across {len(projects)} projects,"
        f" {len(workers)} worker(s); load {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores",
        flush=True,
    )
    cpu0, t0 = sum(w.cpu() for w in workers), time.monotonic()
    # The profile covers the offer and the drain of the backlog (all recomputes).
    with profiled(workers[0].proc.pid, "invalidation-worker", rate=50):
        times, sent, elapsed = offer(settings, projects)
        wait_until(
            "every request decided",
            lambda: total(workers, "streams_invalidation_(scheduled|skipped)_total") >= sent,
            elapsed + 600,
        )
        drained = time.monotonic() - t0
        cpu = sum(w.cpu() for w in workers) - cpu0
        c = settle(workers, reader, 600)
    profile = PROFILES / "invalidation-worker.txt"
    if os.environ.get("BENCH_PROFILE") and profile.exists():
        print("worker samples by component:")
        for name, share in components(profile.read_text().splitlines()):
            print(f"  {share:6.1%}  {name}")
    reader.stop.set()
    expected = sum(distinct_windows(ts, int(COUNTDOWN * 1000)) for ts in times.values())
    seen = list(reader.seen)
    missing = unserved(times, seen)
    p50, p99 = percentiles([(s.acked_ms - s.due_ms) / 1000 for s in seen])
    windows, recomputes = int(c["scheduled"]), int(c["recomputes"])
    folded, late = int(c["windows_folded"]), int(c["late"])
    print(f"offered     {sent / elapsed:10.0f} req/s  ({sent} requests in {elapsed:.1f} s)")
    print(f"sustained   {sent / drained:10.0f} req/s  (goal: all of the offered {RATE})")
    print(f"worker CPU  {cpu / sent * 1e6:10.1f} us/request  ({cpu:.1f} s, all workers)")
    print(
        f"windows     {windows:10d}        - {late} late = {windows - late}"
        f" (must equal {expected} distinct windows)"
    )
    print(f"recomputes  {recomputes:10d}        + {folded} folded = {recomputes + folded}")
    print(f"published   {len(seen):10d}        (must equal the recomputes)")
    print(f"unserved    {missing:10d}        (requests with no config due after them)")
    print(f"latency due -> acked  p50 {p50:6.3f} s  p99 {p99:6.3f} s")
    print(f"  by due time: {latency_timeline(seen)}")
    print(f"load avg    {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ok = windows - late == expected and recomputes + folded == windows
    ok = ok and len(seen) == recomputes
    ok = ok and missing == 0
    size = f"{len(projects)} projects, {len(workers)} worker(s)"
    record(
        f"sustained req/s ({size})",
        sent / drained,
        "req/s",
        goal=f">= {RATE}",
        met=sent / drained >= 0.98 * RATE,
        alternative=f"offered {sent / elapsed:.0f}",
    )
    record(f"worker CPU per request ({size})", cpu / sent * 1e6, "us")
    record(
        f"windows - late = distinct windows ({size})",
        windows - late,
        "windows",
        goal=f"= {expected}",
        met=windows - late == expected and missing == 0,
        alternative=f"{late} late, {folded} folded, {missing} unserved",
    )
    record(f"due -> acked p99 ({size})", p99, "s", goal="< 1 s", met=p99 < 1.0)
    print(
        f"| {len(projects):,} | {WORKERS} | {sent / drained:,.0f} | {cpu / sent * 1e6:.0f} us"
        f" | {windows - late:,} = {expected:,} ({late} late, {folded} folded) | {missing}"
        f" | {p50:.2f} s / {p99:.2f} s"
        f" | {os.getloadavg()[0]:.1f} |"
    )
    return ok


def latency_timeline(seen: list[Any], step: float = 5.0) -> str:
    """p99 of due -> acked per ``step`` seconds of due time: where a backlog began."""
    if not seen:
        return "-"
    first = min(s.due_ms for s in seen)
    buckets: dict[int, list[float]] = {}
    for s in seen:
        buckets.setdefault(int((s.due_ms - first) / 1000 / step), []).append(
            (s.acked_ms - s.due_ms) / 1000
        )
    return ", ".join(
        f"{b * step:.0f}s: {percentiles(lat)[1]:.2f}" for b, lat in sorted(buckets.items())
    )


def burst(settings: Settings, projects: list[Any], workers: list[Worker]) -> None:
    """BURST windows all due at once: the workers' drain rate vs the bare SQL + publish."""
    chosen = projects[:BURST]
    reader = ConfigReader(settings, "burst")
    reader.start()
    publisher = producer(settings, LINGER_MS)
    # One request time and countdown for all: every window is due at the same moment,
    # however long sending them takes (they are decided before it, with slack).
    at = dt.datetime.now(dt.UTC)
    countdown = 5.0 + BURST / 2_000
    due = at.timestamp() + countdown
    decided0 = total(workers, "streams_invalidation_(scheduled|skipped)_total")
    for org, project, _ in chosen:
        scope = Scope(ScopeKind.PROJECT, organization_id=org, project_id=project)
        value = request_value(scope, trigger="burst", countdown=countdown, requested_at=at)
        publisher.send("project-config-invalidations", value, key=scope.message_key)
    publisher.close()
    wait_until(
        "burst decided",
        lambda: (
            total(workers, "streams_invalidation_(scheduled|skipped)_total")
            >= decided0 + len(chosen)
        ),
        600,
    )
    decided = time.time()
    wait_until("burst published", lambda: len(reader.seen) >= len(chosen), 600)
    reader.stop.set()
    # The drain alone: from the due time, or from when the last request was decided if
    # deciding took longer (a slow or loaded worker); recomputes acked before that point
    # overlapped the deciding and are left out.
    start = max(due, decided)
    acked = [s.acked_ms / 1000 for s in reader.seen]
    drained = sum(1 for t in acked if t > start)
    rate = drained / max(1e-3, max(acked) - start)
    if decided > due:
        print(f"capacity    requests decided {decided - due:.1f} s after the due time: rate of")
        print(f"            the {drained} recomputes acknowledged after the last decision")
    bare = asyncio.run(bare_rate(settings, chosen))
    record(
        f"recomputes/s per worker ({len(chosen)} due at once)",
        rate / len(workers),
        "recomputes/s",
        alternative=f"bare recompute SQL + publish {bare:.0f}/s",
    )
    print(
        f"capacity    {rate / len(workers):10.0f} recomputes/s per worker ({len(chosen)} due at"
        f" once, {len(workers)} worker(s)); bare SQL + publish {bare:.0f}/s"
        f" = {rate / len(workers) / bare:.2f}x"
    )


async def bare_rate(settings: Settings, chosen: list[Any]) -> float:
    """The same recompute SQL and publish, in batches of BATCH, from this process."""
    codec = build_codec(default_store(), settings.schema_registry_url)
    out = ConfigsOut(cast(Any, None), configs_publisher(settings, codec))
    now = time.time()
    works = [
        DueWork("project", org, project, None, "bare", now, now, 0) for org, project, _ in chosen
    ]
    conn = await psycopg.AsyncConnection.connect(settings.database_url.get(), autocommit=True)
    await out.publish(await recompute(conn, works[:10]))  # warm: connection, topic metadata
    started = time.monotonic()
    for i in range(0, len(works), BATCH):
        await out.publish(await recompute(conn, works[i : i + BATCH]))
    elapsed = time.monotonic() - started
    await conn.close()
    out.publisher.close()
    return len(works) / elapsed


def memory(settings: Settings, workers: list[Worker]) -> None:
    """RSS of the worker(s) with MEMORY_SCOPES distinct project scopes pending (1 h countdown)."""
    before = sum(w.rss_mb() for w in workers)
    decided0 = total(workers, "streams_invalidation_(scheduled|skipped)_total")
    publisher = producer(settings, 50)
    at = dt.datetime.now(dt.UTC)
    for i in range(MEMORY_SCOPES):
        scope = Scope(ScopeKind.PROJECT, organization_id=10_000_000 + i % 97, project_id=10**9 + i)
        value = request_value(scope, trigger="memory", countdown=3600.0, requested_at=at)
        publisher.send("project-config-invalidations", value, key=scope.message_key)
    publisher.close()
    target = decided0 + MEMORY_SCOPES
    wait_until(
        "memory scopes decided",
        lambda: total(workers, "streams_invalidation_(scheduled|skipped)_total") >= target,
        1800,
    )
    after = sum(w.rss_mb() for w in workers)
    record(
        f"worker RSS with {MEMORY_SCOPES} scopes pending",
        after,
        "MB",
        alternative=f"{before:.0f} MB before",
    )
    print(
        f"memory      RSS {before:.0f} MB -> {after:.0f} MB with {MEMORY_SCOPES:,} more scopes"
        f" pending ({(after - before) * 1e6 / MEMORY_SCOPES:.0f} B per scope)"
    )


def run(settings: Settings) -> None:
    migrate(settings.database_url.get())
    topics.create_all(settings)
    projects = seed(settings.database_url.get(), settings.app_id)
    workers = [Worker(settings, n) for n in range(WORKERS)]
    try:
        for w in workers:
            wait_until("workers ready", w.ready, 120)
        print(f"workers {[w.proc.pid for w in workers]} ready", flush=True)
        ok = main_run(workers, settings, projects) if DURATION > 0 else True
        if BURST:
            burst(settings, projects, workers)
        if MEMORY_SCOPES:
            memory(settings, workers)
    finally:
        for w in workers:
            w.stop()
    if not ok:
        raise SystemExit("FAILED: windows, recomputes or served configs off (see above)")


def main() -> None:
    global RESULTS
    RESULTS = Results("invalidation")
    with _stack.bench_stack("invalidation") as settings:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        run(settings)


if __name__ == "__main__":
    main()
