"""Reading and replaying the dead-letter topic (``streams dlq list|replay``)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streams import catalogue, kafka_config
from streams.db.pool import connect
from streams.dlq import headers as dl
from streams.offsets import true_end_offsets
from streams.publisher import Publisher
from streams.settings import Settings
from streams.tracing import H_ATTEMPT


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int

    def header(self, name: str) -> str:
        for k, v in self.headers:
            if k == name:
                return v.decode("utf-8", "replace")
        return ""

    @property
    def source_topic(self) -> str:
        return self.header(dl.H_SOURCE_TOPIC)

    @property
    def reason(self) -> str:
        return self.header(dl.H_REASON)

    def original_headers(self) -> list[tuple[str, bytes]]:
        return dl.original_headers(self.headers)


def _header_list(raw: object) -> list[tuple[str, bytes]]:
    items: Any = raw.items() if isinstance(raw, dict) else (raw or [])
    return [(str(k), v if isinstance(v, bytes) else str(v or "").encode()) for k, v in items]


def read(settings: Settings, *, source_topic: str | None = None) -> Iterator[DeadLetter]:
    """Every dead letter from the start of the topic to its true end."""
    topic = catalogue.spec("dead-letters").full_name(settings.topic_prefix)
    consumer = Consumer(kafka_config.consumer(settings, f"streams-dlq-reader-{uuid.uuid4()}"))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return
        ends = true_end_offsets(consumer, [(topic, p) for p in meta.partitions])
        for (t, p), (lo, hi) in sorted(ends.items()):
            if hi <= lo:
                continue
            consumer.assign([TopicPartition(t, p, lo)])
            offset = lo
            while offset < hi:
                # consume() waits for the full count or the timeout: ask for what is left.
                msgs = consumer.consume(min(500, hi - offset), timeout=2.0)
                if not msgs:
                    break
                for m in msgs:
                    if m.error() is not None:
                        continue
                    offset = (m.offset() or 0) + 1
                    letter = DeadLetter(
                        p,
                        offset - 1,
                        m.key(),
                        m.value(),
                        _header_list(m.headers()),
                        m.timestamp()[1],
                    )
                    if source_topic is None or letter.source_topic in (
                        source_topic,
                        f"{settings.topic_prefix}{source_topic}",
                    ):
                        yield letter
            consumer.unassign()
    finally:
        consumer.close()


def replay(
    settings: Settings,
    *,
    source_topic: str,
    since: dt.datetime | None = None,
    reason: str | None = None,
    key: bytes | None = None,
    publisher: Publisher | None = None,
) -> int:
    """Re-publish the original bytes of matching dead letters to their original topic.

    A dead letter is replayed once: replays are recorded in PostgreSQL, so running the
    command again does not duplicate work downstream.
    """
    own = publisher is None
    pub = publisher or Publisher(settings)
    dlq_topic = catalogue.spec("dead-letters").full_name(settings.topic_prefix)
    since_ms = int(since.timestamp() * 1000) if since else 0
    count = 0
    try:
        with connect(settings) as conn:
            for letter in read(settings, source_topic=source_topic):
                if letter.timestamp_ms < since_ms:
                    continue
                if reason is not None and letter.reason != reason:
                    continue
                if key is not None and letter.key != key:
                    continue
                inserted = conn.execute(
                    "INSERT INTO streams_dlq_replays (dlq_topic, dlq_partition, dlq_offset, "
                    "source_topic) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (dlq_topic, letter.partition, letter.offset, letter.source_topic),
                ).rowcount
                if not inserted:
                    continue
                headers = [(k, v) for k, v in letter.original_headers() if k != H_ATTEMPT]
                headers.append(
                    ("streams-replayed-from", f"{letter.partition}:{letter.offset}".encode())
                )
                pub.send_raw(letter.source_topic, letter.value, key=letter.key, headers=headers)
                pub.flush()
                conn.commit()
                count += 1
    finally:
        if own:
            pub.close()
    return count
