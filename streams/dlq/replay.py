"""Reading and replaying the dead-letter topic (``streams dlq list|replay``)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka import Message as KafkaMessage

from streams import catalogue, kafka_config, marks
from streams.db.pool import connect
from streams.dlq import headers as dl
from streams.offsets import true_end_offsets
from streams.publisher import Publisher
from streams.settings import Settings
from streams.tracing import H_ATTEMPT

H_REPLAYED_FROM = "streams-replayed-from"
RESET_KIND = "dlq_replay"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as read back from the topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    @classmethod
    def of(cls, m: KafkaMessage) -> DeadLetter:
        """The dead letter of a consumed record."""
        raw: Any = m.headers() or []
        items = raw.items() if isinstance(raw, dict) else raw
        headers = tuple(
            (str(k), v if isinstance(v, bytes) else str(v or "").encode()) for k, v in items
        )
        return cls(
            m.partition() or 0, m.offset() or 0, m.key(), m.value(), headers, m.timestamp()[1]
        )

    def header(self, name: str) -> str:
        """The value of header ``name`` as text ("" when absent)."""
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


def record_replay(conn: psycopg.Connection[Any], dlq_topic: str, letter: DeadLetter) -> bool:
    """Record ``letter`` as replayed in the caller's transaction; False when this very
    letter was replayed before.

    A letter is its (partition, offset) *and* its timestamp: after a broker reset (or the
    topic deleted and recreated) the new log starts at offset 0 again, and a record
    holding the same offset with another timestamp was another log's letter. That one is
    reported (``marks.reset.detected``, ``streams_offset_mark_resets_total{kind=
    "dlq_replay"}``) and replaced, so the new letter is replayed. Records written before
    timestamps were kept (NULL) count as this letter: a reset is not guessed.
    """
    row = conn.execute(
        "INSERT INTO streams_dlq_replays (dlq_topic, dlq_partition, dlq_offset, source_topic, "
        "dlq_timestamp_ms) VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (dlq_topic, dlq_partition, dlq_offset) DO UPDATE SET "
        "replayed_at = now(), dlq_timestamp_ms = EXCLUDED.dlq_timestamp_ms, "
        "source_topic = EXCLUDED.source_topic "
        "WHERE streams_dlq_replays.dlq_timestamp_ms <> EXCLUDED.dlq_timestamp_ms "
        "RETURNING xmax = 0",  # true: a new record; false: another log's record replaced
        (dlq_topic, letter.partition, letter.offset, letter.source_topic, letter.timestamp_ms),
    ).fetchone()
    if row is None:
        return False
    if not row[0]:
        _report_reset(dlq_topic, letter)
    return True


def _report_reset(dlq_topic: str, letter: DeadLetter) -> None:
    marks.RESETS.labels(RESET_KIND, dlq_topic).inc()
    log.error(
        "marks.reset.detected",
        extra={
            "kind": RESET_KIND,
            "topic": dlq_topic,
            "partition": letter.partition,
            "mark": letter.offset,
            "letter_timestamp_ms": letter.timestamp_ms,
            "action": "a replay record of another log at this offset: the letter is replayed",
        },
    )


def replay_once(
    conn: psycopg.Connection[Any], publisher: Publisher, dlq_topic: str, letter: DeadLetter
) -> bool:
    """Record ``letter`` in ``streams_dlq_replays`` and re-publish its original bytes to
    its source topic; False (nothing sent) when it was replayed before.

    Waits for the broker's ack (``PublishError`` if none). The caller commits ``conn``
    afterwards, so a letter whose re-publish failed is not recorded as replayed.
    """
    if not record_replay(conn, dlq_topic, letter):
        return False
    headers = [(k, v) for k, v in letter.original_headers() if k != H_ATTEMPT]
    headers.append((H_REPLAYED_FROM, f"{letter.partition}:{letter.offset}".encode()))
    publisher.send_raw(letter.source_topic, letter.value, key=letter.key, headers=headers)
    publisher.flush()
    return True


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
                    letter = DeadLetter.of(m)
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
                if replay_once(conn, pub, dlq_topic, letter):
                    conn.commit()
                    count += 1
    finally:
        if own:
            pub.close()
    return count
