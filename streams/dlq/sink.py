"""Where dead letters go: a ``DeadLetterSink`` Protocol and the Kafka sink.

A message may only be committed past once the dead-letter topic has it, so the
sink's ``send`` (async) and ``send_sync`` keep trying until the broker acknowledges,
with backoff, one ``dead_letter.send.failed`` error log line and one
``streams_publish_errors_total{topic="dead-letters",reason="broker"}`` per failed
try. ``produce`` only enqueues, for writers that settle a whole batch's
acknowledgements themselves (the relay reschedules what was not acknowledged).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Final, Protocol

from confluent_kafka import KafkaError
from confluent_kafka import Message as KafkaMessage

from streams import catalogue, metrics
from streams.clock import SYSTEM_CLOCK, Clock
from streams.dlq.headers import Letter
from streams.errors import PublishError
from streams.kafka_config import OnDelivery, RawSender

log = logging.getLogger(__name__)

TOPIC: Final = "dead-letters"
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0


class DeadLetterSink(Protocol):
    """Accepts dead letters; ``send`` returns once the letter is stored for good."""

    async def send(self, letter: Letter) -> None:
        """Store ``letter``; keeps trying until it is acknowledged."""
        ...


class KafkaDeadLetterSink:
    """Writes letters to the (prefixed) ``dead-letters`` topic through a producer."""

    def __init__(self, sender: RawSender, prefix: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.sender = sender
        self.topic = catalogue.spec(TOPIC).full_name(prefix)
        self.clock = clock
        self._failed_try = metrics.PUBLISH_ERRORS.labels(TOPIC, "broker")

    def produce(self, letter: Letter, on_delivery: OnDelivery) -> None:
        """Enqueue ``letter``; the broker's answer arrives at ``on_delivery``.

        Counts ``streams_dead_letters_total`` once acknowledged. Raises what the
        producer raises (e.g. ``KafkaException``) when it refuses the message.
        """
        counter = metrics.DEAD_LETTERS.labels(letter.source, letter.failure.reason.value)

        def delivered(err: KafkaError | None, msg: KafkaMessage) -> None:
            if err is None:
                counter.inc()
            on_delivery(err, msg)

        self.sender.send_raw(
            self.topic,
            letter.value,
            key=letter.key,
            headers=letter.wire_headers(),
            on_delivery=delivered,
        )

    async def send(self, letter: Letter) -> None:
        """Send ``letter`` and wait for the acknowledgement, trying again until it comes."""
        backoff = FIRST_BACKOFF
        while True:
            try:
                await self._try(letter)
                return
            except Exception as exc:
                self._failed(letter, exc)
            await self.clock.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def send_sync(self, letter: Letter, *, timeout: float = 30.0) -> None:
        """Blocking ``send``: each try waits up to ``timeout`` for the acknowledgement."""
        backoff = FIRST_BACKOFF
        while True:
            try:
                self._try_sync(letter, timeout)
                return
            except Exception as exc:
                self._failed(letter, exc)
            self.clock.block(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _try(self, letter: Letter) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle(err: KafkaError | None) -> None:
            if done.done():
                return
            if err is None:
                done.set_result(None)
            else:
                done.set_exception(PublishError(f"{self.topic}: {err.str()}"))

        def on_delivery(err: KafkaError | None, _msg: KafkaMessage) -> None:
            loop.call_soon_threadsafe(settle, err)

        self.produce(letter, on_delivery)
        await done

    def _try_sync(self, letter: Letter, timeout: float) -> None:
        answered = threading.Event()
        errors: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: KafkaMessage) -> None:
            if err is not None:
                errors.append(err.str())
            answered.set()

        self.produce(letter, on_delivery)
        if not answered.wait(timeout):
            raise PublishError(f"{self.topic}: no acknowledgement within {timeout}s")
        if errors:
            raise PublishError(f"{self.topic}: {errors[0]}")

    def _failed(self, letter: Letter, exc: Exception) -> None:
        self._failed_try.inc()
        log.error(
            "dead_letter.send.failed",
            extra={
                "agent": letter.agent,
                "source": letter.source,
                "offset": letter.offset,
                "reason": letter.failure.reason.value,
                "error": repr(exc),
            },
        )
