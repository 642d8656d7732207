"""Outbox backfill throughput end to end: table rows -> outbox rows -> published messages.

    .venv/bin/python bench/bench_backfill.py [--rows 50000]

Rate limit off. Two figures, each with the relay running alongside (concurrency 4):
  * `streams backfill --synchronous` (batches processed in the command itself);
  * the worker: its timer emits batches, its agent writes them (a real `streams worker`).
Starts its own broker + PostgreSQL unless KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL are set;
always works in a scratch database of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg

from bench._stack import worker_env
from bench.bench_relay import drop_database, scratch_database
from streams import topics
from streams.backfill.models import MODELS
from streams.backfill.run import run
from streams.db.migrate import migrate
from streams.dev import stack
from streams.relay.relay import Relay
from streams.settings import Secret, Settings


def fill(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("TRUNCATE organization CASCADE")
        conn.execute("TRUNCATE region_outbox")
        conn.execute("DELETE FROM outbox_backfill_state")
        conn.execute(
            "INSERT INTO organization (slug, name) SELECT 'org-' || i, 'Organization ' || i"
            " FROM generate_series(1, %s) AS i",
            (rows,),
        )
        conn.commit()


def published_after(relay: Relay, start: int, rows: int, timeout: float) -> float:
    """Seconds until the relay has published ``rows`` more messages."""
    t0 = time.perf_counter()
    while relay.totals.published - start < rows:
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"{relay.totals.published - start}/{rows} published")
        time.sleep(0.02)
    return time.perf_counter() - t0


def synchronous(settings: Settings, relay: Relay, rows: int) -> float:
    fill(settings.database_url.get(), rows)
    start = relay.totals.published
    t0 = time.perf_counter()
    asyncio.run(
        run(settings, [MODELS["organization"]], rate=0, synchronous=True, out=io.StringIO())
    )
    written = time.perf_counter() - t0
    rest = published_after(relay, start, rows, 300)
    print(f"    (outbox rows written in {written:.1f}s, last message {rest:.1f}s later)")
    return rows / (written + rest)


def with_worker(settings: Settings, relay: Relay, rows: int, state: Path) -> float:
    dsn = settings.database_url.get()
    fill(dsn, rows)
    with psycopg.connect(dsn) as conn:  # held back until the worker is up
        conn.execute(
            "INSERT INTO outbox_backfill_overrides (table_name, target_version) VALUES"
            " ('organization', 0)"
        )
        conn.commit()
    env = worker_env(
        settings,
        app_id=f"bench-backfill-{uuid.uuid4().hex[:6]}",
        state_dir=state,
        backfill_interval=0.5,
        backfill_max_rate=0,
    )
    log = (state / "worker.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "worker", "--loglevel", "warning"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while b'"ready"' not in _health(settings.web_port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("worker did not become ready")
            time.sleep(0.25)
        start = relay.totals.published
        t0 = time.perf_counter()
        with psycopg.connect(dsn) as conn:
            conn.execute("DELETE FROM outbox_backfill_overrides")
            conn.commit()
        published_after(relay, start, rows, 300)
        return rows / (time.perf_counter() - t0)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _health(port: int) -> bytes:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            body: bytes = resp.read()
            return body
    except OSError:
        return b""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    state = Path(".streams").absolute() / f"bench-backfill-{os.getpid()}"
    info = stack.start(state, detach=False, env=dict(os.environ))
    assert info.kafka_bootstrap_servers and info.database_url
    dsn = scratch_database(info.database_url)
    relay: Relay | None = None
    try:
        settings = Settings(
            kafka_bootstrap_servers=info.kafka_bootstrap_servers,
            database_url=Secret(dsn),
            topic_prefix=f"benchbf{uuid.uuid4().hex[:6]}.",
            relay_poll_interval=0.05,
            web_port=stack.free_port(),
            state_dir=state,
        )
        migrate(dsn)
        topics.create_all(settings)
        relay = Relay(settings, concurrency=4)
        threading.Thread(target=relay.run, daemon=True).start()
        n = args.rows
        print(
            f"backfill benchmark: {n:,} organization rows, rate limit off, {os.cpu_count()} cores"
        )
        rate = synchronous(settings, relay, n)
        print(f"  streams backfill --synchronous + relay: {rate:8,.0f} rows/s (table -> published)")
        rate = with_worker(settings, relay, n, state)
        print(f"  worker timer + agent + relay:           {rate:8,.0f} rows/s (table -> published)")
    finally:
        if relay is not None:
            relay.stop.set()
            time.sleep(0.5)
        drop_database(info.database_url, dsn)
        if not (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("DATABASE_URL")):
            stack.stop(state)
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
