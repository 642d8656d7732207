"""Resource changes -> webhook POSTs, end to end, on W worker processes.

N resource changes (issues), each with 2 subscribed sentry-app installations, are
published at full speed; W `streams worker` processes (one consumer group;
resource_changes + webhook_delivery agents) POST signed requests to a local aiohttp
receiver in another process and log every delivery in PostgreSQL. Reports changes/s
and POSTs/s end to end and the CPU of every worker per change, next to the bare
limit measured in the same run (signed POSTs from one asyncio loop straight to the
same receiver: no broker, no database), then publication-to-POST latency p50/p99 at
paced 50 and 1k changes/s.

Goals (issue 13): >= 2,900 changes/s and 5,800 POSTs/s; p50 <= 15 ms and p99 <= 50 ms
at 50 changes/s; p99 < 100 ms at 1k changes/s.

    BENCH_WEBHOOK_CHANGES=30000 BENCH_WEBHOOK_WORKERS=2 .venv/bin/python bench/bench_webhooks.py

BENCH_FETCH_WAIT (seconds) and BENCH_BATCH_WITHIN override the worker's fetch wait and
agent batching window; BENCH_PROFILE=1 records each worker with py-spy (bench/_profile.py).
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from bench._profile import profiled
from bench._results import Results
from bench._stack import ROOT, bench_stack, worker_env
from streams import topics
from streams.db.migrate import migrate
from streams.dev.stack import free_port
from streams.publisher import Publisher
from streams.settings import Settings

N = int(os.environ.get("BENCH_WEBHOOK_CHANGES", "30000"))
WORKERS = int(os.environ.get("BENCH_WEBHOOK_WORKERS", "2"))
ORGS = 10  # each with the same 2 apps installed: 20 targets
# (changes/s, seconds, p50 goal ms, p99 goal ms): light load, then the goal's 1k/s.
PACED = ((50, 20, 15.0, 50.0), (1000, 10, None, 100.0))
TITLE = re.compile(rb'"title":"(\d+)"')


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


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
    pub: Publisher, orgs: list[tuple[int, int, int]], stats: str, pids: dict[str, int]
) -> tuple[float, float, dict[str, float]]:
    """(changes/s, POSTs/s, CPU seconds per change of each process)."""
    per_org = N // ORGS
    http(f"{stats}/reset", "POST")
    cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    with contextlib.ExitStack() as profiles:
        for name, pid in pids.items():
            if name.startswith("worker"):
                profiles.enter_context(profiled(pid, f"webhooks-{name}"))
        for i in range(per_org):
            for org, first, _ in orgs:
                pub.send("resource-changes", change(org, first + i), key=org)
        pub.flush(60)
        published = time.perf_counter() - started
        total = per_org * ORGS
        wait(lambda: http(stats)["count"] >= 2 * total, 300, "every POST")
        elapsed = time.perf_counter() - started
    print(f"published {total} changes in {published:.1f}s ({total / published:,.0f}/s)")
    print(
        f"end to end: {total / elapsed:,.0f} changes/s (goal >= 2,900), "
        f"{2 * total / elapsed:,.0f} POSTs/s (goal >= 5,800) over {elapsed:.1f}s"
    )
    # Load-independent figures: CPU spent per change (the machine is shared).
    used = {name: (cpu_seconds(pid) - cpu[name]) / total for name, pid in pids.items()}
    print(
        "cpu per change: "
        + ", ".join(f"{name} {sec * 1e6:.0f} us" for name, sec in used.items())
        + f"; workers in all {sum(v for k, v in used.items() if k != 'receiver') * 1e6:.0f} us"
    )
    return total / elapsed, 2 * total / elapsed, used


def paced(
    pub: Publisher,
    orgs: list[tuple[int, int, int]],
    stats: str,
    *,
    rate: int,
    seconds: int,
    base: int,
) -> tuple[float, float, float]:
    """Publish ``rate`` changes/s for ``seconds``; issues from ``base`` on (per org).
    Returns publication-to-POST (p50, p99, max) in ms."""
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
            pub.send("resource-changes", change(org, issue), key=org)
            n += 1
    pub.flush(60)
    wait(lambda: http(stats)["count"] >= 2 * total, 120, "every paced POST")
    seen = http(f"{stats}?full=1")
    lat = sorted((at - sent_at[issue]) * 1000 for issue, at in seen if issue in sent_at)
    p50 = statistics.median(lat)
    p99 = lat[int(len(lat) * 0.99) - 1]
    return p50, p99, lat[-1]


def report_latency(
    results: Results,
    rate: int,
    p50_goal: float | None,
    p99_goal: float,
    got: tuple[float, float, float],
) -> None:
    p50, p99, top = got
    goals = (f"p50 <= {p50_goal:.0f} ms, " if p50_goal else "") + f"p99 <= {p99_goal:.0f} ms"
    print(
        f"latency at {rate}/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {top:.0f} ms (goal {goals})"
    )
    if p50_goal is not None:
        results.add(
            f"publish->POST p50 at {rate}/s",
            p50,
            "ms",
            goal=f"<= {p50_goal:.0f} ms",
            met=p50 <= p50_goal,
            alternative="Celery+Redis p50 7 ms (issue 13)",
        )
    results.add(
        f"publish->POST p99 at {rate}/s",
        p99,
        "ms",
        goal=f"<= {p99_goal:.0f} ms",
        met=p99 <= p99_goal,
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
        workers: list[subprocess.Popen[bytes]] = []
        pub = Publisher(settings)
        try:
            wait(lambda: _up(stats), 30, "receiver")
            orgs = seed(settings, f"http://127.0.0.1:{port}")
            ports: list[int] = []
            for n in range(WORKERS):
                worker, web_port = start_worker(settings, n)
                workers.append(worker)
                ports.append(web_port)
            wait(lambda: all_assigned(ports), 90, "partitions shared")
            pids = {f"worker{n}": w.pid for n, w in enumerate(workers)}
            pids["receiver"] = receiver.pid or 0
            rss_before = sum(rss_mb(w.pid) for w in workers)
            changes, posts, cpu = throughput(pub, orgs, stats, pids)
            rss_after = sum(rss_mb(w.pid) for w in workers)
            bare = bare_posts(f"http://127.0.0.1:{port}/bare", min(N, 20000))
            http(f"{stats}/reset", "POST")
            print(f"limit, bare signed POSTs to the same receiver: {bare:,.0f} POSTs/s")
            worker_us = sum(v for k, v in cpu.items() if k != "receiver") * 1e6
            results.add(
                "changes/s end to end",
                changes,
                "changes/s",
                goal=">= 2,900",
                met=changes >= 2900,
                alternative=f"{WORKERS} worker(s), {worker_us:.0f} us worker CPU/change",
            )
            results.add(
                "POSTs/s end to end",
                posts,
                "POSTs/s",
                goal=">= 5,800",
                met=posts >= 5800,
                alternative=f"bare signed POSTs {bare:,.0f}/s = {posts / bare:.2f}x",
            )
            results.add(
                "worker RSS after throughput",
                rss_after,
                "MB",
                alternative=f"{rss_before:.0f} MB before, N={N}",
            )
            base = N // ORGS
            for rate, seconds, p50_goal, p99_goal in PACED:
                got = paced(pub, orgs, stats, rate=rate, seconds=seconds, base=base)
                report_latency(results, rate, p50_goal, p99_goal, got)
                base += rate * seconds // ORGS
        finally:
            pub.close()
            for worker in workers:
                worker.terminate()
            for worker in workers:
                try:
                    worker.wait(20)
                except subprocess.TimeoutExpired:
                    worker.kill()
            receiver.terminate()
            receiver.join(5)
    # ~150 MB of PostgreSQL data per run: removed on success, kept (with worker.log) on failure.
    shutil.rmtree(settings.state_dir, ignore_errors=True)


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
