"""Resource changes -> webhook POSTs, end to end, on one worker.

N resource changes (issues), each with 2 subscribed sentry-app installations, are
published at full speed; one `streams worker` (resource_changes + webhook_delivery
agents) POSTs to a local aiohttp receiver in another process. Reports changes/s and
POSTs/s end to end, then publication-to-POST latency p50/p99 at a paced 1k changes/s.

Goals: >= 1,400 changes/s and 2,800 POSTs/s; p99 < 250 ms at 1k changes/s.
"""

from __future__ import annotations

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

from bench._stack import ROOT, bench_stack, worker_env
from streams import topics
from streams.db.migrate import migrate
from streams.dev.stack import free_port
from streams.publisher import Publisher
from streams.settings import Settings

N = int(os.environ.get("BENCH_WEBHOOK_CHANGES", "30000"))
ORGS = 10  # each with the same 2 apps installed: 20 targets
PACED = ((1000, 15), (250, 10))  # (changes/s, seconds): the goal's rate, and a light load
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
                (project, per_org + sum(r * s for r, s in PACED) // ORGS + 1),
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


def start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = worker_env(
        settings,
        agents=("resource_changes", "webhook_delivery"),
        ssrf_allow=("127.0.0.1",),
        # The embedded broker holds fetches for the whole wait (streams/faust_fetch.py).
        consumer_fetch_max_wait=0.1,
    )
    log = (settings.state_dir / "worker.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "worker", "--loglevel", "warning"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"worker exited; see {settings.state_dir / 'worker.log'}")
        try:
            return bool(
                http(f"http://127.0.0.1:{settings.web_port}/health").get("status") == "ready"
            )
        except OSError:
            return False

    wait(ready, 90, "worker ready")
    return proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(
    pub: Publisher, orgs: list[tuple[int, int, int]], stats: str, pids: dict[str, int]
) -> None:
    per_org = N // ORGS
    http(f"{stats}/reset", "POST")
    cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    for i in range(per_org):
        for org, first, _ in orgs:
            pub.send("resource-changes", change(org, first + i), key=org)
    pub.flush(60)
    published = time.perf_counter() - started
    total = per_org * ORGS
    wait(lambda: http(stats)["count"] >= 2 * total, 170, "every POST")
    elapsed = time.perf_counter() - started
    print(f"published {total} changes in {published:.1f}s ({total / published:,.0f}/s)")
    print(
        f"end to end: {total / elapsed:,.0f} changes/s (goal >= 1,400), "
        f"{2 * total / elapsed:,.0f} POSTs/s (goal >= 2,800) over {elapsed:.1f}s"
    )
    # Load-independent figures: CPU spent per change (the machine is shared).
    used = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
    print(
        "cpu per change: "
        + ", ".join(
            f"{name} {sec / total * 1e6:.0f} us ({sec / elapsed:.0%} of a core)"
            for name, sec in used.items()
        )
    )


def paced(
    pub: Publisher,
    orgs: list[tuple[int, int, int]],
    stats: str,
    *,
    rate: int,
    seconds: int,
    base: int,
) -> None:
    """Publish ``rate`` changes/s for ``seconds``; issues from ``base`` on (per org)."""
    http(f"{stats}/reset", "POST")
    sent_at: dict[int, float] = {}
    tick = 0.01
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
    goal = " (goal p99 < 250 ms)" if rate == 1000 else ""
    print(
        f"latency at {rate}/s for {seconds}s ({len(lat)} POSTs): "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms{goal}, max {lat[-1]:.0f} ms"
    )


def main() -> None:
    print(f"bench_webhooks: N={N} changes, {ORGS} orgs x 2 installations; cores={os.cpu_count()}")
    with bench_stack("webhooks") as settings:
        migrate(settings.database_url.get())
        topics.create_all(settings)
        port = free_port()
        receiver = mp.get_context("spawn").Process(target=receiver_main, args=(port,), daemon=True)
        receiver.start()
        stats = f"http://127.0.0.1:{port}/stats"
        worker: subprocess.Popen[bytes] | None = None
        pub = Publisher(settings)
        try:
            wait(lambda: _up(stats), 30, "receiver")
            orgs = seed(settings, f"http://127.0.0.1:{port}")
            worker = start_worker(settings)
            pids = {"worker": worker.pid, "receiver": receiver.pid or 0}
            throughput(pub, orgs, stats, pids)
            base = N // ORGS
            for rate, seconds in PACED:
                paced(pub, orgs, stats, rate=rate, seconds=seconds, base=base)
                base += rate * seconds // ORGS
        finally:
            pub.close()
            if worker is not None:
                worker.terminate()
                try:
                    worker.wait(20)
                except subprocess.TimeoutExpired:
                    worker.kill()
            receiver.terminate()
            receiver.join(5)
    # ~150 MB of PostgreSQL data per run: removed on success, kept (with worker.log) on failure.
    shutil.rmtree(settings.state_dir, ignore_errors=True)


def _up(stats: str) -> bool:
    try:
        http(stats)
    except OSError:
        return False
    return True


if __name__ == "__main__":
    main()
