"""The ``DeadLetterSink`` contract, run against the fake and the Kafka sink (real broker).

Like arroyo's broker tests: one mixin of tests, one subclass per implementation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from streams.dlq import headers as dl
from streams.dlq import replay
from streams.dlq.headers import Failure, FailureReason, Letter
from streams.dlq.sink import DeadLetterSink, KafkaDeadLetterSink
from streams.publisher import Publisher
from streams.settings import Settings
from tests.fakes import FakeDeadLetterSink

Stored = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


@dataclass
class SinkUnderTest:
    sink: DeadLetterSink
    stored: Callable[[], list[Stored]]  # every letter stored so far: value, key, headers


def letter(n: int, reason: FailureReason = FailureReason.HANDLER, **kw: object) -> Letter:
    fields: dict[str, object] = {
        "value": f"value-{n}".encode(),
        "key": f"key-{n}".encode(),
        "headers": [("streams-message-id", b"m"), ("dlq.reason", b"stale")],
        "failure": Failure(reason, "ValueError", f"failed {n}"),
        "source": "pfx.resource-changes",
        "partition": 2,
        "offset": 40 + n,
        "agent": "contract",
    }
    fields.update(kw)
    return Letter(**fields)  # type: ignore[arg-type]


class DeadLetterSinkContract:
    """What every ``DeadLetterSink`` guarantees."""

    @pytest.fixture
    def under_test(self) -> SinkUnderTest:
        raise NotImplementedError

    def test_send_returns_once_the_letter_is_stored_with_contract_headers(
        self, under_test: SinkUnderTest
    ) -> None:
        asyncio.run(under_test.sink.send(letter(1)))
        [(value, key, headers)] = under_test.stored()
        assert (value, key) == (b"value-1", b"key-1")
        got = dict(headers)
        assert got["streams-message-id"] == b"m"  # original headers kept
        assert got[dl.H_REASON] == b"handler"  # the stale dlq.reason was replaced
        assert [k for k, _ in headers].count(dl.H_REASON) == 1
        assert got[dl.H_ERROR_TYPE] == b"ValueError"
        assert got[dl.H_ERROR_MESSAGE] == b"failed 1"
        assert got[dl.H_SOURCE_TOPIC] == b"pfx.resource-changes"
        assert (got[dl.H_SOURCE_PARTITION], got[dl.H_SOURCE_OFFSET]) == (b"2", b"41")
        assert got[dl.H_AGENT] == b"contract"
        assert int(got[dl.H_FAILED_AT]) > 1_600_000_000_000

    def test_letters_of_one_key_keep_their_order_reason_and_empty_values(
        self, under_test: SinkUnderTest
    ) -> None:
        async def both() -> None:
            await under_test.sink.send(letter(1, FailureReason.http(410)))
            # Same key: one partition, so the order is kept (across keys it is not).
            again = letter(2, FailureReason.DECODE, key=b"key-1", value=None, truncated=True)
            await under_test.sink.send(again)

        asyncio.run(both())
        stored = under_test.stored()
        assert [dict(h)[dl.H_REASON] for _, _, h in stored] == [b"http_410", b"decode"]
        assert stored[1][0] is None
        assert dict(stored[1][2])[dl.H_TRUNCATED] == b"1"


class TestFakeSink(DeadLetterSinkContract):
    @pytest.fixture
    def under_test(self) -> SinkUnderTest:
        fake = FakeDeadLetterSink()

        def stored() -> list[Stored]:
            return [(x.value, x.key, h) for x, h in zip(fake.letters, fake.stored, strict=True)]

        return SinkUnderTest(fake, stored)


class TestKafkaSink(DeadLetterSinkContract):
    @pytest.fixture
    def under_test(self, settings: Settings, publisher: Publisher) -> SinkUnderTest:
        sink = KafkaDeadLetterSink(publisher, settings.topic_prefix)

        def stored() -> list[Stored]:
            return [(d.value, d.key, list(d.headers)) for d in replay.read(settings)]

        return SinkUnderTest(sink, stored)
