"""Output helpers for batch handlers that decide the fate of each message themselves.

A batch handler must not raise once it has produced side effects (the wrapper would
then re-run the batch one by one and repeat them), so its outputs are sent with
these helpers, which keep trying until the broker acknowledges: ``dead_letter``
sends one message's original bytes to ``dead-letters`` exactly as the agent wrapper
would, and ``publish_all`` publishes many values and waits for every ack.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError
from confluent_kafka import Message as KafkaMessage

from streams.agents.base import Message
from streams.agents.wrapper.message import RawEvent
from streams.agents.wrapper.trace import activated
from streams.dlq.headers import Failure, Letter
from streams.runtime import Runtime
from streams.tracing import TraceContext

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0


@dataclass(frozen=True)
class Outgoing:
    """One value a batch handler publishes, in the trace of the message it came from."""

    topic: str  # catalogue name
    value: Any
    key: str
    trace: TraceContext | None = None


class _Acks:
    """Counts a batch's delivery reports in the producer's poll thread and wakes the
    event loop once, when the last one is in (not once per message)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, items: Sequence[Outgoing]) -> None:
        self.loop = loop
        self.left = len(items)
        self.failed: list[tuple[Outgoing, str]] = []
        self.records: dict[int, KafkaMessage] = {}  # item index -> its delivery report
        self.done: asyncio.Future[None] = loop.create_future()
        self._lock = threading.Lock()

    def callback(
        self, item: Outgoing, index: int = -1
    ) -> Callable[[KafkaError | None, KafkaMessage], None]:
        def on_delivery(err: KafkaError | None, msg: KafkaMessage) -> None:
            with self._lock:
                if err is not None:
                    self.failed.append((item, err.str()))
                elif index >= 0:
                    self.records[index] = msg
                self.left -= 1
                last = self.left == 0
            if last:
                self.loop.call_soon_threadsafe(self._settle)

        return on_delivery

    def _settle(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def publish_all(
    runtime: Runtime, items: Sequence[Outgoing], *, agent: str, keep: bool = False
) -> list[RawEvent]:
    """Publish every item and wait for all acks; failed ones are re-sent with backoff.
    With ``keep``, returns the acknowledged records as a consumer would read them
    (topic, partition, offset, bytes, headers): see ``wrapper/handoff.py``."""
    pending = list(items)
    kept: list[RawEvent] = []
    backoff = 0.5
    while pending:
        acks = _Acks(asyncio.get_running_loop(), pending)
        sent: list[Sequence[tuple[str, bytes]] | None] = []
        for i, o in enumerate(pending):
            # Each output continues its own message's trace (a batch spans many).
            with activated(o.trace):
                headers = runtime.publisher.send(
                    o.topic, o.value, key=o.key, on_delivery=acks.callback(o, i if keep else -1)
                )
            if keep:
                sent.append(headers)
        await acks.done
        for i, record in acks.records.items():
            kept.append(_consumed(record, sent[i] or []))
        if acks.failed:
            log.error(
                "agent.publish.failed",
                extra={"agent": agent, "failed": len(acks.failed), "error": acks.failed[0][1]},
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
        pending = [o for o, _ in acks.failed]
    return kept


def _consumed(record: KafkaMessage, headers: Sequence[tuple[str, bytes]]) -> RawEvent:
    topic, partition, offset = record.topic(), record.partition(), record.offset()
    assert topic is not None and partition is not None and offset is not None
    key = record.key()
    return RawEvent(
        topic,
        partition,
        offset,
        key.encode() if isinstance(key, str) else key,
        record.value(),
        list(headers),
        record.timestamp()[1] / 1000.0,
    )


async def dead_letter(runtime: Runtime, agent: str, msg: Message, failure: Failure) -> None:
    """Send ``msg`` to the dead-letter topic; returns once the broker acknowledged it."""
    source = runtime.topic(msg.topic)
    letter = Letter(
        msg.raw, msg.key, msg.headers, failure, source, msg.partition, msg.offset, agent
    )
    await runtime.dead_letters.send(letter)
    log.info(
        "agent.dead_lettered",
        extra={"agent": agent, "reason": failure.reason.value, "error": failure.message},
    )
