"""Batches of what is ready (streams/agents/wrapper/ready.py): a lone event is handled
at once, events arriving while a batch is handled form the next batch (up to its
size), every event is acknowledged after its batch, in order, and a handler error
stops the agent. Workers run it for batch_within=0 agents consumed through Faust
(STREAMS_DIRECT_CONSUMERS=0); direct agents batch in streams/agents/wrapper/direct.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from streams.agents.wrapper.ready import consume_ready


class FakeStream:
    """What consume_ready uses of a Faust stream: noack(), events(), ack()."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[int | None] = asyncio.Queue()
        self.acked: list[int] = []

    def noack(self) -> FakeStream:
        return self

    async def events(self) -> AsyncIterator[int]:
        while (item := await self.queue.get()) is not None:
            yield item

    async def ack(self, event: int) -> bool:
        self.acked.append(event)
        return True


def test_lone_events_go_at_once_and_a_backlog_forms_batches() -> None:
    async def main() -> list[list[int]]:
        stream = FakeStream()
        batches: list[list[int]] = []
        release = asyncio.Event()

        async def process(events: Sequence[Any]) -> None:
            batches.append(list(events))
            if len(batches) == 1:
                await release.wait()  # a slow first batch: the next ones queue up

        task = asyncio.ensure_future(consume_ready(stream, 3, process))
        stream.queue.put_nowait(1)
        for _ in range(50):
            await asyncio.sleep(0)
        assert batches == [[1]]  # no timer: handled as soon as it was read
        for n in range(2, 9):
            stream.queue.put_nowait(n)
        for _ in range(50):
            await asyncio.sleep(0)
        assert stream.acked == []  # acknowledged only once handled
        release.set()
        stream.queue.put_nowait(None)
        await asyncio.wait_for(task, 2)
        assert stream.acked[:1] == [1]
        return batches

    batches = asyncio.run(main())
    assert batches[0] == [1]
    assert all(len(b) <= 3 for b in batches)
    assert [n for b in batches for n in b][:4] == [1, 2, 3, 4]
    assert len(batches[1]) == 3  # filled while the first was handled


def test_every_event_is_acknowledged_in_order_after_its_batch() -> None:
    async def main() -> FakeStream:
        stream = FakeStream()
        handled: list[int] = []

        async def process(events: Sequence[Any]) -> None:
            assert not set(events) & set(stream.acked)
            handled.extend(events)

        task = asyncio.ensure_future(consume_ready(stream, 10, process))
        for n in range(100):
            stream.queue.put_nowait(n)
            if n % 7 == 0:
                await asyncio.sleep(0)
        while len(stream.acked) < 100:
            await asyncio.sleep(0.001)
        stream.queue.put_nowait(None)
        await asyncio.wait_for(task, 2)
        assert handled == list(range(100))
        return stream

    assert asyncio.run(main()).acked == list(range(100))


def test_a_handler_error_stops_the_agent_and_acks_nothing_of_its_batch() -> None:
    async def main() -> FakeStream:
        stream = FakeStream()

        async def process(events: Sequence[Any]) -> None:
            raise RuntimeError("handler bug")

        task = asyncio.ensure_future(consume_ready(stream, 5, process))
        stream.queue.put_nowait(1)
        for _ in range(20):
            await asyncio.sleep(0)
        stream.queue.put_nowait(2)
        with pytest.raises(RuntimeError, match="handler bug"):
            await asyncio.wait_for(task, 2)
        return stream

    assert asyncio.run(main()).acked == []
