"""Lag exporter cost: one poll of the cluster and one scrape, against the number of
(group, partition) pairs it reports.

Three cases per size: a cold poll (every partition's true end fetched), a steady poll
with nothing produced (no fetch: reported ends unchanged), and a busy poll after a
write to every partition (every partition fetched again). The scrape renders the
snapshot to Prometheus text.

Goal: at 1,600 group-partitions a busy poll under 1 s (a fifth of the default 5 s
interval) and a scrape under 100 ms; 4,000 is measured to show how it grows.
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from prometheus_client import CollectorRegistry, generate_latest

from bench._stack import bench_stack
from streams import kafka_config
from streams.lag.collector import LagCollector
from streams.lag.poller import LagPoller
from streams.lag.source import KafkaOffsetSource
from streams.settings import Settings

PARTITIONS = 8
# (topics, groups, topics per group): group-partitions = groups * per_group * PARTITIONS
SIZES = ((2, 5, 2), (10, 10, 5), (25, 40, 5), (100, 100, 5))
ROUNDS = 5
LIMIT_AT = 1600
POLL_LIMIT = 1.0
SCRAPE_LIMIT = 0.1


def setup(settings: Settings, n_topics: int, n_groups: int, per_group: int, tag: str) -> None:
    bs = settings.kafka_bootstrap_servers
    names = [f"{settings.topic_prefix}{tag}-t{i}" for i in range(n_topics)]
    admin = AdminClient({"bootstrap.servers": bs})
    for fut in admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names]).values():
        fut.result(30)
    write_all(settings, names, 20)
    for g in range(n_groups):
        consumer = Consumer(
            {"bootstrap.servers": bs, "group.id": f"{settings.topic_prefix}{tag}-g{g}"}
        )
        mine = [names[(g + k) % n_topics] for k in range(per_group)]
        offsets = [TopicPartition(t, p, 5) for t in mine for p in range(PARTITIONS)]
        consumer.commit(offsets=offsets, asynchronous=False)
        consumer.close()


def write_all(settings: Settings, names: list[str], per_partition: int) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 5})
    for name in names:
        for p in range(PARTITIONS):
            for _ in range(per_partition):
                producer.produce(name, b"x" * 50, partition=p)
    producer.flush(30)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(settings: Settings, size: tuple[int, int, int], tag: str) -> dict[str, float]:
    n_topics, n_groups, per_group = size
    setup(settings, n_topics, n_groups, per_group, tag)
    names = [f"{settings.topic_prefix}{tag}-t{i}" for i in range(n_topics)]
    pattern = f"^{re.escape(settings.topic_prefix + tag)}-g"
    source = KafkaOffsetSource(kafka_config.common(settings), timeout=10)
    poller = LagPoller(source, pattern)
    snap = [poller.poll()]
    try:
        pairs = len(snap[0].partitions)
        expected = n_groups * per_group * PARTITIONS
        assert pairs == expected, f"{pairs} group-partitions reported, {expected} committed"

        def cold_poll() -> None:
            source._ends.clear()  # forget every true end: each partition is fetched again
            LagPoller(source, pattern).poll()

        cold = statistics.median(timed(cold_poll) for _ in range(3))
        steady = statistics.median(timed(poller.poll) for _ in range(ROUNDS))
        busy = []
        for _ in range(ROUNDS):
            write_all(settings, names, 1)
            busy.append(timed(lambda: snap.__setitem__(0, poller.poll())))
        registry = CollectorRegistry()
        registry.register(LagCollector(lambda: snap[0], "bench"))
        scrape = statistics.median(timed(lambda: generate_latest(registry)) for _ in range(ROUNDS))
        size_kb = len(generate_latest(registry)) / 1024
    finally:
        source.close()
    return {
        "pairs": pairs,
        "cold": cold,
        "steady": steady,
        "busy": statistics.median(busy),
        "scrape": scrape,
        "kb": size_kb,
    }


def main() -> int:
    ok = True
    with bench_stack("lag") as settings:
        print(
            f"{'group-partitions':>16} {'cold poll':>10} {'steady poll':>12} {'busy poll':>10}"
            f" {'scrape':>8} {'body':>8}"
        )
        rows = []
        for i, size in enumerate(SIZES):
            r = measure(settings, size, f"s{i}")
            rows.append(r)
            print(
                f"{int(r['pairs']):>16} {r['cold'] * 1000:>8.0f}ms {r['steady'] * 1000:>10.0f}ms"
                f" {r['busy'] * 1000:>8.0f}ms {r['scrape'] * 1000:>6.1f}ms {r['kb']:>6.0f}KB"
            )
        r = next(r for r in rows if r["pairs"] == LIMIT_AT)
        print(
            f"limit at {LIMIT_AT} group-partitions: busy poll < {POLL_LIMIT * 1000:.0f} ms "
            f"-> {r['busy'] * 1000:.0f} ms; scrape < {SCRAPE_LIMIT * 1000:.0f} ms "
            f"-> {r['scrape'] * 1000:.1f} ms"
        )
        ok = r["busy"] < POLL_LIMIT and r["scrape"] < SCRAPE_LIMIT
    print("OK" if ok else "OVER LIMIT (shared 2-core machine: see the figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
