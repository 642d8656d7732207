"""A batch's acknowledgements without a callback per success: flush, failures, dead letters."""

from __future__ import annotations

import threading

from confluent_kafka import KafkaError

from streams.relay.acks import BatchAcks


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
