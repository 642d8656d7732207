"""A batch's acknowledgements without a callback per success: flush, failures, dead letters."""

from __future__ import annotations

import threading

from confluent_kafka import KafkaError, Message

from streams.relay.acks import BatchAcks
from streams.tracing import H_MESSAGE_ID


class Flush:
    """A producer's flush: how many messages are still unanswered when it returns."""

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining

    def flush(self, timeout: float = 0) -> int:
        return self.remaining


def test_a_flushed_batch_is_acknowledged_except_the_messages_reported_failed() -> None:
    acks = BatchAcks()
    callbacks = [acks.on_message(i) for i in range(3)]
    callbacks[1](KafkaError(KafkaError._MSG_TIMED_OUT), None)  # type: ignore[arg-type]
    callbacks[2](None, None)  # type: ignore[arg-type]  # a producer reporting successes too
    assert acks.wait(Flush(0), 1.0)
    assert [acks.ok(i) for i in range(3)] == [True, False, True]
    assert "timed out" in acks.error(1).lower()
    assert not acks.fatal


def test_nothing_counts_as_acknowledged_when_the_flush_left_messages_unanswered() -> None:
    acks = BatchAcks()
    acks.on_message(0)
    assert not acks.wait(Flush(1), 0.1)
    assert not acks.ok(0)
    assert acks.error(0) == "no acknowledgement"


def test_a_fenced_producer_is_reported_fatal() -> None:
    acks = BatchAcks()
    acks.on_message(0)(KafkaError(KafkaError._FENCED), None)  # type: ignore[arg-type]
    acks.wait(Flush(0), 0.1)
    assert acks.fatal and not acks.ok(0)


def test_a_dead_letter_counts_only_once_its_own_success_is_reported() -> None:
    acks = BatchAcks()
    report = acks.on_letter(0)
    refused = acks.on_letter(1)
    acks.settle_letter(1, "dead-letter refused: queue full")
    acks.settle_letter(2, None)  # kept in PostgreSQL: settled at once
    assert not acks.wait(Flush(0), 0.1)  # the letter's report has not come
    assert not acks.ok(0) and not acks.ok(1) and acks.ok(2)
    threading.Timer(0.05, report, (None, None)).start()
    assert acks.wait(Flush(0), 5.0)
    assert acks.ok(0) and not acks.ok(1)
    del refused


def _message(message_id: bytes | None) -> Message:
    headers: list[tuple[str, str | bytes | None]] = []
    if message_id is not None:
        headers.append((H_MESSAGE_ID, message_id))
    return Message(topic="t", partition=0, offset=1, key=b"k", value=b"v", headers=headers)


def test_the_shared_callback_finds_a_failed_message_by_its_message_id() -> None:
    """One callback for the whole batch: a failure lands on the message whose id is the
    batch's stem + its index, and only on it."""
    acks = BatchAcks()
    report = acks.reports(b"s" * 24)
    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT)
    report(timed_out, _message(b"s" * 24 + b"%08x" % 11))
    report(None, _message(b"s" * 24 + b"%08x" % 12))  # a producer reporting successes too
    assert acks.wait(Flush(0), 1.0)
    assert [i for i in range(20) if not acks.ok(i)] == [11]
    assert "timed out" in acks.error(11).lower()


def test_a_report_without_a_message_is_about_the_message_being_produced() -> None:
    acks = BatchAcks()
    report = acks.reports(b"s" * 24)
    report.producing = 4
    report(KafkaError(KafkaError._MSG_TIMED_OUT), None)
    acks.wait(Flush(0), 0.1)
    assert [i for i in range(8) if not acks.ok(i)] == [4]


def test_a_failure_the_batch_cannot_place_fails_the_whole_batch() -> None:
    """Another stem, no message id, a malformed one, a report before any produce: nothing
    of the batch counts as acknowledged (it is all sent again), and each says why."""
    for message in (
        _message(b"o" * 24 + b"%08x" % 1),
        _message(None),
        _message(b"s" * 24 + b"zzzzzzzz"),
        None,
    ):
        acks = BatchAcks()
        report = acks.reports(b"s" * 24)
        report(KafkaError(KafkaError._FENCED), message)
        acks.wait(Flush(0), 0.1)
        assert not any(acks.ok(i) for i in range(5)), message
        assert "a message of the batch failed" in acks.error(3)
        assert acks.fatal
