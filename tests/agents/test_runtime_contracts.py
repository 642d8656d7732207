"""Contracts of the Runtime's Protocols, run against the fakes and the real services.

One mixin per Protocol (``EventPublisher``, ``Clock``), one subclass per
implementation; the real publisher talks to the session's broker. The dead-letter
sink's contract is in ``tests/dlq/test_sink_contract.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from confluent_kafka import KafkaError

from streams import tracing
from streams.avro.codec import build_codec
from streams.avro.store import default_store
from streams.clock import Clock, SystemClock
from streams.publisher import Delivered, Publisher
from streams.runtime import EventPublisher
from streams.settings import Settings
from tests.fakes import FakeClock, FakePublisher

TOPIC = "resource-changes"
CHANGE = {
    "action": "created",
    "sender": "Group",
    "instance_id": 1,
    "organization_id": 9,
    "occurred_at": 0,
}


class PublisherContract:
    """What every ``EventPublisher`` guarantees."""

    @pytest.fixture
    def under_test(self) -> tuple[EventPublisher, str]:
        raise NotImplementedError  # (publisher, topic prefix)

    def test_publish_async_returns_the_ack_of_the_prefixed_topic(
        self, under_test: tuple[EventPublisher, str]
    ) -> None:
        pub, prefix = under_test
        delivered = asyncio.run(pub.publish_async(TOPIC, CHANGE, key=9))
        assert isinstance(delivered, Delivered)
        assert delivered.topic == prefix + TOPIC
        assert delivered.offset >= 0

    def test_send_reports_each_ack_once(self, under_test: tuple[EventPublisher, str]) -> None:
        pub, _ = under_test

        async def go() -> list[KafkaError | None]:
            loop = asyncio.get_running_loop()
            acked: list[KafkaError | None] = []
            done = loop.create_future()

            def settle() -> None:
                if not done.done():
                    done.set_result(None)

            def cb(err: KafkaError | None, _msg: Any) -> None:
                acked.append(err)
                loop.call_soon_threadsafe(settle)

            trace = tracing.TraceContext("12" * 16, "34" * 8)
            token = tracing.activate(trace)
            try:
                pub.send(TOPIC, CHANGE, key=9, on_delivery=cb)
            finally:
                tracing.deactivate(token)
            await done
            return acked

        assert asyncio.run(go()) == [None]

    def test_a_value_off_schema_raises_type_error_before_sending(
        self, under_test: tuple[EventPublisher, str]
    ) -> None:
        pub, _ = under_test
        with pytest.raises(TypeError, match="instance_id"):
            pub.send(TOPIC, {**CHANGE, "instance_id": "one"}, key=9)


class TestFakePublisher(PublisherContract):
    @pytest.fixture
    def under_test(self) -> tuple[EventPublisher, str]:
        codec = build_codec(default_store(), None)
        return FakePublisher(prefix="fake.", codec=codec), "fake."


class TestRealPublisher(PublisherContract):
    @pytest.fixture
    def under_test(self, settings: Settings, publisher: Publisher) -> tuple[EventPublisher, str]:
        return publisher, settings.topic_prefix


class ClockContract:
    """What every ``Clock`` guarantees."""

    @pytest.fixture
    def clock(self) -> Clock:
        raise NotImplementedError

    def test_now_is_epoch_seconds(self, clock: Clock) -> None:
        assert clock.now() > 1_600_000_000

    def test_sleep_and_block_move_the_monotonic_clock_forward(self, clock: Clock) -> None:
        start = clock.monotonic()
        asyncio.run(clock.sleep(0.02))
        middle = clock.monotonic()
        clock.block(0.02)
        assert middle - start >= 0.02
        assert clock.monotonic() - middle >= 0.02


class TestFakeClock(ClockContract):
    @pytest.fixture
    def clock(self) -> Clock:
        return FakeClock()


class TestSystemClock(ClockContract):
    @pytest.fixture
    def clock(self) -> Clock:
        return SystemClock()
