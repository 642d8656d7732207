"""Helpers for buffered-increment tests: seeded rows, counters, topic reads, metrics."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition

from streams import catalogue, client, kafka_config
from streams.avro.codec import build_codec
from streams.avro.store import default_store
from streams.catalogue import TopicName
from streams.offsets import true_end_offsets
from streams.publisher import Publisher
from streams.settings import Settings
from tests.support import harness
from tests.support.messages import headers_of


def seed_groups(dsn: str, n: int) -> list[int]:
    """An organization, a project and ``n`` issue_group rows; their ids."""
    with psycopg.connect(dsn) as conn:
        org = conn.execute(
            "INSERT INTO organization (slug) VALUES (%s) RETURNING id", (f"o-{uuid.uuid4().hex}",)
        ).fetchone()
        assert org is not None
        project = conn.execute(
            "INSERT INTO project (organization_id, slug) VALUES (%s, 'p') RETURNING id", (org[0],)
        ).fetchone()
        assert project is not None
        rows = conn.execute(
            "INSERT INTO issue_group (project_id, title) "
            "SELECT %s, 'g' || g FROM generate_series(1, %s) g RETURNING id",
            (project[0], n),
        ).fetchall()
    return sorted(int(r[0]) for r in rows)


def groups(dsn: str) -> dict[int, dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            "SELECT id, times_seen, num_comments, last_seen, level, status FROM issue_group"
        )
        names = [d.name for d in cur.description or []]
        return {int(r[0]): dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def times_seen(dsn: str) -> dict[int, int]:
    return {gid: int(row["times_seen"]) for gid, row in groups(dsn).items()}


def marks(dsn: str) -> list[tuple[int, int, int, int]]:
    """(partition, next_offset, flushes, increments) of every flush mark."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT partition, next_offset, flushes, increments FROM buffer_flush_marks "
            "ORDER BY partition"
        ).fetchall()
    return [(int(a), int(b), int(c), int(d)) for a, b, c, d in rows]


def parked(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT model, filters, columns, increments, reason FROM buffer_parked ORDER BY id"
        ).fetchall()


@contextmanager
def client_publisher(publisher: Publisher) -> Iterator[None]:
    """Route ``streams.client`` calls of this test through the test's publisher."""
    client.set_publisher(publisher)
    try:
        yield
    finally:
        client.set_publisher(None)


def read_topic(
    settings: Settings, name: TopicName
) -> list[tuple[bytes | None, Any, dict[str, bytes]]]:
    """Every message of a catalogue topic to its true end: (key, decoded value, headers).

    Raw topics (dead letters) give their bytes as the value.
    """
    spec = catalogue.spec(name)
    codec = build_codec(default_store(), None)
    topic = spec.full_name(settings.topic_prefix)
    consumer = Consumer(kafka_config.consumer(settings, f"test-read-{uuid.uuid4().hex}"))
    out: list[tuple[bytes | None, Any, dict[str, bytes]]] = []
    try:
        ends = true_end_offsets(consumer, [(topic, p) for p in range(spec.partitions)])
        for (t, p), (lo, hi) in sorted(ends.items()):
            consumer.assign([TopicPartition(t, p, lo)])
            offset = lo
            while offset < hi:
                msgs = consumer.consume(1000, timeout=2.0)
                if not msgs:
                    break
                for msg in msgs:
                    if msg.error() is not None:
                        continue
                    offset = (msg.offset() or 0) + 1
                    raw = msg.value()
                    value = codec.decode(name, raw) if spec.avro and raw else raw
                    out.append((msg.key(), value, headers_of(msg)))
            consumer.unassign()
    finally:
        consumer.close()
    return out


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:]+)(\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def metric(proc: harness.Proc, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` on a worker's /metrics that match ``labels``."""
    status, body = proc.get("/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        sample = _SAMPLE.match(line)
        if not sample or sample.group("name") != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', sample.group("labels") or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(sample.group("value"))
    return total
