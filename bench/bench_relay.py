"""Relay throughput and commit-to-ack latency, next to the two limits measured in the same run.

    .venv/bin/python bench/bench_relay.py [--rows 100000]

Starts its own broker + PostgreSQL (unless KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL are
set). Figures:
  * bare PostgreSQL claim-and-delete loop over the same rows (no Kafka)   -> limit 1
  * bare confluent-kafka producer of the same encoded bytes (no database) -> limit 2
  * the relay, concurrency 1 and 2 (and 4), without and with coalescing (10 rows per
    object): rows/s from committed rows to acknowledged (and deleted) messages.
    Goals: >= 0.8x the PostgreSQL loop and >= 20,000 rows/s; without coalescing
    >= 0.5x the bare producer with the same headers (issue 13); concurrency 2 beats 1
    when a core is free.
  * commit-to-ack latency p50/p99 with writers committing 1,000 rows/s.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Producer

from bench._machine import Span, rss_mb
from bench._profile import profiled
from bench._results import Results
from streams import kafka_config, topics
from streams.db.migrate import migrate
from streams.dev import stack
from streams.heap import freeze_startup_heap
from streams.outbox.categories import REGION_OUTBOX
from streams.publisher import Publisher
from streams.relay.messages import H_OUTBOX_ID, Row
from streams.relay.relay import Relay, outbox_producer
from streams.settings import Secret, Settings

SHARDS = 1_000


def scratch_database(admin_dsn: str) -> str:
    """A database of its own, so the benchmark never touches real outbox rows."""
    name = f"bench_relay_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    info = psycopg.conninfo.conninfo_to_dict(admin_dsn)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo("", **info)


def drop_database(admin_dsn: str, dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())


def fill(dsn: str, rows: int, per_object: int) -> None:
    """Commit ``rows`` rows over SHARDS shards; ``per_object`` rows share one object."""
    with psycopg.connect(dsn) as conn:
        conn.execute("TRUNCATE region_outbox")
        conn.execute(
            "INSERT INTO region_outbox (shard_scope, shard_identifier, category,"
            " object_identifier, payload)"
            " SELECT 'organization_scope', (i / %s) %% %s, 'organization_update', i / %s,"
            " jsonb_build_object('name', 'organization ' || i, 'seq', i)"
            " FROM generate_series(1, %s) AS i",
            (per_object, SHARDS, per_object, rows),
        )
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE region_outbox")


def bare_postgres(dsn: str, rows: int, batch: int) -> float:
    """Claim (FOR UPDATE SKIP LOCKED) and delete in batches, one connection, no Kafka."""
    fill(dsn, rows, 1)
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        while True:
            got = conn.execute(
                "DELETE FROM region_outbox WHERE id IN (SELECT id FROM region_outbox"
                " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING id, shard_scope, shard_identifier, category, object_identifier,"
                " payload::text, date_added",
                (batch,),
            ).fetchall()
            conn.commit()
            if not got:
                break
    return rows / (time.perf_counter() - started)


def bare_kafka(
    settings: Settings, rows: int, linger_ms: int, stack_pids: dict[str, int | None]
) -> tuple[float, float, Span]:
    """The relay's own encoded messages (values, keys and every header, as
    streams.relay.encode makes them) through a bare idempotent producer, no database,
    with the given linger."""
    import datetime as dt

    from streams.relay.encode import BatchEncoder

    pub = Publisher(settings)
    t = dt.datetime.fromtimestamp(time.time(), dt.UTC)
    encoder = BatchEncoder(REGION_OUTBOX, pub.codec, settings.topic_prefix, settings.producer_name)
    msgs: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
    for i in range(rows):
        row = Row(
            i,
            "organization_scope",
            i % SHARDS,
            "organization_update",
            i,
            f'{{"name": "organization {i}", "seq": {i}}}',
            None,
            False,
            t,
            t,
        )
        enc = encoder.encode(row, i)
        msgs.append((enc.full_topic, enc.key, enc.value, enc.headers))
    pub.close()
    producer = Producer(kafka_config.producer(settings, **{"linger.ms": linger_ms}))
    done = [0]

    def cb(err: Any, msg: Any) -> None:
        done[0] += 1

    span = Span.start(stack_pids)
    started = time.perf_counter()
    cpu = time.process_time()
    for full, key, data, headers in msgs:
        while True:
            try:
                producer.produce(full, value=data, key=key, headers=list(headers), on_delivery=cb)
                break
            except BufferError:
                producer.poll(0.001)
        producer.poll(0)
    producer.flush(60)
    assert done[0] == rows
    elapsed = time.perf_counter() - started
    return rows / elapsed, (time.process_time() - cpu) / rows * 1e6, span.stop()


def relay_run(
    settings: Settings,
    rows: int,
    concurrency: int,
    per_object: int,
    stack_pids: dict[str, int | None],
) -> tuple[float, float, Span, str]:
    """(rows/s, the relay's CPU microseconds per row: all threads and worker processes,
    librdkafka's too; the machine meanwhile; the relay's memory)."""
    dsn = settings.database_url.get()
    relay = Relay(settings, concurrency=concurrency)
    relay.pool.open(wait=True)
    try:
        with relay.ranges() as ranges:  # worker processes when concurrency > 1
            # Warm up (connections, producers, worker processes), then measure on a
            # fresh fill with the warm relay.
            # Enough rows for every worker to take a part.
            fill(dsn, max(rows // 10, settings.relay_batch_size * concurrency), per_object)
            while relay.run_pass(ranges):
                pass
            fill(dsn, rows, per_object)
            with contextlib.ExitStack() as profiles:
                name = f"relay-c{concurrency}-{per_object}"
                profiles.enter_context(profiled(os.getpid(), name))
                for n, pid in enumerate(_worker_pids()):
                    profiles.enter_context(profiled(pid, f"{name}-worker{n}"))
                span = Span.start(stack_pids)
                started = time.perf_counter()
                cpu = _cpu_seconds()
                while relay.run_pass(ranges):
                    pass
                elapsed = time.perf_counter() - started
                cpu = _cpu_seconds() - cpu
                span.stop()
                # How memory grows with the backlog (issue 13's sizes 10x apart): the
                # worker processes' peak, or this process's own with concurrency 1.
                workers = _worker_pids()
                rss = (
                    "workers' peak RSS "
                    + " + ".join(f"{rss_mb(pid, 'VmHWM'):.0f}" for pid in workers)
                    + " MB"
                    if workers
                    else f"relay (this process) RSS {rss_mb(os.getpid()):.0f} MB"
                )
    finally:
        relay.close()
    with psycopg.connect(dsn) as conn:
        left = conn.execute("SELECT count(*) FROM region_outbox").fetchone()
    assert left is not None and left[0] == 0, left
    return rows / elapsed, cpu / rows * 1e6, span, rss


def _children() -> list[tuple[int, list[str]]]:
    """(pid, /proc stat fields after the name) of this process's children."""
    me = os.getpid()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            spawned = b"spawn_main" in (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == me and spawned:
            out.append((int(entry.name), fields))
    return out


def _worker_pids() -> list[int]:
    """The relay's worker processes (the broker and PostgreSQL are children too)."""
    return sorted(pid for pid, _ in _children())


def _cpu_seconds() -> float:
    """CPU of this process and of the relay's worker processes."""
    tick = os.sysconf("SC_CLK_TCK")
    return time.process_time() + sum((int(f[11]) + int(f[12])) / tick for _, f in _children())


class TimingPublisher(Publisher):
    """Records when the broker acknowledged each outbox id."""

    acked: dict[int, float]

    def send_raw(self, full_topic: str, value: bytes | None, **kw: Any) -> None:
        cb = kw.get("on_delivery")
        outbox_id = int(dict(kw["headers"])[H_OUTBOX_ID])

        def timed(err: Any, msg: Any) -> None:
            if err is None:
                self.acked[outbox_id] = time.time()
            if cb is not None:
                cb(err, msg)

        kw["on_delivery"] = timed
        super().send_raw(full_topic, value, **kw)


def latency(settings: Settings, rate: int, seconds: float) -> tuple[float, float, int]:
    """Writers commit ``rate`` rows/s (10 per transaction); commit-to-ack p50/p99 in ms."""
    dsn = settings.database_url.get()
    with psycopg.connect(dsn) as conn:
        conn.execute("TRUNCATE region_outbox")
        conn.commit()
    # The relay's own producer settings; every delivery reported, to time each one.
    pub = TimingPublisher(settings, **outbox_producer(settings))
    pub.acked = {}
    relay = Relay(settings, concurrency=4, publisher=pub)
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    committed: dict[int, float] = {}
    from streams.outbox import enqueue_outbox

    with psycopg.connect(dsn) as conn:
        # Warm up (producer id, metadata, connections) before measuring.
        for n in range(20):
            enqueue_outbox(
                conn,
                scope="organization_scope",
                shard_identifier=n,
                category="organization_update",
                object_identifier=n,
            )
        conn.commit()
        while len(pub.acked) < 20:
            time.sleep(0.05)
        per_tx = 10
        interval = per_tx / rate
        next_at = time.monotonic()
        end = next_at + seconds
        n = 1_000_000
        while time.monotonic() < end:
            ids = []
            for _ in range(per_tx):
                n += 1
                ids.append(
                    enqueue_outbox(
                        conn,
                        scope="organization_scope",
                        shard_identifier=n % SHARDS,
                        category="organization_update",
                        object_identifier=n,
                        payload={"seq": n},
                    )
                )
            conn.commit()
            now = time.time()
            for i in ids:
                committed[i] = now
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    deadline = time.monotonic() + 30
    while len(pub.acked) < len(committed) and time.monotonic() < deadline:
        time.sleep(0.05)
    relay.stop.set()
    thread.join(30)
    lat = sorted((pub.acked[i] - t) * 1000 for i, t in committed.items() if i in pub.acked)
    p50 = statistics.median(lat)
    p99 = lat[int(len(lat) * 0.99) - 1]
    return p50, p99, len(committed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="0: skip")
    parser.add_argument("--concurrency", default="1,2,4", help="relay concurrencies to run")
    parser.add_argument(
        "--per-object", default="1,10", help="rows per object (1: no coalescing) to run"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    state = Path(".streams").absolute() / f"bench-relay-{os.getpid()}"
    info = stack.start(state, detach=False, env=dict(os.environ))
    assert info.kafka_bootstrap_servers and info.database_url
    dsn = scratch_database(info.database_url)
    try:
        settings = Settings(
            kafka_bootstrap_servers=info.kafka_bootstrap_servers,
            database_url=Secret(dsn),
            topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
            relay_poll_interval=0.05,
        )
        migrate(dsn)
        topics.create_all(settings)
        # This process plays `streams relay`, which freezes its start-up heap and sets
        # STREAMS_GC_THRESHOLDS (its worker processes do the same).
        freeze_startup_heap(settings.gc_thresholds)
        n = args.rows
        results = Results("relay")
        print(f"relay benchmark: {n:,} rows over {SHARDS:,} shards, {os.cpu_count()} cores")
        pg = bare_postgres(dsn, n, settings.relay_batch_size)
        print(f"  limit 1, bare PostgreSQL claim+delete loop: {pg:10,.0f} rows/s")
        # The limit is the bare producer at its best: with the 1 ms linger of the
        # other producers, and with the relay's own (STREAMS_RELAY_LINGER).
        # The broker's and PostgreSQL's CPU (with its backends) per row, and how busy the
        # machine was: a figure bound by the machine has every core busy.
        pids = {"broker": info.broker_pid, "postgres": info.postgres_pid}
        kafka = 0.0
        for linger_ms in sorted({1, round(settings.relay_linger * 1000)}):
            rate, us, span = bare_kafka(settings, n, linger_ms, pids)
            print(
                f"  limit 2, bare confluent-kafka producer:     {rate:10,.0f} rows/s"
                f"  [{us:.1f} us CPU/row, linger {linger_ms} ms, load {os.getloadavg()[0]:.2f}]"
                f"\n      {span.describe(n)}"
            )
            kafka = max(kafka, rate)
        rates: dict[tuple[int, int], float] = {}
        concs = [int(c) for c in args.concurrency.split(",")]
        for per_object in [int(p) for p in args.per_object.split(",")]:
            label = "no coalescing" if per_object == 1 else f"coalescing {per_object}:1"
            for conc in concs:
                rate, cpu_us, span, rss = relay_run(settings, n, conc, per_object, pids)
                rates[per_object, conc] = rate
                verdict = "ok" if rate >= max(0.8 * pg, 20_000) else "BELOW GOAL"
                print(
                    f"  relay, {label:15}, concurrency {conc}: {rate:10,.0f} rows/s"
                    f"  = {rate / pg:4.2f}x PostgreSQL loop (goal >= 0.8x and >= 20,000) {verdict}"
                    f"  = {rate / kafka:4.2f}x bare producer"
                    f"  [{cpu_us:.1f} us CPU/row, load {os.getloadavg()[0]:.2f}]"
                    f"\n      {span.describe(n)}; {rss}"
                )
        flat = {c: r for (po, c), r in rates.items() if po == 1}
        if flat:
            best = max(flat.values())
            results.add(
                "relay rows/s, no coalescing (best concurrency)",
                best,
                "rows/s",
                goal=">= 0.5x bare producer",
                met=best >= 0.5 * kafka,
                alternative=f"bare producer, same headers {kafka:,.0f}/s = {best / kafka:.2f}x; "
                f"PostgreSQL loop {pg:,.0f}/s",
            )
        if 1 in flat and 2 in flat:
            results.add(
                "relay concurrency 2 / concurrency 1",
                flat[2] / flat[1],
                "x",
                goal="> 1 when a core is free",
                met=flat[2] > flat[1],
                alternative=", ".join(f"c{c} {r:,.0f}/s" for c, r in sorted(flat.items())),
            )
        if args.latency_seconds > 0:
            p50, p99, count = latency(settings, 1_000, args.latency_seconds)
            print(
                f"  commit-to-ack latency at 1,000 rows/s ({count:,} rows): "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
            )
            results.add(
                "relay commit-to-ack p99 at 1,000 rows/s",
                p99,
                "ms",
                alternative=f"p50 {p50:.1f} ms",
            )
    finally:
        drop_database(info.database_url, dsn)
        if not (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("DATABASE_URL")):
            stack.stop(state)
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
