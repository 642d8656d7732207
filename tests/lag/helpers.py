"""A real ``streams lag-exporter`` process, its /metrics, and lag built on purpose."""

from __future__ import annotations

import contextlib
import re
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from prometheus_client.parser import text_string_to_metric_families

from streams.dev.stack import free_port
from streams.settings import Settings
from tests.support import harness

Values = dict[tuple[str, frozenset[tuple[str, str]]], float]


def start_exporter(
    settings: Settings,
    processes: list[harness.Proc],
    log: Path,
    *,
    interval: float = 0.5,
    timeout: float = 2.0,
    groups: str | None = None,
    bootstrap: str | None = None,
) -> harness.Proc:
    """An exporter for this test's groups (those under its topic prefix), ready to scrape."""
    port = free_port()
    env = harness.env_for(settings)
    if bootstrap:
        env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    args = [
        "lag-exporter",
        "--port",
        str(port),
        "--interval",
        str(interval),
        "--timeout",
        str(timeout),
        "--groups",
        groups or "^" + re.escape(settings.topic_prefix),
        "--cluster-name",
        "test",
    ]
    proc = harness.spawn(args, env, log)
    proc.web_port = port
    processes.append(proc)

    def ready() -> bool:
        if not proc.alive():
            raise AssertionError(f"lag exporter exited:\n{proc.output()[-3000:]}")
        with contextlib.suppress(OSError):
            return proc.get("/health", timeout=1)[0] == 200
        return False

    harness.wait_for(ready, 20, 0.1, "lag exporter ready")
    return proc


def scrape_text(port: int, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        body: bytes = resp.read()
    return body.decode()


def parse(text: str) -> Values:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def scrape(proc: harness.Proc) -> Values:
    assert proc.web_port is not None
    return parse(scrape_text(proc.web_port))


def matching(values: Values, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    want = set(labels.items())
    return {lab: v for (n, lab), v in values.items() if n == name and want <= lab}


def one(values: Values, name: str, **labels: str) -> float | None:
    found = matching(values, name, **labels)
    assert len(found) <= 1, f"{name}{labels} matched {len(found)} series"
    return next(iter(found.values()), None)


def polls(proc: harness.Proc) -> float:
    return one(scrape(proc), "streams_lag_polls_total", outcome="success") or 0.0


def make_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        fut.result(10)


def produce(bootstrap: str, topic: str, counts: dict[int, int], linger_ms: int = 20) -> None:
    # Lingering packs many records per batch: exactly where the embedded broker's
    # "latest offset" is wrong (base offset of the last batch + 1).
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms})
    for partition, n in counts.items():
        for i in range(n):
            producer.produce(topic, b"v" * 100, key=str(i).encode(), partition=partition)
    assert producer.flush(10) == 0


def consume_exactly(bootstrap: str, group: str, topic: str, counts: dict[int, int]) -> None:
    """Consume ``counts[p]`` messages of each partition from the start, then commit them."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in counts])
        taken = dict.fromkeys(counts, 0)
        deadline = time.monotonic() + 20
        while taken != counts and time.monotonic() < deadline:
            for m in consumer.consume(500, 0.2):
                p = m.partition() or 0
                if m.error() is None and taken[p] < counts[p] and m.offset() == taken[p]:
                    taken[p] += 1
                    if taken[p] == counts[p]:
                        consumer.pause([TopicPartition(topic, p)])
        assert taken == counts, f"consumed {taken}, wanted {counts}"
        consumer.commit(
            offsets=[TopicPartition(topic, p, n) for p, n in counts.items()], asynchronous=False
        )
    finally:
        consumer.close()


def commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()
