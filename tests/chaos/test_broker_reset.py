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
from streams.incr_coalesce import coalescer_for
from streams.metrics import REGISTRY
from streams.offsets import true_end_offsets
from streams.publisher import Publisher
from tests.buffers import support as bs
from tests.chaos.support import Case, figure
from tests.support import harness

ENV = {"STREAMS_AGENTS": "buffers", "STREAMS_BUFFER_FLUSH_INTERVAL": "0.5"}


def _send(
    case: Case, ids: list[int], expected: Counter[int], n: int, *, coalesce: bool = True
) -> None:
    publisher = Publisher(case.settings)
    if not coalesce:
        coalescer_for(publisher, 0)  # one message per call
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


def _log_ends(case: Case) -> dict[int, int]:
    topic = catalogue.spec("buffer-increments").full_name(case.settings.topic_prefix)
    consumer = Consumer(kafka_config.consumer(case.settings, f"chaos-ends-{uuid.uuid4()}"))
    try:
        n = len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = true_end_offsets(consumer, [(topic, p) for p in range(n)])
    finally:
        consumer.close()
    return {p: hi for (_, p), (_, hi) in ends.items()}


@pytest.mark.allow_errors  # marks.reset.detected is an error log, by design
def test_a_new_log_that_grew_past_the_old_marks_before_the_worker_came_is_applied(
    case: Case, processes: list[harness.Proc], tmp_path: Path
) -> None:
    """The hard order: the new log is longer than the old marks when the worker first
    reads them, so "the mark is beyond the end" cannot tell the logs apart; the
    timestamp kept with each mark (of the record below it) does."""
    ids = bs.seed_groups(case.dsn, 40)
    expected: Counter[int] = Counter()
    worker = harness.start_worker(case.settings, tmp_path / "w1.log", env=ENV)
    processes.append(worker)
    _send(case, ids, expected, 40, coalesce=False)
    harness.wait_for(lambda: bs.times_seen(case.dsn) == dict(expected), 90, 0.2, "40 applied")
    worker.stop()
    old_marks = {p: nxt for p, nxt, _, _ in bs.marks(case.dsn)}

    case.stack.broker_restart()
    topics.create_all(case.settings)
    _send(case, ids, expected, 400, coalesce=False)  # before any worker reads the marks
    ends = _log_ends(case)
    assert all(ends.get(p, 0) >= mark for p, mark in old_marks.items()), (old_marks, ends)
    worker = harness.start_worker(case.settings, tmp_path / "w2.log", env=ENV)
    processes.append(worker)

    def applied() -> int:
        return sum(bs.times_seen(case.dsn).values()) - 40

    harness.wait_for(lambda: applied() == 400, 60, 0.2, "the 400 new increments applied")
    figure(f"broker reset, new log past the old marks: {applied()} of 400 applied")
    assert bs.times_seen(case.dsn) == dict(expected)
    assert _resets(case.dsn) == len(old_marks)
    assert "other_record" in worker.output()


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
