"""Helpers for the project config tests: seed domain rows, read topics, scrape metrics."""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition

from streams import catalogue, kafka_config
from streams.agents.wrapper.direct import group_id
from streams.avro.codec import SingleObjectCodec, build_codec
from streams.avro.store import default_store
from streams.catalogue import TopicName
from streams.offsets import true_end_offsets
from streams.projectconfigs.scopes import Scope, request_value
from streams.publisher import Publisher
from streams.settings import Settings
from tests.support import harness
from tests.support.messages import headers_of


@dataclass(frozen=True)
class Seeded:
    organization_id: int
    project_ids: list[int]
    keys: dict[int, list[str]]  # project id -> public keys


def seed(
    dsn: str, *, projects: int = 1, keys_per_project: int = 1, slug: str | None = None
) -> Seeded:
    """One organization with ``projects`` projects of ``keys_per_project`` keys each."""
    slug = slug or f"org-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        org = conn.execute(
            "INSERT INTO organization (slug) VALUES (%s) RETURNING id", (slug,)
        ).fetchone()
        assert org is not None
        project_ids: list[int] = []
        keys: dict[int, list[str]] = {}
        for i in range(projects):
            row = conn.execute(
                "INSERT INTO project (organization_id, slug, platform) VALUES (%s, %s, 'python')"
                " RETURNING id",
                (org[0], f"p{i}"),
            ).fetchone()
            assert row is not None
            project_ids.append(row[0])
            keys[row[0]] = []
            for _ in range(keys_per_project):
                key = uuid.uuid4().hex
                conn.execute(
                    "INSERT INTO project_key (project_id, public_key, rate_limit_count,"
                    " rate_limit_window) VALUES (%s, %s, 100, 60)",
                    (row[0], key),
                )
                keys[row[0]].append(key)
    return Seeded(org[0], project_ids, keys)


def execute(dsn: str, sql: str, *params: Any) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql, params)


@dataclass(frozen=True)
class Published:
    key: str
    value: dict[str, Any] | None  # None: a tombstone
    headers: dict[str, str]
    timestamp_ms: int


def read_topic(
    settings: Settings, name: TopicName, codec: SingleObjectCodec | None = None
) -> list[Published]:
    """Every message of a catalogue topic, from the start to its true end."""
    codec = codec or build_codec(default_store(), None)
    topic = catalogue.spec(name).full_name(settings.topic_prefix)
    consumer = Consumer(kafka_config.consumer(settings, f"test-reader-{uuid.uuid4().hex}"))
    out: list[Published] = []
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = true_end_offsets(consumer, [(topic, p) for p in meta.partitions])
        left = {p: hi for (_, p), (lo, hi) in ends.items() if hi > lo}
        consumer.assign([TopicPartition(topic, p, ends[(topic, p)][0]) for p in left])
        deadline = time.monotonic() + 10
        while left and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=0.1):
                if m.error() is not None:
                    continue
                raw = m.value()
                out.append(
                    Published(
                        (m.key() or b"").decode(),
                        None if raw is None else codec.decode(name, raw),
                        {k: v.decode() for k, v in headers_of(m).items()},
                        m.timestamp()[1],
                    )
                )
                if (m.offset() or 0) + 1 >= left.get(m.partition() or 0, 0):
                    left.pop(m.partition() or 0, None)
    finally:
        consumer.close()
    return out


def configs(settings: Settings) -> list[Published]:
    return read_topic(settings, "project-configs")


def send_requests(
    publisher: Publisher,
    scope: Scope,
    n: int = 1,
    *,
    countdown: float,
    trigger: str = "test",
    requested_at: dt.datetime | None = None,
) -> None:
    """Publish ``n`` requests for ``scope`` (as the client would, minus the lookup)."""
    for _ in range(n):
        value = request_value(
            scope, trigger=trigger, countdown=countdown, requested_at=requested_at
        )
        publisher.send("project-config-invalidations", value, key=scope.message_key)
    publisher.flush()


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:]+)(\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def metric(proc: harness.Proc, name: str, **labels: str) -> float:
    """Sum of a metric's samples on a worker's /metrics that match ``labels``."""
    status, body = proc.get("/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group("name") != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels") or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(m.group("value"))
    return total


def committed(settings: Settings, name: TopicName, agent: str | None = None) -> int:
    """Messages of a catalogue topic that the worker's consumer group has committed (the
    group of direct agent ``agent``, when direct consumers are on)."""
    topic = catalogue.spec(name).full_name(settings.topic_prefix)
    group = settings.app_id
    if agent is not None and settings.direct_consumers:
        group = group_id(settings, agent)
    consumer = Consumer(kafka_config.consumer(settings, group))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        offsets = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return sum(max(0, tp.offset) for tp in offsets)
    finally:
        consumer.close()
