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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streams.agents.base import Message
from streams.agents.dead_letters import Failure
from streams.runtime import Runtime

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0


@dataclass(frozen=True)
class Outgoing:
    topic: str  # catalogue name
    value: Any
    key: str


async def publish_all(runtime: Runtime, items: Sequence[Outgoing], *, agent: str) -> None:
    """Publish every item and wait for all acks; failed ones are re-sent with backoff."""
    pending = list(items)
    backoff = 0.5
    while pending:
        futures = [runtime.publisher.send_future(o.topic, o.value, key=o.key) for o in pending]
        results = await asyncio.gather(*futures, return_exceptions=True)
        errors = [(o, r) for o, r in zip(pending, results, strict=True) if isinstance(r, Exception)]
        failed = [o for o, _ in errors]
        if errors:
            log.error(
                "agent.publish.failed",
                extra={"agent": agent, "failed": len(errors), "error": repr(errors[0][1])},
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
        pending = failed


async def dead_letter(runtime: Runtime, agent: str, msg: Message, failure: Failure) -> None:
    """Send ``msg`` to the dead-letter topic; keeps trying until the broker acknowledges."""
    backoff = 0.5
    while True:
        try:
            await runtime.dead_letters.send(
                value=msg.raw,
                key=msg.key,
                headers=msg.headers,
                failure=failure,
                source_topic=runtime.topic(msg.topic),
                partition=msg.partition,
                offset=msg.offset,
                agent=agent,
            )
        except Exception as exc:
            log.error("agent.dead_letter.failed", extra={"agent": agent, "error": repr(exc)})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
        else:
            log.info(
                "agent.dead_lettered",
                extra={"agent": agent, "reason": failure.reason, "error": failure.message},
            )
            return
