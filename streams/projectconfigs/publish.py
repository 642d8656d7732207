"""Publish a batch of records and wait for all of them with one wake-up of the event loop.

A future per record costs a thread hop (``call_soon_threadsafe``) and a task per
message; for the configs of one recompute batch (up to thousands) that was a fifth
of the worker's CPU. Here the delivery callbacks count down under a lock, and only
the last one (or the first error) wakes the waiting coroutine.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, Message

from streams.errors import PublishError
from streams.publisher import Publisher

Item = tuple[str, Any, Mapping[str, str]]  # (key, value or None, headers)


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


async def send_all(publisher: Publisher, topic: str, items: Sequence[Item]) -> None:
    """Send every item to ``topic``; returns once all are acknowledged (raises on the first
    refusal: the caller retries the whole batch, which is idempotent per key)."""
    if not items:
        return
    latch = _Latch(asyncio.get_running_loop(), len(items), topic)
    for key, value, headers in items:
        publisher.send(topic, value, key=key, headers=headers, on_delivery=latch.delivered)
    await latch.done
