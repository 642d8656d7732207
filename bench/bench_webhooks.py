"""Resource changes -> webhook POSTs, end to end, on W worker processes.

N resource changes (issues), each with 2 subscribed sentry-app installations, are
published at full speed; W `streams worker` processes (one consumer group;
resource_changes + webhook_delivery agents) POST signed requests to a local aiohttp
receiver in another process and log every delivery in PostgreSQL. Reports changes/s
and POSTs/s end to end and the CPU of every worker per change, next to the bare
limit measured in the same run (signed POSTs from one asyncio loop straight to the
same receiver: no broker, no database), then publication-to-POST latency p50/p99 at
paced 50 and 1k changes/s. Then the user's alternative, in the same run and with the same
receiver once the workers are stopped: the same N changes through Celery + Redis
(prefork x2, bench/celery_webhooks.py), its changes/s, POSTs/s, CPU per change (every
Celery process and Redis) and latency at 50 changes/s, and streams/Celery next to the
10x goal. Without redis-server or celery (make bench-tools) that part is skipped.

Goals (issue 13): >= 2,900 changes/s and 5,800 POSTs/s; p50 <= 15 ms and p99 <= 50 ms
at 50 changes/s; p99 < 100 ms at 1k changes/s.

    BENCH_WEBHOOK_CHANGES=30000 BENCH_WEBHOOK_WORKERS=2 .venv/bin/python bench/bench_webhooks.py

BENCH_FETCH_WAIT (seconds) and BENCH_BATCH_WITHIN override the worker's fetch wait and
agent batching window; BENCH_CELERY_CHANGES runs fewer changes through Celery (default N);
BENCH_PROFILE=1 records each worker and Celery process with py-spy (bench/_profile.py).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from bench._machine import busy_seconds, cpu_seconds, rss_mb
from bench._profile import profiled
from bench._results import Results, machine
from bench._stack import ROOT, bench_stack, worker_env
from bench.celery_webhooks import CONCURRENCY, celery_stack, missing
from streams import topics
from streams.db.migrate import migrate
from streams.dev.stack import free_port, read_stack
from streams.publisher import Publisher
from streams.settings import Settings

N = int(os.environ.get("BENCH_WEBHOOK_CHANGES", "30000"))
# Celery + Redis did ~100 changes/s on a quiet 2-core machine: fewer changes shorten its
# run (the rates are steady from a few thousand on). At most N (the issues seeded).
CELERY_N = min(N, int(os.environ.get("BENCH_CELERY_CHANGES", str(N))))
WORKERS = int(os.environ.get("BENCH_WEBHOOK_WORKERS", "2"))
# Each org has the same 2 apps installed: 2 x ORGS targets (10, 100, 1,000: the scaling runs).
ORGS = int(os.environ.get("BENCH_WEBHOOK_ORGS", "10"))
# (changes/s, seconds, p50 goal ms, p99 goal ms): light load, then the goal's 1k/s.
PACED = ((50, 20, 15.0, 50.0), (1000, 10, None, 100.0))
TITLE = re.compile(rb'"title":"(\d+)"')
GOAL_RATIO = 10.0  # issue 13: 10x the same flow on Celery + Redis
# Sends one change (the value on resource-changes) for an organization.
Send = Callable[[dict[str, Any], int], None]


@dataclass
class Run:
    """One system's figures: throughput, CPU seconds per change by process, latency."""

    changes: float
    posts: float
    published: float
    cpu: dict[str, float]
    latency: dict[int, tuple[float, float, float]] = field(default_factory=dict)

    def cpu_us(self, *prefixes: str) -> float:
        """CPU per change (us) of the processes whose names start with ``prefixes``."""
        return sum(v for k, v in self.cpu.items() if k.startswith(prefixes)) * 1e6


