"""Buffered increments at three sizes 10x apart: increments/s from incr() to exact
totals, next to the naive one-UPDATE-per-increment loop on the same PostgreSQL in
the same run, and the worker's RSS at each size.

    .venv/bin/python bench/bench_buffers.py [--sizes 50,500,5000] [--increments 200000]
        [--interval 1] [--coalesce SECONDS]

Starts its own broker + PostgreSQL (unless KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL are
set); for each size (rows), a scratch database and a fresh ``streams worker`` running
only the buffer agent. Figures per size:
  * naive: one autocommitted UPDATE per increment (what a task per increment did);
  * buffered: increments/s from the first incr() to every counter exact in
    PostgreSQL (so it includes the last flush window), the row statements the
    flushes executed (limit: <= rows x windows), database time per 100k, and the
    worker's RSS (now and peak). incr() sums per row in the client by default
    (streams/incr_coalesce.py); --coalesce sets that window (0 = off).
Goals (issue 13): >= 100,000 increments/s end to end and >= 5x the naive loop;
throughput and RSS within 20% per 10x rows.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench._machine import cpu_seconds, rss_mb
from bench._profile import profiled
from bench._results import Results, machine
from bench._stack import worker_env
from streams import client, topics
from streams.db.migrate import migrate
from streams.dev import stack
from streams.publisher import Publisher
from streams.settings import Secret, Settings

ROOT = Path(__file__).resolve().parents[1]


def scratch_database(admin_dsn: str) -> str:
    name = f"bench_buffers_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    info = psycopg.conninfo.conninfo_to_dict(admin_dsn)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo("", **info)


def drop_database(admin_dsn: str, dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())


def seed(dsn: str, rows: int) -> list[int]:
    with psycopg.connect(dsn) as conn:
        org = conn.execute(
            "INSERT INTO organization (slug) VALUES ('bench') RETURNING id"
        ).fetchone()
        assert org is not None
        project = conn.execute(
            "INSERT INTO project (organization_id, slug) VALUES (%s, 'bench') RETURNING id",
            (org[0],),
        ).fetchone()
        assert project is not None
        ids = conn.execute(
            "INSERT INTO issue_group (project_id) SELECT %s FROM generate_series(1, %s) "
            "RETURNING id",
            (project[0], rows),
        ).fetchall()
    return [int(r[0]) for r in ids]


def total_seen(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT coalesce(sum(times_seen), 0) FROM issue_group").fetchone()
    return int(row[0]) if row else 0


def naive(dsn: str, ids: list[int], n: int) -> float:
    """Increments/s of one autocommitted UPDATE per increment (its connection is busy the
    whole time, so 1/rate is also its database time per increment)."""
    rng = random.Random(1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        for _ in range(n):
            conn.execute(
                "UPDATE issue_group SET times_seen = times_seen + %s, last_seen = now() "
                "WHERE id = %s",
                (1, rng.choice(ids)),
            )
        elapsed = time.perf_counter() - started
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE issue_group SET times_seen = 0")
    return n / elapsed


def start_worker(settings: Settings, interval: float, log: Path) -> subprocess.Popen[bytes]:
    env = worker_env(settings, agents=("buffers",), buffer_flush_interval=interval)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker", "--loglevel", "warning"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"worker exited; see {log}")
        try:
            if json.loads(get(settings, "/health")).get("status") == "ready":
                return proc
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"worker not ready after 90 s; see {log}")


def get(settings: Settings, path: str) -> str:
    url = f"http://127.0.0.1:{settings.web_port}{path}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
    return body.decode()


def metric(settings: Settings, name: str, labels: str = "") -> float:
    pattern = re.compile(rf"^{name}(\{{[^}}]*{labels}[^}}]*\}})? (\S+)$", re.M)
    return sum(float(m.group(2)) for m in pattern.finditer(get(settings, "/metrics")))


def buffered(
    settings: Settings, ids: list[int], n: int, dsn: str, *, coalesce: float | None, pid: int
) -> tuple[float, float, float, float, float]:
    """(increments/s end to end, incr() calls/s, seconds until all were applied, client
    CPU us per call, worker CPU us per increment): CPU figures move less with load."""
    rng = random.Random(2)
    publisher = Publisher(settings)
    client.set_publisher(publisher)
    if coalesce is not None:
        client.coalesce_increments(coalesce)
    profile = profiled(pid, f"buffers-worker-{len(ids)}")
    try:
        with profile:
            worker_cpu = cpu_seconds(pid)
            client_cpu = time.process_time()
            started = time.perf_counter()
            for _ in range(n):
                client.incr("issue_group", {"times_seen": 1}, {"id": rng.choice(ids)})
            publisher.flush(60)
            sent = time.perf_counter() - started
            client_cpu = time.process_time() - client_cpu
            while total_seen(dsn) < n:
                if time.perf_counter() - started > 150:
                    raise SystemExit(f"only {total_seen(dsn)} of {n} increments applied in 150 s")
                time.sleep(0.02)
            applied = time.perf_counter() - started
            worker_cpu = cpu_seconds(pid) - worker_cpu
    finally:
        client.set_publisher(None)
        publisher.close()
    return n / applied, n / sent, applied, 1e6 * client_cpu / n, 1e6 * worker_cpu / n


@dataclass
class Size:
    """The figures of one size."""

    rows: int
    naive: float  # increments/s
    rate: float  # increments/s, incr() to exact totals
    calls: float  # incr() calls/s
    seconds: float
    client_us: float  # client process CPU per incr() call (the loop, encoding, sending)
    worker_us: float  # worker CPU per increment
    statements: float
    flushes: float
    db_seconds: float
    rss: float  # MB, after the run
    peak: float  # MB
    load: str


def run_size(info: stack.StackInfo, state: Path, args: argparse.Namespace, rows: int) -> Size:
    """One size: a scratch database, its own topics, a fresh worker; stopped after."""
    dsn = scratch_database(info.database_url or "")
    proc: subprocess.Popen[bytes] | None = None
    try:
        migrate(dsn)
        tag = uuid.uuid4().hex[:6]
        settings = Settings(
            kafka_bootstrap_servers=info.kafka_bootstrap_servers or "",
            database_url=Secret(dsn),
            topic_prefix=f"bench{tag}.",
            app_id=f"bench-buffers-{tag}",
            web_port=stack.free_port(),
            state_dir=state / tag,
        )
        topics.create_all(settings)
        ids = seed(dsn, rows)
        naive_rate = naive(dsn, ids, args.naive)
        proc = start_worker(settings, args.interval, state / "worker.log")
        rate, calls, seconds, client_us, worker_us = buffered(
            settings, ids, args.increments, dsn, coalesce=args.coalesce, pid=proc.pid
        )
        return Size(
            rows=rows,
            naive=naive_rate,
            rate=rate,
            calls=calls,
            seconds=seconds,
            client_us=client_us,
            worker_us=worker_us,
            statements=metric(settings, "streams_buffer_statements_total", 'kind="row"'),
            flushes=metric(settings, "streams_buffer_flushes_total"),
            db_seconds=metric(settings, "streams_buffer_flush_seconds_sum"),
            rss=rss_mb(proc.pid),
            peak=rss_mb(proc.pid, "VmHWM"),
            load=machine(),
        )
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        drop_database(info.database_url or "", dsn)


def report(sizes: list[Size], args: argparse.Namespace) -> None:
    """Print one line per size, and record the figures for bench/summary.py."""
    per_100k = 100_000 / args.increments
    print(
        "rows    naive/s  buffered/s  speed-up  incr() calls/s  client us/call  "
        "worker us/incr  row stmts  flushes  DB s/100k  RSS MB (peak)  load"
    )
    for z in sizes:
        print(
            f"{z.rows:>5} {z.naive:>10,.0f} {z.rate:>11,.0f} {z.rate / z.naive:>8.1f}x "
            f"{z.calls:>15,.0f} {z.client_us:>15.1f} {z.worker_us:>15.1f} "
            f"{z.statements:>10,.0f} {z.flushes:>8,.0f} "
            f"{z.db_seconds * per_100k:>10.2f} {z.rss:>7.0f} ({z.peak:.0f})  {z.load}"
        )
    results = Results(os.environ.get("BENCH_RESULTS_NAME", "buffers"))
    for z in sizes:
        limit = z.rows * z.flushes
        results.add(
            f"increments/s, incr() to exact totals, {z.rows:,} rows",
            z.rate,
            "increments/s",
            goal=">= 100,000",
            met=z.rate >= 100_000,
            alternative=f"incr() {z.calls:,.0f} calls/s; {args.increments:,} increments",
        )
        results.add(
            f"speed-up over the naive UPDATE loop, {z.rows:,} rows",
            z.rate / z.naive,
            "x",
            goal=">= 5x",
            met=z.rate >= 5 * z.naive,
            alternative=f"naive loop {z.naive:,.0f} increments/s",
        )
        results.add(
            f"CPU per increment, {z.rows:,} rows",
            z.client_us + z.worker_us,
            "us",
            alternative=f"client {z.client_us:.1f} us, worker {z.worker_us:.1f} us",
        )
        results.add(
            f"worker RSS after {args.increments:,} increments over {z.rows:,} rows",
            z.rss,
            "MB",
            alternative=f"peak {z.peak:.0f} MB",
        )
        results.add(
            f"row statements, {z.rows:,} rows",
            z.statements,
            "statements",
            goal=f"<= rows x windows ({limit:,.0f})",
            met=z.statements <= limit,
            alternative=f"naive loop {args.increments:,}",
        )
    for small, big in itertools.pairwise(sizes):
        growth = f"{small.rows:,} -> {big.rows:,} rows"
        results.add(
            f"throughput kept, {growth}",
            big.rate / small.rate,
            "x",
            goal=">= 0.8x",
            met=big.rate >= 0.8 * small.rate,
        )
        results.add(
            f"worker RSS growth, {growth}",
            big.rss / small.rss,
            "x",
            goal="<= 1.2x",
            met=big.rss <= 1.2 * small.rss,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--increments", type=int, default=200_000)
    parser.add_argument("--naive", type=int, default=10_000, help="increments for the naive loop")
    parser.add_argument("--sizes", default="50,500,5000", help="rows per size, comma-separated")
    parser.add_argument("--interval", type=float, default=1.0, help="worker flush window, s")
    parser.add_argument(
        "--coalesce",
        type=float,
        default=None,
        help="incr() per-row summing window, s (default: the library's; 0: off)",
    )
    args = parser.parse_args()

    state = ROOT / ".streams" / f"bench-buffers-{os.getpid()}"
    info = stack.start(state, detach=False, env=dict(os.environ))
    assert info.kafka_bootstrap_servers and info.database_url
    state.mkdir(parents=True, exist_ok=True)
    try:
        sizes = [run_size(info, state, args, int(r)) for r in args.sizes.split(",")]
        report(sizes, args)
    finally:
        stack.stop(state)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
