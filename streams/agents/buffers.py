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
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

from streams.agents.base import AgentSpec, Message, Mode, RetryPolicy, attach
from streams.buffers.buffer import Buffer, Item
from streams.buffers.models import Increment, NotAllowed, row_key
from streams.buffers.store import PostgresFlushStore
from streams.buffers.window import PartitionWindow, RowSums
from streams.buffers.wire import PlainRows, read_rows
from streams.errors import PermanentFailure
from streams.runtime import Runtime
from streams.silo import REGION_ONLY

log = logging.getLogger(__name__)

NAME = "buffers"
TOPIC: Final = "buffer-increments"
COMPLETIONS: Final = "buffer-completions"
# Messages per handler call. A client's message may carry up to 1,000 rows
# (streams/incr_coalesce.py): smaller batches keep the flusher, which shares this
# event loop, from waiting behind one long batch.
BATCH = 500
BATCH_WITHIN = 0.1


def _increments(msg: Message) -> tuple[list[Increment], PlainRows | None]:
    """The rows of one message (a client sends one row, or several of one partition):
    those checked row by row, and the plain ones column by column."""
    try:
        return read_rows(msg.value)
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


class BufferHolder:
    """``Mode.HOLD`` for the buffer: admit fresh messages, hold them until their flush
    commits (the buffer acknowledges them then), run the flusher while consuming."""

    def __init__(self, app: Any, buffer: Buffer, streams: list[Any]) -> None:
        self.app = app
        self.buffer = buffer
        self.streams = streams  # the agent's stream, once it runs (acks go through it)

    @asynccontextmanager
    async def consuming(self, stream: Any) -> AsyncIterator[None]:
        self.streams.append(stream)
        flusher = asyncio.ensure_future(self.buffer.run(urgent=lambda: _urgent(self.app)))
        flusher.add_done_callback(lambda task: _crash_on_error(self.app, task))
        try:
            yield
        finally:
            flusher.cancel()

    @asynccontextmanager
    async def admitting(self, events: Sequence[Any]) -> AsyncIterator[Sequence[Any]]:
        items = [
            Item(e.message.partition, e.message.offset, e, _ms(e.message.timestamp)) for e in events
        ]
        async with self.buffer.lock:
            fresh = await self.buffer.admit(items)
            yield [i.token for i in fresh]
            self.buffer.hold(fresh)


def _ms(timestamp: float | None) -> int | None:
    """Faust's timestamp (seconds, a float) back to the log's milliseconds."""
    return None if timestamp is None else round(timestamp * 1000)


def install(app: Any, runtime: Runtime) -> None:
    settings = runtime.settings
    topic_name = runtime.topic(TOPIC)
    streams: list[Any] = []

    async def ack(tokens: Sequence[object]) -> None:
        for event in tokens:
            await streams[-1].ack(event)

    async def emit(rows: Sequence[tuple[PartitionWindow, RowSums]]) -> None:
        pending = [
            runtime.publisher.publish_async(
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
        await handle_batch([msg])

    async def handle_batch(msgs: Sequence[Message]) -> None:
        rows = [_increments(msg) for msg in msgs]  # all valid, or none added
        for msg, (incs, plain) in zip(msgs, rows, strict=True):
            for inc in incs:
                buffer.add(msg.partition, msg.offset, inc)
            if plain is not None:
                buffer.add_plain(msg.partition, msg.offset, plain)

    spec = AgentSpec(
        NAME,
        TOPIC,
        REGION_ONLY,
        handle,
        batch_handler=handle_batch,
        retry=RetryPolicy(times=0),
        deadline=None,
        batch_size=BATCH,
        batch_within=BATCH_WITHIN,
        mode=Mode.HOLD,
        holder=BufferHolder(app, buffer, streams),
    )
    if attach(app, runtime, spec) is None:
        return

    async def on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        buffer.forget([tp.partition for tp in revoked if tp.topic == topic_name])

    app.on_partitions_revoked.connect(on_revoked)


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
