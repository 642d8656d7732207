"""Helpers for delayed-message tests: values on the ``jobs`` topic, arrival bookkeeping."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition

from streams import kafka_config
from streams.delayed.pump import H_DUE_AT
from streams.settings import Settings
from tests.relay.support import CODEC


def value(n: int) -> dict[str, Any]:
    """A valid ``jobs`` record numbered ``n`` (no worker runs it in these tests)."""
    return {"job": "test.delayed", "job_id": str(n), "attempt": 1, "args": b"", "parent_id": None}


def pending(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM scheduled_messages WHERE delivered_at IS NULL"
        ).fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class Arrivals:
    """First arrival of each numbered message: broker timestamp, seen time, due time."""

    first: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    duplicates: int = 0

    def add(self, messages: list[Any]) -> None:
        seen = time.time()
        for msg in messages:
            if msg.error() is not None:
                continue
            n = int(CODEC.decode("jobs", msg.value())["job_id"])
            if n in self.first:
                self.duplicates += 1
                continue
            due = int(dict(msg.headers())[H_DUE_AT]) / 1000
            self.first[n] = (msg.timestamp()[1] / 1000, seen, due)

    def early(self) -> list[tuple[int, float]]:
        """Messages whose broker timestamp precedes their due time (with 1 ms rounding)."""
        return [(n, due - ts) for n, (ts, _, due) in self.first.items() if ts < due - 0.001]

    def lateness(self) -> list[float]:
        return sorted(seen - due for _, seen, due in self.first.values())


class JobsReader:
    """Reads the test's ``jobs`` topic from the start, recording arrivals."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer(
            kafka_config.consumer(settings, f"reader-{uuid.uuid4()}", **{"fetch.wait.max.ms": 20})
        )
        full = settings.topic_prefix + "jobs"
        meta = self.consumer.list_topics(full, timeout=10).topics[full]
        self.consumer.assign([TopicPartition(full, p, 0) for p in meta.partitions])
        self.arrivals = Arrivals()

    def poll(self, timeout: float = 0.05) -> int:
        got = self.consumer.consume(1000, timeout=timeout)
        self.arrivals.add(got)
        return len(got)

    def collect(self, until: int, timeout: float) -> Arrivals:
        deadline = time.monotonic() + timeout
        while len(self.arrivals.first) < until:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"only {len(self.arrivals.first)} of {until} arrived in {timeout}s"
                )
            self.poll()
        return self.arrivals

    def close(self) -> None:
        self.consumer.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]
