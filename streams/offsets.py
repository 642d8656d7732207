"""Offsets that are right on the embedded broker as well as on Apache Kafka.

Tansu reports the "latest" offset as the base offset of the last record batch + 1
(docs/broker.md #2). The true end: assign the partition at (reported latest - 1), fetch
once, then read the high watermark the fetch response carried.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition


def true_end_offsets(
    consumer: Consumer, partitions: Iterable[tuple[str, int]], timeout: float = 5.0
) -> dict[tuple[str, int], tuple[int, int]]:
    """(low, true high) per partition. Uses ``consumer``'s assignment; leaves it unassigned."""
    out: dict[tuple[str, int], tuple[int, int]] = {}
    probe: list[TopicPartition] = []
    for topic, partition in partitions:
        lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
        out[(topic, partition)] = (lo, hi)
        if hi > lo:
            probe.append(TopicPartition(topic, partition, hi - 1))
    if not probe:
        return out
    consumer.assign(probe)
    pending = {(tp.topic, tp.partition) for tp in probe}
    import time

    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        msgs = consumer.consume(num_messages=1, timeout=0.1)
        for m in msgs:
            key = (m.topic(), m.partition())
            if key in pending and m.error() is None:
                pending.discard(key)
        for key in list(pending):
            lo, hi = consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
            if hi > out[key][1]:
                pending.discard(key)
    for topic, partition in list(out):
        key = (topic, partition)
        lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        if hi is not None and hi > out[key][1]:
            out[key] = (out[key][0], hi)
    consumer.unassign()
    return out


def record_timestamps(
    consumer: Consumer, records: Iterable[tuple[str, int, int]], timeout: float = 5.0
) -> dict[tuple[str, int], int | None]:
    """The timestamp (ms) of the record at (topic, partition, offset), for each; None
    where it could not be read in ``timeout`` (gone, or no record there). Uses
    ``consumer``'s assignment; leaves it unassigned."""
    import time

    wanted = {(t, p): o for t, p, o in records}
    out: dict[tuple[str, int], int | None] = dict.fromkeys(wanted)
    if not wanted:
        return out
    consumer.assign([TopicPartition(t, p, o) for (t, p), o in wanted.items()])
    deadline = time.monotonic() + timeout
    pending = set(wanted)
    while pending and time.monotonic() < deadline:
        for m in consumer.consume(num_messages=len(pending), timeout=0.1):
            key = (m.topic() or "", m.partition() or 0)
            if key in pending and m.error() is None and m.offset() == wanted[key]:
                out[key] = m.timestamp()[1]
                pending.discard(key)
    consumer.unassign()
    return out
