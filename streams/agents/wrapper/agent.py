"""The wrapper's steps composed: decode, batch or one by one, attempts, dead letters.

Faust-free: it runs on any ``Services`` (a worker's ``Runtime``, or the fakes of
``tests/fakes.py``), so its behaviour is unit-tested without a broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from streams.agents.wrapper.attempts import attempt_all
from streams.agents.wrapper.batch import run_batch
from streams.agents.wrapper.decode import Decoder, decode
from streams.agents.wrapper.measure import AgentMetrics
from streams.agents.wrapper.message import Message, RawEvent
from streams.agents.wrapper.spec import AgentSpec
from streams.agents.wrapper.trace import activated
from streams.clock import Clock
from streams.dlq.headers import Failure, Letter
from streams.dlq.sink import DeadLetterSink


class Services(Protocol):
    """What the wrapper needs from a worker's ``Runtime``."""

    @property
    def codec(self) -> Decoder: ...

    @property
    def dead_letters(self) -> DeadLetterSink: ...

    @property
    def clock(self) -> Clock: ...


class InstrumentedAgent:
    """Runs one ``AgentSpec`` over batches of raw events; bad input never stops it."""

    def __init__(self, spec: AgentSpec, runtime: Services) -> None:
        self.spec = spec
        self.runtime = runtime
        self.measured = AgentMetrics(spec.name)

    async def process(self, events: Sequence[RawEvent]) -> None:
        """Handle ``events``; returns once each is handled, ignored or dead-lettered."""
        decoded: list[tuple[RawEvent, Message]] = []
        undecodable: list[tuple[RawEvent, Failure]] = []
        for ev in events:
            got = decode(self.runtime.codec, self.spec.topic, ev, tombstones=self.spec.tombstones)
            if isinstance(got, Message):
                decoded.append((ev, got))
            else:
                self.measured.failed.inc()
                undecodable.append((ev, got))
        if undecodable:
            # All acknowledged before this batch is done (and so before it is committed).
            await asyncio.gather(*(self._dead_letter(ev, f) for ev, f in undecodable))
        if not decoded:
            return
        handler = self.spec.batch_handler
        if handler is not None and len(decoded) > 1:
            msgs = [m for _, m in decoded]
            if await run_batch(
                self.spec.name,
                handler,
                msgs,
                deadline=self.spec.deadline,
                measured=self.measured,
            ):
                return
        for ev, msg in decoded:
            await self._run_one(ev, msg)

    async def _run_one(self, ev: RawEvent, msg: Message) -> None:
        spec = self.spec
        with activated(msg.trace), self.measured.call():
            failure = await attempt_all(
                spec.name,
                spec.handler,
                msg,
                policy=spec.retry,
                deadline=spec.deadline,
                clock=self.runtime.clock,
                measured=self.measured,
            )
        if failure is not None:
            self.measured.failed.inc()
            await self._dead_letter(ev, failure)

    async def _dead_letter(self, ev: RawEvent, failure: Failure) -> None:
        # The sink keeps trying: the message must not be committed past before the DLQ has it.
        letter = Letter(
            ev.value, ev.key, ev.headers, failure, ev.topic, ev.partition, ev.offset, self.spec.name
        )
        await self.runtime.dead_letters.send(letter)
