"""The dead-letter topic: original bytes, original key and headers, plus ``dlq.*`` headers."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from streams import catalogue, metrics
from streams.publisher import Delivered, Publisher, raw_future

H_ERROR_TYPE = "dlq.error_type"
H_ERROR_MESSAGE = "dlq.error_message"
H_SOURCE_TOPIC = "dlq.source_topic"
H_SOURCE_PARTITION = "dlq.source_partition"
H_SOURCE_OFFSET = "dlq.source_offset"
H_AGENT = "dlq.agent"
H_FAILED_AT = "dlq.failed_at"
H_REASON = "dlq.reason"
DLQ_HEADERS = (
    H_ERROR_TYPE,
    H_ERROR_MESSAGE,
    H_SOURCE_TOPIC,
    H_SOURCE_PARTITION,
    H_SOURCE_OFFSET,
    H_AGENT,
    H_FAILED_AT,
    H_REASON,
)

MAX_MESSAGE = 2000


@dataclass(frozen=True)
class Failure:
    """Why a message failed for good; ``reason`` is a short label for metrics."""

    reason: str  # decode | schema | handler | deadline | permanent | unknown_sender | ...
    error_type: str
    message: str


def failure_of(reason: str, exc: BaseException) -> Failure:
    return Failure(reason, type(exc).__name__, str(exc) or repr(exc))


class DeadLetters:
    """Sends failed messages to ``dead-letters`` and waits for the broker's acknowledgement."""

    def __init__(self, publisher: Publisher, prefix: str) -> None:
        self.publisher = publisher
        self.topic = catalogue.spec("dead-letters").full_name(prefix)

    async def send(
        self,
        *,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes],
        failure: Failure,
        source_topic: str,
        partition: int,
        offset: int,
        agent: str,
    ) -> Delivered:
        items = headers.items() if isinstance(headers, Mapping) else headers
        out = [(k, v) for k, v in items if not k.startswith("dlq.")]
        out += [
            (H_REASON, failure.reason.encode()),
            (H_ERROR_TYPE, failure.error_type.encode()),
            (H_ERROR_MESSAGE, failure.message[:MAX_MESSAGE].encode("utf-8", "replace")),
            (H_SOURCE_TOPIC, source_topic.encode()),
            (H_SOURCE_PARTITION, str(partition).encode()),
            (H_SOURCE_OFFSET, str(offset).encode()),
            (H_AGENT, agent.encode()),
            (H_FAILED_AT, str(int(time.time() * 1000)).encode()),
        ]
        delivered = await raw_future(self.publisher, self.topic, value, key=key, headers=out)
        metrics.DEAD_LETTERS.labels(source_topic, failure.reason).inc()
        return delivered
