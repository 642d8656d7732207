"""Helpers for outbox/relay/backfill tests: read topics back, write rows, start relays."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition

from streams import kafka_config
from streams.avro.codec import SingleObjectCodec
from streams.avro.store import default_store
from streams.outbox import enqueue_outbox
from streams.relay.messages import H_OUTBOX_ID
from streams.settings import Settings
from tests.support import harness
from tests.support.messages import headers_of

CODEC = SingleObjectCodec(default_store())


@dataclass(frozen=True)
class Record:
    topic: str  # catalogue name (prefix removed)
    partition: int
    offset: int
    key: str
    value: dict[str, Any]
    headers: dict[str, bytes]
    raw: bytes

    @property
    def outbox_id(self) -> int:
        return int(self.headers[H_OUTBOX_ID])


class TopicReader:
    """Reads catalogue topics from the beginning, accumulating records in log order."""

    def __init__(self, settings: Settings, topics: Iterable[str]) -> None:
        self.prefix = settings.topic_prefix
        self.consumer = Consumer(
            kafka_config.consumer(settings, f"reader-{uuid.uuid4()}", **{"fetch.wait.max.ms": 50})
        )
        parts = []
        for name in topics:
            full = self.prefix + name
            meta = self.consumer.list_topics(full, timeout=10).topics[full]
            parts += [TopicPartition(full, p, 0) for p in meta.partitions]
        self.consumer.assign(parts)
        self.records: list[Record] = []

    def poll(self, timeout: float = 0.5) -> list[Record]:
        got = []
        for m in self.consumer.consume(1000, timeout=timeout):
            if m.error() is not None:
                continue
            topic = (m.topic() or "").removeprefix(self.prefix)
            value = CODEC.decode(topic, m.value() or b"") if topic != "dead-letters" else {}
            got.append(
                Record(
                    topic,
                    m.partition() or 0,
                    m.offset() or 0,
                    (m.key() or b"").decode(),
                    value,
                    headers_of(m),
                    m.value() or b"",
                )
            )
        self.records += got
        return got

    def wait_for(
        self, pred: Callable[[list[Record]], bool], timeout: float, what: str = ""
    ) -> list[Record]:
        deadline = time.monotonic() + timeout
        while not pred(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}: {len(self.records)} records"
                )
            self.poll(0.2)
        return self.records

    def drain(self, quiet: float = 1.0) -> list[Record]:
        """Read until nothing new arrives for ``quiet`` seconds."""
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            if self.poll(0.2):
                last = time.monotonic()
        return self.records

    def close(self) -> None:
        self.consumer.close()


def ids_of(records: Iterable[Record]) -> list[int]:
    return [r.outbox_id for r in records]


def by_shard(records: Iterable[Record]) -> dict[str, list[Record]]:
    """Records grouped by key (= shard), each in log order."""
    out: dict[str, list[Record]] = {}
    for r in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        out.setdefault(r.key, []).append(r)
    return out


def write(
    dsn: str,
    rows: Iterable[tuple[int, int]],
    *,
    category: str = "organization_update",
    payload: dict[str, Any] | None = None,
) -> list[int]:
    """Commit one organization-scope row per (shard, object); returns their ids."""
    with psycopg.connect(dsn) as conn:
        ids = [
            enqueue_outbox(
                conn,
                scope="organization_scope",
                shard_identifier=shard,
                category=category,
                object_identifier=obj,
                payload=payload,
            )
            for shard, obj in rows
        ]
        conn.commit()
    return ids


def queued(dsn: str, table: str = "region_outbox") -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def start_relay(
    settings: Settings,
    processes: list[harness.Proc],
    log: Path,
    *,
    concurrency: int = 2,
    **env: str,
) -> harness.Proc:
    extra = {
        "STREAMS_RELAY_POLL_INTERVAL": "0.2",
        "STREAMS_METRICS_PORT": "0",
        # A relay restarted mid-test meets a broker busy with the test's own load: a
        # generous start-up check (a worker's keeps the default: it bounds /health too).
        "STREAMS_CONNECT_TIMEOUT": "30",
        **env,
    }
    proc = harness.spawn(
        ["relay", "--concurrency", str(concurrency)], harness.env_for(settings, **extra), log
    )
    processes.append(proc)
    return proc


def wait_empty(dsn: str, timeout: float, proc: harness.Proc | None = None) -> None:
    def empty() -> bool:
        if proc is not None and not proc.alive():
            raise AssertionError(f"relay exited:\n{proc.output()[-3000:]}")
        return queued(dsn) == 0

    harness.wait_for(empty, timeout, 0.1, "outbox drained")
