"""Buffered increments: sustained increments/s and statements per 100k increments,
next to the naive one-UPDATE-per-increment loop on the same PostgreSQL in the same run.

    .venv/bin/python bench/bench_buffers.py [--increments 200000] [--rows 500] [--interval 5]
        [--coalesce 0.02]

Starts its own broker + PostgreSQL (unless KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL are
set) and a real ``streams worker`` running only the buffer agent. Figures:
  * naive: one autocommitted UPDATE per increment (what a task per increment did);
  * buffered: increments/s from the first incr() to every counter exact in
    PostgreSQL, and the row statements the flushes executed per 100k increments
    (limit: <= rows x windows; goal: far fewer than the naive 100,000), with incr()
    summing per row in the client for --coalesce seconds (client.coalesce_increments;
    0 = one message per call).
Goals (issue 13): >= 100,000 increments/s end to end and >= 5x the naive loop.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

import psycopg

from bench._profile import profiled
from bench._results import Results
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
    settings: Settings, ids: list[int], n: int, dsn: str, *, coalesce: float, pid: int
) -> tuple[float, float, float]:
    """(increments/s end to end, incr() calls/s, seconds until all were applied)."""
    rng = random.Random(2)
    publisher = Publisher(settings)
    client.set_publisher(publisher)
    if coalesce > 0:
        client.coalesce_increments(coalesce)
    profile = profiled(pid, "buffers-worker")
    try:
        with profile:
            started = time.perf_counter()
            for _ in range(n):
                client.incr("issue_group", {"times_seen": 1}, {"id": rng.choice(ids)})
            publisher.flush(60)
            sent = time.perf_counter() - started
            while total_seen(dsn) < n:
                if time.perf_counter() - started > 150:
                    raise SystemExit(f"only {total_seen(dsn)} of {n} increments applied in 150 s")
                time.sleep(0.02)
            applied = time.perf_counter() - started
    finally:
        client.set_publisher(None)
        publisher.close()
    return n / applied, n / sent, applied


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--increments", type=int, default=200_000)
    parser.add_argument("--naive", type=int, default=20_000, help="increments for the naive loop")
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument(
        "--interval", type=float, default=5.0, help="flush window, seconds (default: the default)"
    )
    parser.add_argument(
        "--coalesce", type=float, default=0.02, help="incr() per-row summing window, s (0: off)"
    )
    args = parser.parse_args()

    state = ROOT / ".streams" / f"bench-buffers-{os.getpid()}"
    info = stack.start(state, detach=False, env=dict(os.environ))
    assert info.kafka_bootstrap_servers and info.database_url
    dsn = scratch_database(info.database_url)
    proc: subprocess.Popen[bytes] | None = None
    try:
        migrate(dsn)
        tag = uuid.uuid4().hex[:6]
        settings = Settings(
            kafka_bootstrap_servers=info.kafka_bootstrap_servers,
            database_url=Secret(dsn),
            topic_prefix=f"bench{tag}.",
            app_id=f"bench-buffers-{tag}",
            web_port=stack.free_port(),
            state_dir=state / tag,
        )
        topics.create_all(settings)
        ids = seed(dsn, args.rows)

        results = Results(os.environ.get("BENCH_RESULTS_NAME", "buffers"))
        naive_rate = naive(dsn, ids, args.naive)
        print(
            f"naive loop:  {naive_rate:9,.0f} increments/s   100,000 statements per 100k   "
            f"100,000 transactions per 100k   {100_000 / naive_rate:.2f} s database time per 100k"
        )

        state.mkdir(parents=True, exist_ok=True)
        proc = start_worker(settings, args.interval, state / "worker.log")
        rate, produce_rate, seconds = buffered(
            settings, ids, args.increments, dsn, coalesce=args.coalesce, pid=proc.pid
        )
        statements = metric(settings, "streams_buffer_statements_total", 'kind="row"')
        flushes = metric(settings, "streams_buffer_flushes_total")
        db_seconds = metric(settings, "streams_buffer_flush_seconds_sum")
        per_100k = 100_000 / args.increments
        print(
            f"buffered:    {rate:9,.0f} increments/s   {statements * per_100k:7,.0f} statements "
            f"per 100k   {flushes * per_100k:,.0f} transactions per 100k   "
            f"{db_seconds * per_100k:.2f} s database time per 100k"
        )
        print(
            f"             ({args.increments:,} increments over {args.rows} rows in "
            f"{seconds:.1f} s, window {args.interval:g} s; incr() {produce_rate:,.0f} calls/s)"
        )
        print(
            f"limits:      statements {statements:,.0f} <= rows x windows "
            f"{args.rows * flushes:,.0f} ({flushes:.0f} flushes): "
            f"{'ok' if statements <= args.rows * flushes else 'EXCEEDED'};  "
            f"speed-up over the naive loop: {rate / naive_rate:.1f}x"
        )
        results.add(
            "increments/s, incr() to exact totals",
            rate,
            "increments/s",
            goal=">= 100,000",
            met=rate >= 100_000,
            alternative=f"coalesce window {args.coalesce:g} s; incr() {produce_rate:,.0f} calls/s",
        )
        results.add(
            "speed-up over the naive UPDATE loop",
            rate / naive_rate,
            "x",
            goal=">= 5x",
            met=rate >= 5 * naive_rate,
            alternative=f"naive loop {naive_rate:,.0f} increments/s",
        )
        results.add(
            f"worker RSS after {args.increments:,} increments over {args.rows:,} rows",
            rss_mb(proc.pid),
            "MB",
            alternative=f"{rate:,.0f} increments/s at this size",
        )
        results.add(
            "row statements per 100k increments",
            statements * per_100k,
            "statements",
            goal=f"<= rows x windows ({args.rows * flushes:,.0f})",
            met=statements <= args.rows * flushes,
            alternative="naive loop 100,000",
        )
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        drop_database(info.database_url, dsn)
        stack.stop(state)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
