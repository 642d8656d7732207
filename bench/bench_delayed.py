"""Delayed messages: scheduled and delivered per second, lateness p50/p99 with 1k, 10k and
100k messages pending, next to the bare publish rate of the same broker in the same run.

    .venv/bin/python bench/bench_delayed.py [--levels 1000,10000,100000] [--probes 2000]

Per level P: (1) P messages due now are stored in transactions of 1,000 (the ``conn=``
form) and then delivered by one pump (the one ``streams relay`` runs): stored/s and
delivered/s. (2) With P messages pending an hour ahead, ``--probes`` messages are
scheduled one by one (``Publisher.schedule``, countdown 0..5 s) while the pump runs:
the one-by-one scheduling rate and the lateness (arrival at a consumer - due time).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from confluent_kafka import Consumer, TopicPartition

from bench._stack import bench_stack
from streams import kafka_config, topics
from streams.db.migrate import migrate
from streams.delayed.pump import H_DUE_AT, Pump
from streams.publisher import Publisher
from streams.relay.producer import PublisherSlot
from streams.settings import Settings

TOPIC = "jobs"


def value(n: int) -> dict[str, Any]:
    return {
        "job": "bench.delayed",
        "job_id": str(n),
        "attempt": 1,
        "args": b"x" * 64,
        "parent_id": None,
    }


class Arrivals:
    """Counts arrivals on the jobs topic in a thread; lateness from the due-at header."""

    def __init__(self, settings: Settings, tag: str) -> None:
        self.tag = tag.encode()
        self.consumer = Consumer(
            kafka_config.consumer(settings, f"bench-{uuid.uuid4()}", **{"fetch.wait.max.ms": 10})
        )
        full = settings.topic_prefix + TOPIC
        meta = self.consumer.list_topics(full, timeout=10).topics[full]
        self.consumer.assign([TopicPartition(full, p, 0) for p in meta.partitions])
        self.count = 0
        self.lateness: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            msgs = self.consumer.consume(5000, timeout=0.02)
            now = time.time()
            for m in msgs:
                if m.error() is not None or not (m.key() or b"").startswith(self.tag):
                    continue  # another level's message, or a bare-publish one
                due_ms = dict(m.headers() or []).get(H_DUE_AT)
                if due_ms is not None:
                    self.lateness.append(now - int(due_ms) / 1000)
                    self.count += 1

    def wait(self, n: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {self.count} of {n} arrived")
            time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.consumer.close()


def bare_publish_rate(pub: Publisher, n: int = 50_000) -> float:
    data = pub.codec.encode(TOPIC, value(0))
    full = pub.settings.topic_prefix + TOPIC
    started = time.perf_counter()
    for i in range(n):
        pub.send_raw(full, data, key=str(i).encode(), headers=[])
    pub.flush(60)
    return n / (time.perf_counter() - started)


def store_due(pub: Publisher, dsn: str, n: int, countdown: float, tag: str) -> float:
    """Store ``n`` messages in transactions of 1,000; returns messages stored per second."""
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        for i in range(n):
            pub.schedule(TOPIC, value(i), key=f"{tag}{i}", countdown=countdown, conn=conn)
            if i % 1000 == 999:
                conn.commit()
        conn.commit()
    return n / (time.perf_counter() - started)


def run_pump(settings: Settings, pub: Publisher) -> tuple[Pump, threading.Event, threading.Thread]:
    stop = threading.Event()
    pump = Pump(settings.database_url.get(), PublisherSlot(lambda: pub, pub), stop)
    thread = threading.Thread(target=pump.run, daemon=True)
    thread.start()
    return pump, stop, thread


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def level(settings: Settings, pub: Publisher, pending: int, probes: int) -> dict[str, float]:
    dsn = settings.database_url.get()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE scheduled_messages")
    tag = f"L{pending}:"
    arrivals = Arrivals(settings, tag)
    stored = store_due(pub, dsn, pending, 0, tag)
    start = time.perf_counter()
    _pump, stop, thread = run_pump(settings, pub)
    arrivals.wait(pending)
    delivered = pending / (time.perf_counter() - start)
    # Lateness with ``pending`` messages waiting an hour ahead.
    store_due(pub, dsn, pending, 3600, "later:")
    before = arrivals.count
    arrivals.lateness.clear()
    rnd = random.Random(1)
    t0 = time.perf_counter()
    for i in range(probes):
        pub.schedule(TOPIC, value(i), key=f"{tag}p{i}", countdown=rnd.uniform(0, 5))
    one_by_one = probes / (time.perf_counter() - t0)
    arrivals.wait(before + probes)
    stop.set()
    thread.join()
    arrivals.close()
    late = arrivals.lateness
    return {
        "stored": stored,
        "delivered": delivered,
        "one_by_one": one_by_one,
        "p50": pct(late, 0.5),
        "p99": pct(late, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", default="1000,10000,100000")
    parser.add_argument("--probes", type=int, default=2000)
    args = parser.parse_args()
    with bench_stack("delayed") as settings:
        migrate(settings.database_url.get())
        topics.create_all(settings)
        overrides: dict[str, Any] = {"linger.ms": 5}
        pub = Publisher(settings, **overrides)
        bare = bare_publish_rate(pub)
        print(f"bare publish (same broker, same run): {bare:,.0f} msg/s")
        print(
            f"{'pending':>8} {'stored/s (tx of 1k)':>20} {'delivered/s':>12} "
            f"{'schedule() one by one/s':>24} {'lateness p50':>13} {'p99':>8}"
        )
        for p in (int(x) for x in args.levels.split(",")):
            r = level(settings, pub, p, args.probes)
            print(
                f"{p:>8,} {r['stored']:>20,.0f} {r['delivered']:>12,.0f} "
                f"{r['one_by_one']:>24,.0f} {r['p50']:>12.3f}s {r['p99']:>7.3f}s"
            )
        pub.close()
        print(f"uptime load: {os.getloadavg()}")


if __name__ == "__main__":
    main()
