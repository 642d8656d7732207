"""Buffer agent: ``buffer-increments`` summed per row, flushed to PostgreSQL exactly once.

Topic: ``buffer-increments`` (key = model + filters, so one row is on one partition).
State: ``streams.buffers.buffer.Buffer`` - one flush window per owned partition, in
memory; the source topic, read again from the flush marks kept in PostgreSQL, is
what rebuilds it after a crash (see that module for why messages are acknowledged
only after their flush commits, and why no changelogged table is used).
Handler: validate against the allow-list (else dead letter), add to the window.
Completions of ``signal_only`` rows go to ``buffer-completions``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from streams import catalogue
from streams.agents.base import AgentSpec, InstrumentedAgent, Message, RetryPolicy, from_faust
from streams.buffers.buffer import Buffer, Item
from streams.buffers.models import Increment, NotAllowed, from_wire, row_key
from streams.buffers.store import PostgresFlushStore
from streams.buffers.window import PartitionWindow, RowSums
from streams.errors import PermanentFailure
from streams.runtime import Runtime
from streams.silo import REGION_ONLY

log = logging.getLogger(__name__)

NAME = "buffers"
TOPIC = "buffer-increments"
COMPLETIONS = "buffer-completions"
BATCH = 2000
BATCH_WITHIN = 0.1


def _increment(msg: Message) -> Increment:
    try:
        return from_wire(msg.value)
    except (NotAllowed, KeyError, TypeError, ValueError) as exc:
        raise PermanentFailure(f"increment outside the allow-list: {exc}") from exc


def completion(w: PartitionWindow, row: RowSums) -> dict[str, Any]:
    """The ``buffer-completions`` value of one signal_only row of a flushed window."""
    return {
        "model": row.model.name,
        "filters": dict(row.filters),
        "columns": dict(row.columns),
        "extra": row.extra_values() or None,
        "completed_at": int(time.time() * 1000),
        "increments": row.increments,
        "source_partition": w.partition,
        "first_offset": row.first_offset,
        "last_offset": row.last_offset,
    }


def install(app: Any, runtime: Runtime) -> None:
    settings = runtime.settings
    if not settings.silo_mode.allows(REGION_ONLY):
        runtime.skipped_agents.append(NAME)
        return
    topic_name = runtime.topic(TOPIC)
    streams: list[Any] = []  # the agent's stream, once it runs (acks go through it)

    async def ack(tokens: Sequence[object]) -> None:
        for event in tokens:
            await streams[-1].ack(event)

    async def emit(rows: Sequence[tuple[PartitionWindow, RowSums]]) -> None:
        pending = [
            runtime.publisher.send_future(
                COMPLETIONS, completion(w, r), key=row_key(r.model.name, r.filters)
            )
            for w, r in rows
        ]
        await asyncio.gather(*pending)

    def owns(partition: int) -> bool:
        return any(tp.topic == topic_name and tp.partition == partition for tp in _assigned(app))

    buffer = Buffer(
        PostgresFlushStore(runtime.pool, group=settings.app_id, topic=topic_name),
        interval=settings.buffer_flush_interval,
        ack=ack,
        emit=emit,
        owns=owns,
    )

    async def handle(msg: Message) -> None:
        buffer.add(msg.partition, msg.offset, _increment(msg))

    async def handle_batch(msgs: Sequence[Message]) -> None:
        incs = [_increment(msg) for msg in msgs]  # all valid, or none added
        for msg, inc in zip(msgs, incs, strict=True):
            buffer.add(msg.partition, msg.offset, inc)

    runner = InstrumentedAgent(
        AgentSpec(
            NAME,
            TOPIC,
            REGION_ONLY,
            handle,
            batch_handler=handle_batch,
            retry=RetryPolicy(times=0),
            deadline=None,
        ),
        runtime,
    )
    spec = catalogue.spec(TOPIC)
    topic = app.topic(
        topic_name, partitions=spec.partitions, key_serializer="raw", value_serializer="raw"
    )

    async def buffers(stream: Any) -> None:
        streams.append(stream)
        flusher = asyncio.ensure_future(buffer.run(urgent=lambda: _urgent(app)))
        flusher.add_done_callback(lambda task: _crash_on_error(app, task))
        try:
            # noack_take: the buffer acknowledges each message after its flush commits.
            async for events in stream.noack_take(BATCH, within=BATCH_WITHIN):
                items = [Item(e.message.partition, e.message.offset, e) for e in events]
                async with buffer.lock:
                    fresh = await buffer.admit(items)
                    if fresh:
                        await runner.process([from_faust(i.token) for i in fresh])
                    buffer.hold(fresh)
        finally:
            flusher.cancel()

    buffers.__name__ = buffers.__qualname__ = NAME
    app.agent(topic, name=NAME)(buffers)

    async def on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        buffer.forget([tp.partition for tp in revoked if tp.topic == topic_name])

    app.on_partitions_revoked.connect(on_revoked)
    runtime.agents.append(NAME)


def _assigned(app: Any) -> set[Any]:
    try:
        return set(app.consumer.assignment())
    except Exception:  # consumer not started yet
        return set()


def _urgent(app: Any) -> bool:
    # A rebalance or shutdown waits for every consumed message to be acknowledged
    # (Faust's wait_empty): flush now rather than at the window's end.
    return bool(app.rebalancing or app.should_stop)


_crashing: set[asyncio.Future[Any]] = set()  # keeps the crash task referenced


def _crash_on_error(app: Any, task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("buffers.flusher.crashed", extra={"error": repr(exc)})
        _crashing.add(asyncio.ensure_future(app.crash(exc)))
