"""Configs are published as a batch acknowledged by one flush (no report per message):
every config reaches the topic and is counted; a refusal or a flush that leaves
messages behind fails the batch, so the recompute is retried."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any, Final

import pytest
from confluent_kafka import KafkaError

from streams import tracing
from streams.agents.project_configs import configs_publisher
from streams.avro.codec import build_codec
from streams.avro.store import default_store
from streams.errors import MessageTooLarge, PublishError, SchemaMismatch
from streams.metrics import REGISTRY
from streams.projectconfigs.documents import disabled_record
from streams.projectconfigs.publish import send_all
from streams.publisher import Publisher
from streams.settings import Settings
from tests.buffers import support as s

NOW = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
TOPIC: Final = "project-configs"


def published() -> float:
    return REGISTRY.get_sample_value("streams_published_total", {"topic": TOPIC}) or 0.0


def items(n: int, prefix: str = "key") -> list[tuple[str, Any, list[tuple[str, bytes]]]]:
    return [
        (f"{prefix}-{i}", disabled_record(f"{prefix}-{i}", NOW), [("n", b"%d" % i)])
        for i in range(n)
    ]


def test_a_batch_reaches_the_topic_and_is_counted_without_a_report_per_message(
    settings: Settings,
) -> None:
    publisher = configs_publisher(settings, build_codec(default_store(), None))
    assert publisher.reports_only_errors
    before = published()
    try:
        asyncio.run(send_all(publisher, TOPIC, items(300)))
    finally:
        publisher.close()
    sent = {key: headers for key, _, headers in s.read_topic(settings, TOPIC)}
    assert {f"key-{i}".encode() for i in range(300)} <= set(sent)
    assert published() - before == 300
    # Each message has its own headers and its own message id; the trace header parses.
    assert sent[b"key-42"]["n"] == b"42"
    ids = {sent[f"key-{i}".encode()][tracing.H_MESSAGE_ID] for i in range(300)}
    assert len(ids) == 300
    assert tracing.parse_traceparent(sent[b"key-7"][tracing.H_TRACEPARENT]) is not None


class RefusingProducer:
    """A producer that refuses the keys it is told to (reported as librdkafka does:
    before the message leaves its queue) and may leave messages unacknowledged."""

    def __init__(self, refuse: set[bytes], unacked: int = 0) -> None:
        self.refuse = refuse
        self.unacked = unacked
        self.reports: list[Callable[[], None]] = []

    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        callback = kwargs["on_delivery"]
        if key in self.refuse:
            err = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
            self.reports.append(lambda: callback(err, None))

    def poll(self, timeout: float = 0.0) -> int:
        return 0

    def flush(self, timeout: float = 0.0) -> int:
        for report in self.reports:
            report()
        self.reports.clear()
        return self.unacked


def only_errors_publisher(settings: Settings, producer: RefusingProducer) -> Publisher:
    overrides: dict[str, Any] = {"delivery.report.only.error": True}
    return Publisher(settings, producer=producer, **overrides)


def test_a_refused_config_or_an_unfinished_flush_fails_the_batch(settings: Settings) -> None:
    refusing = only_errors_publisher(settings, RefusingProducer({b"key-7", b"key-9"}))
    before = published()
    with pytest.raises(PublishError, match=r"2 of 10 refused"):
        asyncio.run(send_all(refusing, TOPIC, items(10)))
    slow = RefusingProducer(set(), unacked=3)
    unfinished = only_errors_publisher(settings, slow)
    with pytest.raises(PublishError, match="3 messages not acknowledged"):
        asyncio.run(send_all(unfinished, TOPIC, items(10)))
    assert published() == before  # nothing counted as acknowledged
    slow.unacked = 0  # acknowledged at last: the publishers close cleanly
    for p in (refusing, unfinished):
        p.close()


def test_a_batch_with_a_value_that_does_not_fit_enqueues_nothing(settings: Settings) -> None:
    class Recording(RefusingProducer):
        def produce(self, topic: str, value: Any = None, key: Any = None, **kw: Any) -> None:
            sent.append(key)

    sent: list[bytes] = []
    publisher = only_errors_publisher(settings, Recording(set()))
    try:
        bad = [*items(5), ("key-bad", {"not": "a config"}, [])]
        with pytest.raises(SchemaMismatch):
            asyncio.run(send_all(publisher, TOPIC, bad))
        huge = [*items(5), ("key-huge", disabled_record("x" * 2_000_000, NOW), [])]
        with pytest.raises(MessageTooLarge, match="exceeds the topic's limit"):
            asyncio.run(send_all(publisher, TOPIC, huge))
        assert sent == []  # checked and encoded before any is enqueued
        asyncio.run(send_all(publisher, TOPIC, items(5)))
        assert sent == [f"key-{i}".encode() for i in range(5)]
    finally:
        publisher.close()
