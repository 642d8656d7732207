"""A broker that lost its log (restarted; a topic deleted and recreated) under a kept
database: the flush marks are recognised as another log's, reported, and voided, and
every new increment is applied. Before: all 400 were skipped as "already applied".
The same for dead-letter replays: before, new letters at old offsets were "replayed 0"."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from streams import catalogue, kafka_config, topics
from streams.client import incr
from streams.dlq import replay as dlq
from streams.dlq.headers import Failure, FailureReason, Letter
from streams.dlq.sink import KafkaDeadLetterSink
from streams.metrics import REGISTRY
from streams.offsets import true_end_offsets
from streams.publisher import Publisher
from tests.buffers import support as bs
from tests.chaos.support import Case, figure
from tests.support import harness

ENV = {"STREAMS_AGENTS": "buffers", "STREAMS_BUFFER_FLUSH_INTERVAL": "0.5"}


def _send(case: Case, ids: list[int], expected: Counter[int], n: int) -> None:
    publisher = Publisher(case.settings)
    try:
        with bs.client_publisher(publisher):
            for i in range(n):
                gid = ids[i % len(ids)]
                incr("issue_group", {"times_seen": 1}, {"id": gid})
                expected[gid] += 1
        publisher.flush()
    finally:
        publisher.close()


def _resets(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT coalesce(sum(resets), 0) FROM buffer_flush_marks").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.allow_errors  # marks.reset.detected is an error log, by design
def test_after_a_broker_reset_new_increments_are_applied_not_skipped(
    case: Case, processes: list[harness.Proc], tmp_path: Path
) -> None:
    ids = bs.seed_groups(case.dsn, 40)
    expected: Counter[int] = Counter()
    worker = harness.start_worker(case.settings, tmp_path / "w1.log", env=ENV)
    processes.append(worker)
    _send(case, ids, expected, 4000)
    harness.wait_for(lambda: bs.times_seen(case.dsn) == dict(expected), 90, 0.2, "4000 applied")
    worker.stop()

    case.stack.broker_restart()  # every topic and offset gone; PostgreSQL keeps its marks
    topics.create_all(case.settings)
    worker = harness.start_worker(case.settings, tmp_path / "w2.log", env=ENV)
    processes.append(worker)
    _send(case, ids, expected, 400)

    def applied() -> int:
        return sum(bs.times_seen(case.dsn).values()) - 4000

    harness.wait_for(lambda: applied() == 400, 60, 0.2, "the 400 new increments applied")
    figure(f"broker reset: {applied()} of 400 new increments applied (before: 0)")
    assert bs.times_seen(case.dsn) == dict(expected)
    assert _resets(case.dsn) >= 1
    assert bs.metric(worker, "streams_offset_mark_resets_total", kind="buffer_flush") >= 1
    assert "marks.reset.detected" in worker.output()


def _dead_letter(case: Case, publisher: Publisher, source: str, n: int, tag: str) -> None:
    sink = KafkaDeadLetterSink(publisher, case.settings.topic_prefix)
    for i in range(n):
        failure = Failure(FailureReason.HANDLER, "E", f"{tag} {i}")
        sink.send_sync(Letter(f"{tag}-{i}".encode(), b"k", [], failure, source, 0, i, "chaos"))


def _source_values(case: Case, source: str) -> list[bytes]:
    """Every value on ``source`` (the replayed letters' bytes), in order."""
    consumer = Consumer(kafka_config.consumer(case.settings, f"chaos-read-{uuid.uuid4()}"))
    try:
        meta = consumer.list_topics(source, timeout=10).topics[source]
        ends = true_end_offsets(consumer, [(source, p) for p in meta.partitions])
        values: list[bytes] = []
        for (t, p), (lo, hi) in sorted(ends.items()):
            consumer.assign([TopicPartition(t, p, lo)])
            at = lo
            while at < hi and (msgs := consumer.consume(hi - at, timeout=2.0)):
                values += [m.value() or b"" for m in msgs if m.error() is None]
                at = (msgs[-1].offset() or 0) + 1
            consumer.unassign()
        return sorted(values)
    finally:
        consumer.close()


def _dlq_resets() -> float:
    return sum(
        s.value
        for m in REGISTRY.collect()
        if m.name == "streams_offset_mark_resets"
        for s in m.samples
        if s.name.endswith("_total") and s.labels.get("kind") == "dlq_replay"
    )


@pytest.mark.allow_errors  # marks.reset.detected is an error log, by design
def test_after_a_broker_reset_new_dead_letters_at_old_offsets_are_replayed(case: Case) -> None:
    source = catalogue.spec("resource-changes").full_name(case.settings.topic_prefix)
    publisher = Publisher(case.settings)
    try:
        _dead_letter(case, publisher, source, 5, "old")
        assert dlq.replay(case.settings, source_topic="resource-changes") == 5
        assert dlq.replay(case.settings, source_topic="resource-changes") == 0  # once
    finally:
        publisher.close()

    case.stack.broker_restart()  # the dead-letter log starts at offset 0 again
    topics.create_all(case.settings)
    resets = _dlq_resets()
    publisher = Publisher(case.settings)
    try:
        _dead_letter(case, publisher, source, 5, "new")  # the same offsets as the old ones
        replayed = dlq.replay(case.settings, source_topic="resource-changes")
        again = dlq.replay(case.settings, source_topic="resource-changes")
    finally:
        publisher.close()
    figure(f"dlq replay after a broker reset: replayed {replayed} of 5 new letters (before: 0)")
    assert replayed == 5
    assert again == 0
    assert _source_values(case, source) == [f"new-{i}".encode() for i in range(5)]
    assert _dlq_resets() - resets == 5
