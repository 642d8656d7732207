"""Registering an ``AgentSpec`` on a Faust app: silo check, naming, consumption mode.

Every agent of streams goes through ``attach``; an agent declared for another silo
is not started and is listed under ``skipped_agents`` in ``/health``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from streams import catalogue
from streams.agents.wrapper.agent import InstrumentedAgent
from streams.agents.wrapper.direct import DirectConsumer
from streams.agents.wrapper.direct import install as install_direct
from streams.agents.wrapper.message import RawEvent
from streams.agents.wrapper.ready import consume_ready
from streams.agents.wrapper.spec import AgentSpec, Holder, Mode
from streams.runtime import Runtime
from streams.silo import SiloMode

log = logging.getLogger(__name__)

AgentFn = Callable[[Any], Awaitable[None]]


def runs_here(runtime: Runtime, name: str, silos: frozenset[SiloMode]) -> bool:
    """Whether agent ``name`` of ``silos`` runs in this worker's silo; if not, it is
    logged and listed under ``skipped_agents`` in ``/health`` (once).

    ``attach`` checks it; an ``install`` that must create tables or timers before
    attaching checks it first, so a skipped agent creates nothing.
    """
    if runtime.settings.silo_mode.allows(silos):
        return True
    if name not in runtime.skipped_agents:
        log.info(
            "agent.skipped.wrong_silo",
            extra={"agent": name, "silo": runtime.settings.silo_mode.value},
        )
        runtime.skipped_agents.append(name)
    return False


def attach(app: Any, runtime: Runtime, spec: AgentSpec) -> InstrumentedAgent | None:
    """Register ``spec`` as a Faust agent on ``app``, unless the silo forbids it."""
    if not runs_here(runtime, spec.name, spec.silos):
        return None
    topic_spec = catalogue.lookup(spec.topic)
    full_name = topic_spec.full_name(runtime.settings.topic_prefix)
    if spec.direct and runtime.settings.direct_consumers:
        if spec.mode is not Mode.TAKE:
            raise ValueError(f"agent {spec.name!r}: direct consumption needs Mode.TAKE")
        runner = InstrumentedAgent(spec, runtime)
        consumer = DirectConsumer(
            runner, runtime.settings, full_name, compacted=topic_spec.compacted
        )
        install_direct(app, consumer)
        runtime.consumers.append(consumer)
        runtime.agents.append(spec.name)
        return runner
    topic = app.topic(
        full_name,
        partitions=topic_spec.partitions,
        key_serializer="raw",
        value_serializer="raw",
    )
    runner = InstrumentedAgent(spec, runtime)
    agent = _consumer(spec, runner)
    agent.__name__ = spec.name
    agent.__qualname__ = spec.name
    app.agent(topic, name=spec.name)(agent)
    runtime.agents.append(spec.name)
    return runner


def _consumer(spec: AgentSpec, runner: InstrumentedAgent) -> AgentFn:
    if spec.mode is Mode.EACH:
        return _each(runner)
    if spec.mode is Mode.HOLD:
        if spec.holder is None:
            raise ValueError(f"agent {spec.name!r}: Mode.HOLD needs a holder")
        return _hold(spec, runner, spec.holder)
    return _take(spec, runner)


def _take(spec: AgentSpec, runner: InstrumentedAgent) -> AgentFn:
    if spec.batch_within == 0:
        # No batching timer: batches of what is ready (streams/agents/wrapper/ready.py).
        async def ready(stream: Any) -> None:
            await consume_ready(
                stream,
                spec.batch_size,
                lambda events: runner.process(list(map(from_faust, events))),
            )

        return ready

    async def agent(stream: Any) -> None:
        async for events in stream.take_events(spec.batch_size, within=spec.batch_within):
            await runner.process([from_faust(e) for e in events])

    return agent


def _each(runner: InstrumentedAgent) -> AgentFn:
    async def agent(stream: Any) -> None:
        # Handled inside the iteration: Faust's "current event" is this message's.
        async for event in stream.events():
            await runner.process([from_faust(event)])

    return agent


def _hold(spec: AgentSpec, runner: InstrumentedAgent, holder: Holder) -> AgentFn:
    async def agent(stream: Any) -> None:
        async with holder.consuming(stream):
            # noack_take: the holder acknowledges each message when it is done with it.
            async for events in stream.noack_take(spec.batch_size, within=spec.batch_within):
                async with holder.admitting(events) as fresh:
                    if fresh:
                        await runner.process([from_faust(e) for e in fresh])

    return agent


def from_faust(event: Any) -> RawEvent:
    """The ``RawEvent`` of a Faust event."""
    m = event.message
    return RawEvent(m.topic, m.partition, m.offset, m.key, m.value, m.headers or [], m.timestamp)
