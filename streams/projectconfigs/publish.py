"""Publish a batch of records and wait for all of them with one wake-up of the event loop.

A future per record costs a thread hop (``call_soon_threadsafe``) and a task per
message; for the configs of one recompute batch (up to thousands) that was a fifth
of the worker's CPU. Here the delivery callbacks count down under a lock, and only
the last one (or the first error) wakes the waiting coroutine.

With a publisher whose producer reports refusals only (``delivery.report.only.error``,
as the configs publisher's), there is no Python call per acknowledged message at all:
the batch is produced, then the producer is flushed once in a thread. librdkafka runs
a refused message's callback before that message leaves its queue, so a flush that
returns with the queue empty and no refusal recorded means every message was
acknowledged (the relay's rule, ``streams/relay/acks.py``). At 100k projects the
per-message reports were about an eighth of the worker's CPU (bench/README.md).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Message

from streams.errors import PublishError
from streams.publisher import Publisher

Item = tuple[str, Any, list[tuple[str, bytes]]]  # (key, value or None, extra headers)


class _Latch:
    def __init__(self, loop: asyncio.AbstractEventLoop, count: int, topic: str) -> None:
        self.loop = loop
        self.left = count
        self.topic = topic
        self.error: str | None = None
        self.done: asyncio.Future[None] = loop.create_future()
        self._lock = threading.Lock()

    def delivered(self, err: KafkaError | None, _msg: Message) -> None:
        with self._lock:
            self.left -= 1
            first_error = err is not None and self.error is None
            if first_error:
                self.error = err.str() if err is not None else ""
            last = self.left == 0
        if first_error or last:
            self.loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        if self.done.done():
            return
        if self.error is not None:
            self.done.set_exception(PublishError(f"{self.topic}: {self.error}"))
        else:
            self.done.set_result(None)


async def send_all(
    publisher: Publisher, topic: str, items: Sequence[Item], timeout: float = 30.0
) -> None:
    """Send every item to ``topic``; returns once all are acknowledged (raises on the first
    refusal: the caller retries the whole batch, which is idempotent per key)."""
    await start_all(publisher, topic, items, timeout).acknowledged()


class Sent:
    """A batch handed to the producer; ``acknowledged()`` waits for the broker.
    ``values`` are the messages' values as encoded, in order (None: a tombstone)."""

    values: Sequence[bytes | None] = ()

    async def acknowledged(self) -> None:
        return None


def start_all(
    publisher: Publisher, topic: str, items: Sequence[Item], timeout: float = 30.0
) -> Sent:
    """Check, encode and enqueue every item now (in order, before anything queued after
    this call); the acknowledgements are awaited later. Raises before enqueueing
    anything if an item does not fit."""
    if not items:
        return Sent()
    if publisher.reports_only_errors:
        return _Flushed(publisher, topic, items, timeout)
    latch = _Latch(asyncio.get_running_loop(), len(items), topic)
    return _Latched(latch, publisher.send_batch(topic, items, latch.delivered))


class _Latched(Sent):
    def __init__(self, latch: _Latch, values: Sequence[bytes | None]) -> None:
        self.latch, self.values = latch, values

    async def acknowledged(self) -> None:
        await self.latch.done


class _Flushed(Sent):
    """``send_all`` for a producer that reports refusals only: one flush, no report per
    acknowledged message. The publisher must not be shared with other senders: the
    flush also waits for their messages (those of a later batch of the same sender
    included, which is only slower)."""

    def __init__(
        self, publisher: Publisher, topic: str, items: Sequence[Item], timeout: float
    ) -> None:
        self.publisher, self.topic, self.count, self.timeout = publisher, topic, len(items), timeout
        self.refused: list[str] = []
        self.values = publisher.send_batch(topic, items, self._report)

    def _report(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:  # a success has no report: it is known at the flush
            self.refused.append(err.str())

    async def acknowledged(self) -> None:
        left = await asyncio.to_thread(self.publisher.producer.flush, self.timeout)
        if self.refused:
            raise PublishError(
                f"{self.topic}: {self.refused[0]} ({len(self.refused)} of {self.count} refused)"
            )
        if left:
            raise PublishError(
                f"{self.topic}: {left} messages not acknowledged within {self.timeout}s"
            )
        self.publisher.count_published(self.topic, self.count)
