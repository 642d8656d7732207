"""Instrumented agents: the wrapper every Faust agent of streams runs inside.

It replaces the old ``instrumented_task``. Per message it decodes the Avro value,
activates the trace context from the headers, runs the handler under a deadline and a
retry policy, records duration / sampled memory / outcome metrics, and sends what
fails for good to the dead-letter topic, then goes on: bad input never stops a worker.
Nothing collects results. An agent declared for one silo is not started in another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from streams import metrics, tracing
from streams.dlq.headers import Failure, FailureReason, Letter
from streams.errors import DecodeError, PermanentFailure, RetryLater
from streams.runtime import Runtime
from streams.silo import SiloMode

log = logging.getLogger(__name__)

MEMORY_SAMPLE_EVERY = 64
_PROCESS = psutil.Process()


@dataclass(frozen=True)
class Message:
    """One decoded message as an agent's handler sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: Any
    raw: bytes | None
    headers: Mapping[str, bytes]
    timestamp: float

    @property
    def attempt(self) -> int:
        raw = self.headers.get(tracing.H_ATTEMPT)
        try:
            return int(raw) if raw else 1
        except ValueError:
            return 1


Handler = Callable[[Message], Awaitable[None]]
BatchHandler = Callable[[Sequence[Message]], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a failing handler before dead-lettering."""

    times: int = 3  # retries after the first attempt
    delay: float = 0.5
    backoff: float = 2.0
    max_delay: float = 30.0
    on: tuple[type[BaseException], ...] = (Exception,)
    # Exceptions that mean "nothing to do": the message counts as handled.
    ignore: tuple[type[BaseException], ...] = ()

    def delay_for(self, retry: int) -> float:
        return float(min(self.max_delay, self.delay * (self.backoff ** max(0, retry - 1))))


@dataclass(frozen=True)
class AgentSpec:
    name: str
    topic: str  # catalogue name
    silos: frozenset[SiloMode]
    handler: Handler
    batch_handler: BatchHandler | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    deadline: float | None = 60.0
    batch_size: int = 1
    batch_within: float = 0.1


@dataclass
class RawEvent:
    """The parts of a consumed record the wrapper needs (Faust-independent)."""

    topic: str  # full name
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes]
    timestamp: float


class InstrumentedAgent:
    """Runs one ``AgentSpec`` over batches of raw events."""

    def __init__(self, spec: AgentSpec, runtime: Runtime) -> None:
        self.spec = spec
        self.runtime = runtime
        self._count = 0
        self._duration = metrics.AGENT_DURATION.labels(spec.name)
        self._memory = metrics.AGENT_MEMORY.labels(spec.name)
        self._ok = metrics.AGENT_MESSAGES.labels(spec.name, "success")
        self._failed = metrics.AGENT_MESSAGES.labels(spec.name, "failure")
        self._ignored = metrics.AGENT_MESSAGES.labels(spec.name, "ignored")
        self._retries = metrics.AGENT_RETRIES.labels(spec.name)
        self._in_flight = metrics.AGENT_IN_FLIGHT.labels(spec.name)

    async def process(self, events: Sequence[RawEvent]) -> None:
        decoded: list[tuple[RawEvent, Message]] = []
        undecodable: list[tuple[RawEvent, Failure]] = []
        for ev in events:
            msg = self._decode(ev)
            if isinstance(msg, Message):
                decoded.append((ev, msg))
            else:
                undecodable.append((ev, msg))
        if undecodable:
            # All acknowledged before this batch is done (and so before it is committed).
            await asyncio.gather(*(self._dead_letter(ev, f) for ev, f in undecodable))
        if not decoded:
            return
        batched = self.spec.batch_handler is not None and len(decoded) > 1
        if batched and await self._run_batch([m for _, m in decoded]):
            return
        for ev, msg in decoded:
            await self._run_one(ev, msg)

    def _decode(self, ev: RawEvent) -> Message | Failure:
        headers = dict(ev.headers.items() if isinstance(ev.headers, Mapping) else ev.headers)
        try:
            if ev.value is None:
                raise DecodeError("empty value (tombstone) on a non-compacted topic")
            value = self.runtime.codec.decode(self.spec.topic, ev.value)
        except DecodeError as exc:
            self._failed.inc()
            return Failure.of(FailureReason.DECODE, exc)
        return Message(
            self.spec.topic, ev.partition, ev.offset, ev.key, value, ev.value, headers, ev.timestamp
        )

    async def _run_batch(self, msgs: list[Message]) -> bool:
        """Whole-batch fast path; on any error the caller falls back to one by one."""
        assert self.spec.batch_handler is not None
        started = time.perf_counter()
        self._in_flight.inc(len(msgs))
        try:
            await asyncio.wait_for(self.spec.batch_handler(msgs), self.spec.deadline)
        except Exception as exc:
            log.warning(
                "agent.batch.failed",
                extra={"agent": self.spec.name, "error": repr(exc), "size": len(msgs)},
            )
            return False
        finally:
            self._in_flight.dec(len(msgs))
        per = (time.perf_counter() - started) / len(msgs)
        for _ in msgs:
            self._duration.observe(per)
        self._ok.inc(len(msgs))
        return True

    async def _run_one(self, ev: RawEvent, msg: Message) -> None:
        token = tracing.activate(tracing.parse_traceparent(msg.headers.get(tracing.H_TRACEPARENT)))
        self._count += 1
        sample = self._count % MEMORY_SAMPLE_EVERY == 1
        rss = _PROCESS.memory_info().rss if sample else 0
        started = time.perf_counter()
        self._in_flight.inc()
        try:
            failure = await self._attempts(msg)
        finally:
            self._in_flight.dec()
            self._duration.observe(time.perf_counter() - started)
            if sample:
                self._memory.observe(max(0, _PROCESS.memory_info().rss - rss))
            tracing.deactivate(token)
        if failure is None:
            return
        self._failed.inc()
        await self._dead_letter(ev, failure)

    async def _attempts(self, msg: Message) -> Failure | None:
        policy = self.spec.retry
        retry = 0
        while True:
            try:
                await asyncio.wait_for(self.spec.handler(msg), self.spec.deadline)
                self._ok.inc()
                return None
            except policy.ignore:
                self._ignored.inc()
                return None
            except PermanentFailure as exc:
                return Failure.of(FailureReason.PERMANENT, exc)
            except TimeoutError as exc:
                failure = Failure(
                    FailureReason.DEADLINE,
                    "TimeoutError",
                    f"handler exceeded its {self.spec.deadline}s deadline",
                )
                delay = policy.delay_for(retry + 1)
                del exc
            except RetryLater as exc:
                failure = Failure.of(FailureReason.RETRY_EXHAUSTED, exc)
                delay = exc.delay if exc.delay is not None else policy.delay_for(retry + 1)
            except policy.on as exc:
                failure = Failure.of(FailureReason.HANDLER, exc)
                delay = policy.delay_for(retry + 1)
            if retry >= policy.times:
                log.warning(
                    "agent.message.failed",
                    extra={
                        "agent": self.spec.name,
                        "offset": msg.offset,
                        "partition": msg.partition,
                        "reason": failure.reason,
                        "error": failure.message,
                    },
                )
                return failure
            retry += 1
            self._retries.inc()
            await asyncio.sleep(delay)

    async def _dead_letter(self, ev: RawEvent, failure: Failure) -> None:
        # The sink keeps trying: the message must not be committed past before the DLQ has it.
        letter = Letter(
            ev.value, ev.key, ev.headers, failure, ev.topic, ev.partition, ev.offset, self.spec.name
        )
        await self.runtime.dead_letters.send(letter)


def attach(app: Any, runtime: Runtime, spec: AgentSpec) -> InstrumentedAgent | None:
    """Register ``spec`` as a Faust agent on ``app``, unless the silo forbids it."""
    from streams import catalogue

    if not runtime.settings.silo_mode.allows(spec.silos):
        log.info(
            "agent.skipped.wrong_silo",
            extra={"agent": spec.name, "silo": runtime.settings.silo_mode.value},
        )
        runtime.skipped_agents.append(spec.name)
        return None
    topic_spec = catalogue.spec(spec.topic)
    topic = app.topic(
        topic_spec.full_name(runtime.settings.topic_prefix),
        partitions=topic_spec.partitions,
        key_serializer="raw",
        value_serializer="raw",
    )
    runner = InstrumentedAgent(spec, runtime)

    async def agent(stream: Any) -> None:
        async for events in stream.take_events(spec.batch_size, within=spec.batch_within):
            await runner.process([from_faust(e) for e in events])

    agent.__name__ = spec.name
    agent.__qualname__ = spec.name
    app.agent(topic, name=spec.name)(agent)
    runtime.agents.append(spec.name)
    return runner


def from_faust(event: Any) -> RawEvent:
    m = event.message
    return RawEvent(m.topic, m.partition, m.offset, m.key, m.value, m.headers or [], m.timestamp)
