"""Weekly reports: fan-out over N organizations until every mail is at the SMTP server.

N active organizations (each one project, one member, issues seen this week) are
seeded; one ``streams worker`` (jobs agent) and one ``streams relay`` run; an aiosmtpd
server in another process counts mails. The weekly schedule's run (the fan-out job,
enqueued in a transaction) starts the clock; it stops when N mails have arrived.

The limits printed next to it, measured in the same run: the bare SMTP send rate of one
reused smtplib connection to the same server (no database, no broker), and the rate at
which the same worker runs a job that does nothing (the jobs agent runs one job at a
time, so a report job's own time adds to its per-job cost).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing as mp
import os
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from bench._stack import ROOT, bench_stack, worker_env
from streams import client, topics
from streams.db.migrate import migrate
from streams.dev.stack import free_port
from streams.jobs.declare import job
from streams.publisher import Publisher
from streams.reports.jobs import fire_weekly
from streams.schedules.crontab import Crontab
from streams.schedules.model import Run
from streams.settings import Secret, Settings
from tests.reports.seed import seed_organizations


@job("bench.noop", args={"n": "long"})
async def noop(ctx: Any, n: int) -> None:
    """The cheapest job: the jobs agent's own rate is the other limit of the fan-out."""


def sink_main(port: int, count: Any, ready: Any) -> None:
    """An aiosmtpd server counting accepted mails in a shared integer."""
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with count.get_lock():
                count.value += 1
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    while True:
        time.sleep(3600)


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def bare_smtp_rate(port: int, n: int) -> float:
    """Mails/s through one reused smtplib connection to the same server."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "bench@x", "u@example.com", "Weekly report"
    msg.set_content("project new resolved open events\n" * 12)
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as conn:
        for _ in range(n):
            conn.send_message(msg)
    return n / (time.perf_counter() - started)


def spawn(settings: Settings, argv: list[str], env: dict[str, str], name: str) -> Any:
    log = (settings.state_dir / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "streams", *argv],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def scheduled_jobs(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM scheduled_messages").fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--organizations", type=int, default=10_000)
    parser.add_argument("--bare", type=int, default=3_000, help="mails for the bare SMTP rate")
    parser.add_argument("--noop", type=int, default=3_000, help="no-op jobs for the job rate")
    args = parser.parse_args()
    n = args.organizations
    ctx = mp.get_context("spawn")
    count, ready = ctx.Value("q", 0), ctx.Event()
    port = free_port()
    sink = ctx.Process(target=sink_main, args=(port, count, ready), daemon=True)
    sink.start()
    ready.wait(30)
    procs: list[Any] = []
    try:
        with bench_stack("reports") as settings:
            dsn = settings.database_url.get()
            migrate(dsn)
            topics.create_all(settings)
            slot = Crontab.parse("0 9 * * 1").latest_at_or_before(dt.datetime.now(dt.UTC))
            assert slot is not None
            with psycopg.connect(dsn) as conn:
                seed_organizations(conn, active=n, inactive=0, week_end=slot)
            bare = bare_smtp_rate(port, args.bare)
            count.value = 0
            env = worker_env(
                settings,
                agents=("jobs",),
                job_modules=("bench.bench_reports",),
                consumer_fetch_max_wait=0.1,
                smtp_url=Secret(f"smtp://127.0.0.1:{port}"),
            )
            procs.append(spawn(settings, ["relay"], {**env, "STREAMS_METRICS_PORT": "0"}, "relay"))
            procs.append(spawn(settings, ["worker", "--loglevel", "warning"], env, "worker"))
            wait(lambda: _ready(settings), 120, "worker ready")
            publisher = Publisher(settings)
            client.set_publisher(publisher)
            noop_rate = asyncio.run(_noop_rate(settings, args.noop))
            started = time.perf_counter()
            asyncio.run(_fire(dsn, slot))
            wait(lambda: scheduled_jobs(dsn) >= n + 1, 600, "fan-out committed")
            fanned = time.perf_counter() - started
            wait(lambda: count.value >= n, 1800, f"{n} mails")
            total = time.perf_counter() - started
            publisher.close()
            breakdown = _breakdown(settings)
            print(
                f"weekly fan-out, {n:,} organizations: {total:.1f} s from the schedule's run "
                f"to the last mail received ({n / total:,.0f} mails/s); fan-out job "
                f"committed its {n:,} report jobs after {fanned:.1f} s"
            )
            print(
                f"limit (same run, same aiosmtpd): bare SMTP send {bare:,.0f} mails/s "
                f"-> {n / bare:.1f} s for {n:,} mails; end to end is "
                f"{(n / total) / bare:.0%} of it"
            )
            print(f"limit (same run, same worker): a no-op job {noop_rate:,.0f} jobs/s")
            print(breakdown)
            print(f"uptime load: {os.getloadavg()}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        sink.kill()


def _ready(settings: Settings) -> bool:
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/health", timeout=2) as r:
            return bool(json.loads(r.read()).get("status") == "ready")
    except OSError:
        return False


def _breakdown(settings: Settings) -> str:
    """Mean handler time per job and per SMTP send, from the worker's own metrics."""
    jobs_n = _metric(settings, "streams_agent_duration_seconds_count", agent="jobs")
    jobs_s = _metric(settings, "streams_agent_duration_seconds_sum", agent="jobs")
    mail_n = _metric(settings, "streams_mail_send_seconds_count", kind="weekly_report")
    mail_s = _metric(settings, "streams_mail_send_seconds_sum", kind="weekly_report")
    return (
        f"worker: {jobs_n:,.0f} job runs, mean handler {1000 * jobs_s / max(jobs_n, 1):.1f} ms"
        f" (of which SMTP {1000 * mail_s / max(mail_n, 1):.1f} ms per mail)"
    )


async def _noop_rate(settings: Settings, n: int) -> float:
    """No-op jobs per second through the worker (publish all, wait for the last run)."""
    started = time.perf_counter()
    await asyncio.gather(*(noop.adelay(n=i) for i in range(n)))
    while _metric(settings, "streams_jobs_runs_total", job="bench.noop") < n:
        await asyncio.sleep(0.05)
    return n / (time.perf_counter() - started)


def _metric(settings: Settings, name: str, **labels: str) -> float:
    import re
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/metrics") as r:
        text = r.read().decode()
    found = 0.0
    for m in re.finditer(rf"^{name}{{([^}}]*)}} (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            found += float(m.group(2))
    return found


async def _fire(dsn: str, slot: dt.datetime) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
        await fire_weekly(conn, Run("reports.weekly", slot, False, 0))


if __name__ == "__main__":
    main()
