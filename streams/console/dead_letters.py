"""Dead letters for the console: a bounded, newest-first read of the dead-letter
topic, filtered and paginated, and the replay of one letter.

The read assigns every partition (no consumer group, nothing committed) and takes at
most ``SCAN_PER_PARTITION`` of the newest messages of each, so a huge topic cannot
stall the worker; the page says when older letters were left out. Replay follows
``streams dlq replay``: the letter is recorded in ``streams_dlq_replays`` in the same
transaction that publishes its original bytes, so it is replayed once.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, Message, TopicPartition

from streams import catalogue, kafka_config
from streams.db.pool import connect
from streams.dlq.replay import DeadLetter, replay_once
from streams.offsets import true_end_offsets
from streams.publisher import Publisher
from streams.settings import Settings

SCAN_PER_PARTITION = 1_000
PAGE_SIZE = 25
READ_TIMEOUT = 5.0

Letter = DeadLetter  # one dead letter as read back from the topic


@dataclass(frozen=True)
class Filters:
    topic: str = ""
    reason: str = ""
    since_ms: int = 0  # dead-lettered at or after (epoch ms); 0 for all

    def match(self, letter: Letter) -> bool:
        if self.topic and letter.source_topic != self.topic:
            return False
        if self.reason and letter.reason != self.reason:
            return False
        return letter.timestamp_ms >= self.since_ms


@dataclass(frozen=True)
class Page:
    letters: tuple[Letter, ...]
    number: int  # 1-based
    pages: int
    matched: int
    truncated: bool  # some partition had older letters than the scan reached
    topics: tuple[str, ...]  # every source topic seen (for the filter form)
    reasons: tuple[str, ...]


def dlq_topic(settings: Settings) -> str:
    return catalogue.spec("dead-letters").full_name(settings.topic_prefix)


def _letter(m: Message) -> Letter:
    return Letter.of(m)


def read_recent(settings: Settings) -> tuple[list[Letter], bool]:
    """The newest letters of every partition (up to the scan bound); truncated flag."""
    topic = dlq_topic(settings)
    consumer = Consumer(kafka_config.consumer(settings, f"streams-console-{uuid.uuid4()}"))
    letters: list[Letter] = []
    truncated = False
    try:
        meta = consumer.list_topics(topic, timeout=READ_TIMEOUT).topics.get(topic)
        if meta is None or meta.error is not None:
            return [], False
        ends = true_end_offsets(consumer, [(topic, p) for p in meta.partitions], READ_TIMEOUT)
        deadline = time.monotonic() + READ_TIMEOUT
        for (t, p), (lo, hi) in sorted(ends.items()):
            start = max(lo, hi - SCAN_PER_PARTITION)
            truncated = truncated or start > lo
            if hi <= start:
                continue
            consumer.assign([TopicPartition(t, p, start)])
            offset = start
            while offset < hi and time.monotonic() < deadline:
                # consume() waits for the full count or the timeout: ask for what is left.
                for m in consumer.consume(min(500, hi - offset), timeout=0.5):
                    if m.error() is None:
                        letters.append(_letter(m))
                        offset = (m.offset() or 0) + 1
            truncated = truncated or offset < hi
            consumer.unassign()
    finally:
        consumer.close()
    return letters, truncated


def paginate(
    letters: Iterable[Letter], filters: Filters, number: int, truncated: bool = False
) -> Page:
    """Newest first (by time, then offset), filtered, ``PAGE_SIZE`` per page."""
    everything = sorted(letters, key=lambda x: (x.timestamp_ms, x.offset), reverse=True)
    matched = [x for x in everything if filters.match(x)]
    pages = max(1, math.ceil(len(matched) / PAGE_SIZE))
    number = min(max(1, number), pages)
    shown = matched[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
    return Page(
        tuple(shown),
        number,
        pages,
        len(matched),
        truncated,
        tuple(sorted({x.source_topic for x in everything})),
        tuple(sorted({x.reason for x in everything})),
    )


def replayed(settings: Settings, letters: Iterable[Letter]) -> dict[tuple[int, int], float]:
    """(partition, offset) -> replay time (epoch seconds) of those already replayed."""
    keys = [(x.partition, x.offset) for x in letters]
    if not keys:
        return {}
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT dlq_partition, dlq_offset, extract(epoch FROM replayed_at) "
            "FROM streams_dlq_replays WHERE dlq_topic = %s "
            "AND (dlq_partition, dlq_offset) IN (SELECT * FROM unnest(%s::int[], %s::bigint[]))",
            (dlq_topic(settings), [p for p, _ in keys], [o for _, o in keys]),
        ).fetchall()
    return {(int(str(p)), int(str(o))): float(str(t)) for p, o, t in rows}


def fetch_one(settings: Settings, partition: int, offset: int) -> Letter | None:
    """The dead letter at ``partition``/``offset``, or None when there is none."""
    topic = dlq_topic(settings)
    consumer = Consumer(kafka_config.consumer(settings, f"streams-console-{uuid.uuid4()}"))
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + READ_TIMEOUT
        while time.monotonic() < deadline:
            for m in consumer.consume(1, timeout=0.5):
                if m.error() is None:
                    return _letter(m) if m.offset() == offset else None
        return None
    finally:
        consumer.close()


def replayable(settings: Settings, letter: Letter) -> bool:
    """Only letters from a Kafka topic of the catalogue (relay letters name a table)."""
    names = {s.full_name(settings.topic_prefix) for s in catalogue.builtin_topics()}
    return letter.source_topic in names


def replay_one(settings: Settings, letter: Letter, publisher: Publisher) -> bool:
    """Re-publish ``letter``'s original bytes to its source topic, once.

    Returns False when it was replayed before (recorded in ``streams_dlq_replays``).
    ``publisher`` should be the console's own: ``flush`` waits for all it holds.
    """
    with connect(settings) as conn:
        # Raises PublishError when not acknowledged: the record then rolls back.
        if not replay_once(conn, publisher, dlq_topic(settings), letter):
            return False
        conn.commit()
    return True
