"""Sending a message later from an agent: through ``scheduled_messages``.

An agent that wants to look at something again in minutes (a row not committed yet,
a webhook target that failed, a job to retry) stores the message for later instead of
waiting: the relay's pump publishes it at its due time, so no partition is held up
meanwhile and a crash of the worker loses nothing. Every item has a dedupe id derived
from the message it answers, so handling that message again (a redelivery after a
crash, the wrapper's one-by-one fallback) stores nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from streams import tracing
from streams.agents.wrapper.trace import activated
from streams.delayed.store import Prepared, insert_many_async
from streams.runtime import Runtime
from streams.tracing import TraceContext


@dataclass(frozen=True)
class Later:
    """One value for ``topic`` (catalogue name), due ``delay`` seconds from now."""

    topic: str
    value: object
    key: str
    delay: float
    dedupe_id: str
    attempt: int = 1  # the ``streams-attempt`` header of the message sent
    headers: Mapping[str, str] = field(default_factory=dict)
    trace: TraceContext | None = None


def prepare(runtime: Runtime, item: Later) -> Prepared:
    """``item`` encoded as the broker will receive it (``TypeError`` if it does not fit)."""
    with activated(item.trace):  # the message continues the trace it came from
        meta = tracing.metadata_headers(runtime.settings.producer_name, item.attempt)
    extra = [(k, v.encode()) for k, v in item.headers.items()]
    value = runtime.codec.encode(item.topic, item.value)
    return Prepared(runtime.topic(item.topic), value, item.key.encode(), meta + extra)


async def store_later(runtime: Runtime, items: Sequence[Later]) -> None:
    """Store ``items`` in one transaction; a dedupe id already stored is skipped.

    Raises on a database error (nothing stored): callers do this before any other
    output, so the wrapper's retry cannot repeat side effects.
    """
    if not items:
        return
    msgs = [(prepare(runtime, i), max(0.0, i.delay), i.dedupe_id) for i in items]
    pool = await runtime.pool()
    async with pool.connection() as conn:
        await insert_many_async(conn, msgs)