def receiver_main(port: int) -> None:
    """A minimal aiohttp receiver: records (change number, arrival time) per POST."""
    from aiohttp import web

    seen: list[tuple[int, float]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        m = TITLE.search(body)
        seen.append((int(m.group(1)) if m else -1, time.time()))
        return web.Response(text="ok")

    async def stats(request: web.Request) -> web.Response:
        if request.query.get("full"):
            return web.json_response(seen)
        return web.json_response({"count": len(seen)})

    async def reset(request: web.Request) -> web.Response:
        seen.clear()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/stats/reset", reset)
    app.router.add_get("/stats", stats)
    app.router.add_post("/{tail:.*}", hook)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def http(url: str, method: str = "GET") -> Any:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def seed(settings: Settings, receiver: str) -> list[tuple[int, int, int]]:
    """Orgs with 2 installed apps each; returns (org, first issue id, last issue id)."""
    out = []
    per_org = N // ORGS
    with psycopg.connect(settings.database_url.get(), autocommit=True) as conn:
        apps = [
            conn.execute(
                "INSERT INTO sentry_app (slug, webhook_url, events, client_secret) "
                "VALUES (%s, %s, %s, 'secret') RETURNING id",
                (f"bench-{n}", f"{receiver}/app{n}", ["issue.created"]),
            ).fetchone()[0]  # type: ignore[index]
            for n in range(2)
        ]
        for o in range(ORGS):
            org = conn.execute(
                "INSERT INTO organization (slug) VALUES (%s) RETURNING id", (f"org{o}",)
            ).fetchone()[0]  # type: ignore[index]
            project = conn.execute(
                "INSERT INTO project (organization_id, slug) VALUES (%s, 'p') RETURNING id",
                (org,),
            ).fetchone()[0]  # type: ignore[index]
            for app in apps:
                conn.execute(
                    "INSERT INTO sentry_app_installation (sentry_app_id, organization_id) "
                    "VALUES (%s, %s)",
                    (app, org),
                )
            ids = conn.execute(
                "INSERT INTO issue_group (project_id, title) "
                "SELECT %s, '0' FROM generate_series(1, %s) RETURNING id",
                (project, per_org + sum(p[0] * p[1] for p in PACED) // ORGS + 1),
            ).fetchall()
            out.append((int(org), int(ids[0][0]), int(ids[-1][0])))
        # The title carries the issue id, so the receiver can tell changes apart.
        conn.execute("UPDATE issue_group SET title = id::text")
    return out


def change(org: int, issue: int) -> dict[str, Any]:
    return {
        "action": "created",
        "sender": "Group",
        "instance_id": issue,
        "organization_id": org,
        "project_id": None,
        "occurred_at": int(time.time() * 1000),
        "data": None,
        "actor_id": None,
    }


def start_worker(settings: Settings, n: int) -> tuple[subprocess.Popen[bytes], int]:
    """Worker ``n`` of the group and its web port; waits until it is ready."""
    changes: dict[str, Any] = {
        "agents": ("resource_changes", "webhook_delivery"),
        "ssrf_allow": ("127.0.0.1",),
        "web_port": free_port(),
    }
    # The embedded broker holds fetches for the whole wait (streams/faust_fetch.py).
    if os.environ.get("BENCH_FETCH_WAIT"):
        changes["consumer_fetch_max_wait"] = float(os.environ["BENCH_FETCH_WAIT"])
    env = worker_env(settings, **changes)
    if os.environ.get("BENCH_BATCH_WITHIN"):
        env["STREAMS_AGENT_BATCH_WITHIN"] = os.environ["BENCH_BATCH_WITHIN"]
    log = (settings.state_dir / f"worker-{n}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "worker", "--loglevel", "warning"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    health = f"http://127.0.0.1:{changes['web_port']}/health"

    def ready() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"worker exited; see {settings.state_dir / f'worker-{n}.log'}")
        try:
            return bool(http(health).get("status") == "ready")
        except OSError:
            return False

    wait(ready, 90, f"worker {n} ready")
    return proc, changes["web_port"]


def bare_posts(url: str, total: int) -> float:
    """The limit in the same run: signed POSTs/s from one asyncio loop (32 in flight) to
    the same receiver, bodies and signatures as the worker's, no broker, no database."""
    import asyncio

    import aiohttp

    from streams.webhooks import signing

    async def run() -> float:
        bodies = [
            json.dumps({"action": "created", "data": {"issue": {"title": str(i)}}}).encode()
            for i in range(total)
        ]
        work = iter(bodies)
        async with aiohttp.ClientSession() as session:

            async def lane() -> None:
                for body in work:
                    headers = signing.headers(
                        kind="sentry_app",
                        body=body,
                        secret="secret",
                        request_id="r",
                        resource="issue",
                    )
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()

            started = time.perf_counter()
            await asyncio.gather(*(lane() for _ in range(32)))
            return total / (time.perf_counter() - started)

    return asyncio.run(run())


def throughput(
    send: Send,
    flush: Callable[[], None],
    orgs: list[tuple[int, int, int]],
    stats: str,
    pids: dict[str, int],
    *,
    changes: int = N,
) -> Run:
    """``changes`` sent at full speed; changes/s and POSTs/s end to end, CPU per change."""
    per_org = changes // ORGS
    http(f"{stats}/reset", "POST")
    cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    busy = busy_seconds()
    started = time.perf_counter()
    with contextlib.ExitStack() as profiles:
        for name, pid in pids.items():
            if name.startswith(("worker", "celery")):
                profiles.enter_context(profiled(pid, f"webhooks-{name}"))
        for i in range(per_org):
            for org, first, _ in orgs:
                send(change(org, first + i), org)
        flush()
        published = time.perf_counter() - started
        total = per_org * ORGS
        wait(lambda: http(stats)["count"] >= 2 * total, 300, "every POST")
        elapsed = time.perf_counter() - started
    busy = busy_seconds() - busy
    print(f"published {total} changes in {published:.1f}s ({total / published:,.0f}/s)")
    print(
        f"end to end: {total / elapsed:,.0f} changes/s, "
        f"{2 * total / elapsed:,.0f} POSTs/s over {elapsed:.1f}s"
    )
    # Load-independent figures: CPU spent per change (the machine is shared).
    used = {name: (cpu_seconds(pid) - cpu[name]) / total for name, pid in pids.items()}
    print(
        "cpu per change: " + ", ".join(f"{name} {sec * 1e6:.0f} us" for name, sec in used.items())
    )
    # Bound by the machine when every core was busy: then only less CPU per change helps.
    print(
        f"machine: {busy / elapsed:.2f} of {os.cpu_count()} cores busy, "
        f"{busy / total * 1e6:.0f} us CPU per change in all (this process, PostgreSQL included)"
    )
    return Run(total / elapsed, 2 * total / elapsed, total / published, used)


def paced(
    send: Send,
    flush: Callable[[], None],
    orgs: list[tuple[int, int, int]],
    stats: str,
    *,
    rate: int,
    seconds: int,
    base: int,
    drain: float = 120,
) -> tuple[float, float, float]:
    """Publish ``rate`` changes/s for ``seconds``; issues from ``base`` on (per org), then
    wait up to ``drain`` seconds for the last POST. Returns publication-to-POST (p50,
    p99, max) in ms."""
    http(f"{stats}/reset", "POST")
    sent_at: dict[int, float] = {}
    tick = 0.01 if rate >= 100 else 1 / rate
    per_tick = max(1, int(rate * tick))
    start = time.perf_counter()
    n = 0
    total = rate * seconds
    while n < total:
        due = start + (n // per_tick) * tick
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        for _ in range(per_tick):
            org, first, _ = orgs[n % ORGS]
            issue = first + base + n // ORGS
            sent_at[issue] = time.time()
            send(change(org, issue), org)
            n += 1
    flush()
    wait(lambda: http(stats)["count"] >= 2 * total, drain, "every paced POST")
    seen = http(f"{stats}?full=1")
    pairs = [
        (sent_at[issue], (at - sent_at[issue]) * 1000) for issue, at in seen if issue in sent_at
    ]
    lat = sorted(ms for _, ms in pairs)
    if seconds >= 5:  # a backlog growing, or a steady wait: p50 per second of publication
        opened = min(t for t, _ in pairs)
        by: dict[int, list[float]] = defaultdict(list)
        for t, ms in pairs:
            by[int(t - opened)].append(ms)
        steps = ", ".join(f"{k}s: {statistics.median(v):.0f}" for k, v in sorted(by.items()))
        print(f"  at {rate}/s, p50 by second published (ms): {steps}")
    p50 = statistics.median(lat)
    p99 = lat[int(len(lat) * 0.99) - 1]
    return p50, p99, lat[-1]


def print_latency(
    rate: int, p50_goal: float | None, p99_goal: float | None, got: tuple[float, float, float]
) -> None:
    p50, p99, top = got
    goals = (f"p50 <= {p50_goal:.0f} ms, " if p50_goal else "") + (
        f"p99 <= {p99_goal:.0f} ms" if p99_goal else ""
    )
    print(
        f"latency at {rate}/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {top:.0f} ms"
        + (f" (goal {goals})" if goals else "")
    )


def run_streams(
    settings: Settings, orgs: list[tuple[int, int, int]], stats: str, receiver_pid: int
) -> tuple[Run, float, tuple[float, float]]:
    """Our workers: throughput, the bare limit, paced latency; stopped on return.
    Returns (figures, bare signed POSTs/s, worker RSS MB before and after)."""
    workers: list[subprocess.Popen[bytes]] = []
    pub = Publisher(settings)
    try:
        ports: list[int] = []
        for n in range(WORKERS):
            worker, web_port = start_worker(settings, n)
            workers.append(worker)
            ports.append(web_port)
        wait(lambda: all_assigned(ports), 90, "partitions shared")
        pids = {f"worker{n}": w.pid for n, w in enumerate(workers)}
        pids["receiver"] = receiver_pid
        broker = read_stack(settings.state_dir).broker_pid
        if broker:  # for a like-for-like figure next to Celery + Redis
            pids["broker"] = broker

        def send(value: dict[str, Any], org: int) -> None:
            pub.send("resource-changes", value, key=org)

        rss_before = sum(rss_mb(w.pid) for w in workers)
        ours = throughput(send, lambda: pub.flush(60), orgs, stats, pids)
        rss_after = sum(rss_mb(w.pid) for w in workers)
        targets = 2 * ORGS
        print(f"worker RSS {rss_before:.0f} -> {rss_after:.0f} MB ({targets} targets)")
        print(
            f"workers in all {ours.cpu_us('worker'):.0f} us CPU per change, "
            f"with the broker {ours.cpu_us('worker', 'broker'):.0f} us"
        )
        bare = bare_posts(f"{stats.rsplit('/', 1)[0]}/bare", min(N, 20000))
        http(f"{stats}/reset", "POST")
        print(f"limit, bare signed POSTs to the same receiver: {bare:,.0f} POSTs/s")
        base = N // ORGS
        for rate, seconds, p50_goal, p99_goal in PACED:
            got = paced(
                send, lambda: pub.flush(60), orgs, stats, rate=rate, seconds=seconds, base=base
            )
            ours.latency[rate] = got
            print_latency(rate, p50_goal, p99_goal, got)
            base += rate * seconds // ORGS
        return ours, bare, (rss_before, rss_after)
    finally:
        pub.close()
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()


def run_celery(
    settings: Settings, orgs: list[tuple[int, int, int]], stats: str, receiver_pid: int
) -> Run | None:
    """The same N changes through Celery + Redis, then its latency at the first paced
    rate (the same issues as ours); None when it cannot run here (said in one line)."""
    why = "BENCH_CELERY_CHANGES=0" if CELERY_N <= 0 else missing()
    if why is not None:
        print(f"Celery + Redis alternative skipped: {why}")
        return None
    print(f"Celery + Redis (prefork x{CONCURRENCY}), N={CELERY_N}, same receiver; {machine()}")
    try:
        return _celery_phases(settings, orgs, stats, receiver_pid)
    except (Exception, SystemExit) as exc:  # our figures are recorded all the same
        print(f"Celery + Redis alternative failed: {exc!r} (logs in {settings.state_dir})")
        return None


def _celery_phases(
    settings: Settings, orgs: list[tuple[int, int, int]], stats: str, receiver_pid: int
) -> Run:
    state = settings.state_dir / "celery"
    with celery_stack(settings.database_url.get(), state, free_port()) as stack:
        pids = {**stack.pids(), "receiver": receiver_pid}
        logged = delivery_log_rows(settings)
        run = throughput(
            lambda value, _org: stack.send(value),
            lambda: None,
            orgs,
            stats,
            pids,
            changes=CELERY_N,
        )
        logged = delivery_log_rows(settings) - logged
        print(
            f"celery in all {run.cpu_us('celery'):.0f} us CPU per change, "
            f"with redis {run.cpu_us('celery', 'redis'):.0f} us; "
            f"{logged} delivery log rows written (expected {2 * (CELERY_N // ORGS) * ORGS})"
        )
        rate, seconds, _, _ = PACED[0]
        got = paced(
            lambda value, _org: stack.send(value),
            lambda: None,
            orgs,
            stats,
            rate=rate,
            seconds=seconds,
            base=N // ORGS,
            # Celery may not keep up with the rate on a loaded machine: let it drain.
            drain=120 + 2 * rate * seconds / run.changes,
        )
        run.latency[rate] = got
        print_latency(rate, None, None, got)
    return run


def record(
    results: Results, ours: Run, bare: float, rss: tuple[float, float], celery: Run | None
) -> None:
    """Every figure with its goal and the alternative measured in the same run."""
    ratio = ours.changes / celery.changes if celery else 0.0
    vs = (
        f"Celery+Redis x{CONCURRENCY} {celery.changes:,.0f}/s = {ratio:.1f}x "
        f"(goal {GOAL_RATIO:.0f}x)"
        if celery
        else "Celery+Redis not run (make bench-tools)"
    )
    if celery:
        print(
            f"streams / Celery: {ratio:.2f}x changes/s (goal >= {GOAL_RATIO:.0f}x); CPU per "
            f"change {ours.cpu_us('worker', 'broker'):.0f} us (workers + broker) vs "
            f"{celery.cpu_us('celery', 'redis'):.0f} us (Celery + redis)"
        )
    results.add(
        "changes/s end to end",
        ours.changes,
        "changes/s",
        goal=">= 2,900",
        met=ours.changes >= 2900,
        alternative=f"{vs}; {WORKERS} worker(s), {ours.cpu_us('worker'):.0f} us CPU/change",
    )
    celery_posts = f"Celery+Redis {celery.posts:,.0f}/s; " if celery else ""
    results.add(
        "POSTs/s end to end",
        ours.posts,
        "POSTs/s",
        goal=">= 5,800",
        met=ours.posts >= 5800,
        alternative=f"{celery_posts}bare signed POSTs {bare:,.0f}/s = {ours.posts / bare:.2f}x",
    )
    if celery:
        results.add(
            "changes/s vs Celery+Redis (same run)",
            ratio,
            "x",
            goal=f">= {GOAL_RATIO:.0f}x",
            met=ratio >= GOAL_RATIO,
            alternative=f"Celery+Redis prefork x{CONCURRENCY}: {celery.changes:,.0f} changes/s, "
            f"{celery.posts:,.0f} POSTs/s",
        )
        # Load-independent: the phases run one after the other on a shared machine.
        cpu_celery, cpu_ours = celery.cpu_us("celery", "redis"), ours.cpu_us("worker", "broker")
        results.add(
            "CPU per change, Celery+Redis / ours",
            cpu_celery / cpu_ours,
            "x",
            alternative=f"Celery + redis {cpu_celery:,.0f} us, "
            f"our workers + broker {cpu_ours:,.0f} us",
        )
    results.add(
        "worker RSS after throughput",
        rss[1],
        "MB",
        alternative=f"{rss[0]:.0f} MB before, N={N}, {2 * ORGS} targets",
    )
    for rate, _, p50_goal, p99_goal in PACED:
        p50, p99, _ = ours.latency[rate]
        theirs = celery.latency.get(rate) if celery else None
        if p50_goal is not None:
            results.add(
                f"publish->POST p50 at {rate}/s",
                p50,
                "ms",
                goal=f"<= {p50_goal:.0f} ms",
                met=p50 <= p50_goal,
                alternative=f"Celery+Redis p50 {theirs[0]:.1f} ms" if theirs else "",
            )
        results.add(
            f"publish->POST p99 at {rate}/s",
            p99,
            "ms",
            goal=f"<= {p99_goal:.0f} ms",
            met=p99 <= p99_goal,
            alternative=f"Celery+Redis p99 {theirs[1]:.1f} ms" if theirs else "",
        )


def main() -> None:
    print(
        f"bench_webhooks: N={N} changes, {ORGS} orgs x 2 installations, {WORKERS} worker(s); "
        f"cores={os.cpu_count()}"
    )
    results = Results("webhooks")
    with bench_stack("webhooks") as settings:
        migrate(settings.database_url.get())
        topics.create_all(settings)
        port = free_port()
        receiver = mp.get_context("spawn").Process(target=receiver_main, args=(port,), daemon=True)
        receiver.start()
        stats = f"http://127.0.0.1:{port}/stats"
        try:
            wait(lambda: _up(stats), 30, "receiver")
            orgs = seed(settings, f"http://127.0.0.1:{port}")
            ours, bare, rss = run_streams(settings, orgs, stats, receiver.pid or 0)
            # Our workers are stopped: Celery gets the same cores, receiver and database.
            celery = run_celery(settings, orgs, stats, receiver.pid or 0)
            record(results, ours, bare, rss, celery)
        finally:
            receiver.terminate()
            receiver.join(5)
    # ~150 MB of PostgreSQL data per run: removed on success, kept (with worker.log) on failure.
    shutil.rmtree(settings.state_dir, ignore_errors=True)


def delivery_log_rows(settings: Settings) -> int:
    """Rows in webhook_delivery_log (both systems log every POST there)."""
    with psycopg.connect(settings.database_url.get()) as conn:
        row = conn.execute("SELECT count(*) FROM webhook_delivery_log").fetchone()
    return int(row[0]) if row else 0


def all_assigned(ports: list[int]) -> bool:
    """True once the group settled: every worker ready, with its own partitions."""
    seen: list[str] = []
    for port in ports:
        try:
            health = http(f"http://127.0.0.1:{port}/health")
        except OSError:
            return False
        if health.get("status") != "ready" or not health.get("assignment"):
            return False
        seen += health["assignment"]
    return len(seen) == len(set(seen))


def _up(stats: str) -> bool:
    try:
        http(stats)
    except OSError:
        return False
    return True


if __name__ == "__main__":
    main()
