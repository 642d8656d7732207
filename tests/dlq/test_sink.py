"""The Kafka sink keeps trying until acknowledged (on a fake producer and clock)."""

from __future__ import annotations

import asyncio

import pytest

from streams.dlq.headers import Failure, FailureReason, Letter
from streams.dlq.sink import KafkaDeadLetterSink
from streams.metrics import REGISTRY
from tests.fakes import FakeClock, FakePublisher

LETTER = Letter(b"v", b"k", [], Failure(FailureReason.HANDLER, "E", "m"), "src", 0, 1, "sink-test")


def failed_tries() -> float:
    labels = {"topic": "dead-letters", "reason": "broker"}
    return REGISTRY.get_sample_value("streams_publish_errors_total", labels) or 0.0


@pytest.mark.allow_errors
def test_send_retries_with_backoff_until_the_broker_acknowledges(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer, clock = FakePublisher(), FakeClock()
    producer.fail_next = 3
    before = failed_tries()
    asyncio.run(KafkaDeadLetterSink(producer, "", clock=clock).send(LETTER))
    assert [s.value for s in producer.sent] == [b"v"]
    assert clock.sleeps == [0.5, 1.0, 2.0]
    assert failed_tries() == before + 3
    errors = [r for r in caplog.records if r.getMessage() == "dead_letter.send.failed"]
    assert len(errors) == 3
    assert all(r.__dict__["agent"] == "sink-test" for r in errors)


@pytest.mark.allow_errors
def test_send_sync_retries_too() -> None:
    producer, clock = FakePublisher(), FakeClock()
    producer.fail_next = 1
    KafkaDeadLetterSink(producer, "pfx.", clock=clock).send_sync(LETTER)
    assert [s.topic for s in producer.sent] == ["pfx.dead-letters"]
    assert clock.sleeps == [0.5]


def test_http_reasons_are_members_and_other_strings_are_refused() -> None:
    assert FailureReason("http_503") is FailureReason.http(503)
    assert FailureReason.http(503).value == "http_503"
    assert FailureReason("decode") is FailureReason.DECODE
    with pytest.raises(ValueError):
        FailureReason("dlq:decode")
    with pytest.raises(ValueError):
        FailureReason("http_999")
