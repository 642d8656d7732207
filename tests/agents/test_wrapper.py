"""The agent wrapper on fakes (no broker, no worker): retries, deadline, dead letters,
decode failures, ignore, batch fallback, trace context and metrics."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from typing import Any

import pytest

from streams import tracing
from streams.agents.base import (
    AgentSpec,
    DeadLetter,
    Ignore,
    InstrumentedAgent,
    Message,
    RawEvent,
    Retry,
    RetryPolicy,
)
from streams.agents.batch_io import Outgoing, publish_all
from streams.dlq import headers as dl
from streams.dlq.headers import FailureReason
from streams.dlq.sink import KafkaDeadLetterSink
from streams.errors import PermanentFailure, RetryLater
from streams.metrics import REGISTRY
from streams.silo import REGION_ONLY
from tests.fakes import FakeClock, FakeDeadLetterSink, FakePublisher, FakeServices

TOPIC = "resource-changes"  # any catalogue topic: the fake codec reads JSON
TRACE = tracing.TraceContext("ab" * 16, "cd" * 8)
_names = itertools.count()


def agent_name() -> str:
    """A fresh agent name per test, so metric values start at zero."""
    return f"wrapper-test-{next(_names)}"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def event(offset: int, value: Any, *, trace: tracing.TraceContext | None = None) -> RawEvent:
    headers = [("streams-message-id", f"m{offset}".encode())]
    if trace is not None:
        headers.append((tracing.H_TRACEPARENT, trace.header().encode()))
    raw = value if isinstance(value, bytes) or value is None else json.dumps(value).encode()
    return RawEvent(f"pfx.{TOPIC}", 3, offset, f"k{offset}".encode(), raw, headers, 0.0)


class Calls:
    """A handler that fails ``fail`` times per message (with ``exc``), then succeeds."""

    def __init__(self, fail: int = 0, exc: BaseException | None = None) -> None:
        self.fail = fail
        self.exc = exc or ValueError("boom")
        self.seen: list[Message] = []
        self.traces: list[tracing.TraceContext | None] = []

    async def __call__(self, msg: Message) -> None:
        self.seen.append(msg)
        self.traces.append(tracing.current())
        if sum(1 for m in self.seen if m.offset == msg.offset) <= self.fail:
            raise self.exc


def run(
    handler: Calls,
    events: Sequence[RawEvent],
    services: FakeServices | None = None,
    **spec: Any,
) -> tuple[str, FakeServices]:
    name = spec.pop("name", agent_name())
    services = services or FakeServices()
    agent = InstrumentedAgent(AgentSpec(name, TOPIC, REGION_ONLY, handler, **spec), services)
    asyncio.run(agent.process(events))
    return name, services


def test_a_handled_message_counts_as_success() -> None:
    handler = Calls()
    name, services = run(handler, [event(1, {"n": 1})])
    assert [m.value for m in handler.seen] == [{"n": 1}]
    assert handler.seen[0].topic == TOPIC and handler.seen[0].key == b"k1"
    assert services.dead_letters.letters == []
    assert metric("streams_agent_messages_total", agent=name, outcome="success") == 1
    assert metric("streams_agent_duration_seconds_count", agent=name) == 1


def test_failures_are_retried_with_backoff_then_succeed() -> None:
    handler = Calls(fail=2)
    name, services = run(handler, [event(1, {})], retry=RetryPolicy(times=3, delay=0.5))
    assert len(handler.seen) == 3
    assert services.clock.sleeps == [0.5, 1.0]
    assert services.dead_letters.letters == []
    assert metric("streams_agent_retries_total", agent=name) == 2
    assert metric("streams_agent_messages_total", agent=name, outcome="success") == 1


def test_exhausted_retries_dead_letter_the_original_bytes_with_contract_headers() -> None:
    handler = Calls(fail=99)
    ev = event(7, {"n": 7})
    name, services = run(handler, [ev], retry=RetryPolicy(times=2, delay=0.1))
    assert len(handler.seen) == 3
    [letter] = services.dead_letters.letters
    assert (letter.value, letter.key, letter.offset, letter.partition) == (ev.value, b"k7", 7, 3)
    headers = dict(services.dead_letters.stored[0])
    assert headers[dl.H_REASON] == b"handler"
    assert headers[dl.H_ERROR_TYPE] == b"ValueError"
    assert headers[dl.H_ERROR_MESSAGE] == b"boom"
    assert headers[dl.H_SOURCE_TOPIC] == f"pfx.{TOPIC}".encode()
    assert (headers[dl.H_SOURCE_PARTITION], headers[dl.H_SOURCE_OFFSET]) == (b"3", b"7")
    assert headers[dl.H_AGENT] == name.encode()
    assert headers["streams-message-id"] == b"m7"  # original headers kept
    assert metric("streams_agent_messages_total", agent=name, outcome="failure") == 1
    assert metric("streams_agent_retries_total", agent=name) == 2


def test_the_kafka_sink_counts_dead_letters_by_source_and_reason() -> None:
    producer = FakePublisher(prefix="pfx.")
    services = FakeServices()
    sink = KafkaDeadLetterSink(producer, "pfx.", clock=services.clock)
    before = metric("streams_dead_letters_total", source=f"pfx.{TOPIC}", reason="permanent")
    agent = InstrumentedAgent(
        AgentSpec(agent_name(), TOPIC, REGION_ONLY, Calls(fail=1, exc=PermanentFailure("no"))),
        FakeServices(dead_letters=sink, clock=services.clock),  # type: ignore[arg-type]
    )
    asyncio.run(agent.process([event(1, {})]))
    [sent] = producer.sent
    assert sent.topic == "pfx.dead-letters"
    assert sent.header(dl.H_REASON) == b"permanent"
    after = metric("streams_dead_letters_total", source=f"pfx.{TOPIC}", reason="permanent")
    assert after == before + 1


def test_the_deadline_cancels_a_slow_handler_and_dead_letters_it() -> None:
    async def slow(msg: Message) -> None:
        await asyncio.sleep(5)

    name = agent_name()
    services = FakeServices()
    agent = InstrumentedAgent(
        AgentSpec(name, TOPIC, REGION_ONLY, slow, retry=RetryPolicy(times=1), deadline=0.02),
        services,
    )
    asyncio.run(agent.process([event(1, {})]))
    assert services.dead_letters.reasons() == ["deadline"]
    assert "0.02s deadline" in services.dead_letters.letters[0].failure.message
    assert metric("streams_agent_retries_total", agent=name) == 1


def test_retry_later_waits_its_own_delay_then_dead_letters_as_retry_exhausted() -> None:
    handler = Calls(fail=99, exc=RetryLater("row not visible", delay=2.5))
    _, services = run(handler, [event(1, {})], retry=RetryPolicy(times=2))
    assert services.clock.sleeps == [2.5, 2.5]
    assert services.dead_letters.reasons() == ["retry_exhausted"]


def test_permanent_failure_is_not_retried() -> None:
    handler = Calls(fail=1, exc=PermanentFailure("bad input"))
    _, services = run(handler, [event(1, {})])
    assert len(handler.seen) == 1
    assert services.dead_letters.reasons() == ["permanent"]


def test_ignored_exceptions_count_as_handled() -> None:
    handler = Calls(fail=1, exc=KeyError("gone"))
    name, services = run(handler, [event(1, {})], retry=RetryPolicy(ignore=(KeyError,)))
    assert len(handler.seen) == 1
    assert services.dead_letters.letters == []
    assert metric("streams_agent_messages_total", agent=name, outcome="ignored") == 1


def test_undecodable_bytes_and_tombstones_go_to_dead_letters_without_the_handler() -> None:
    handler = Calls()
    name, services = run(handler, [event(1, b"\xc3\x01garbage"), event(2, None), event(3, {})])
    assert [m.offset for m in handler.seen] == [3]
    assert services.dead_letters.reasons() == ["decode", "decode"]
    assert [x.offset for x in services.dead_letters.letters] == [1, 2]
    assert metric("streams_agent_messages_total", agent=name, outcome="failure") == 2


def test_a_failed_batch_falls_back_to_one_by_one_so_only_the_poison_is_dead_lettered() -> None:
    batches: list[int] = []

    async def batch(msgs: Sequence[Message]) -> None:
        batches.append(len(msgs))
        if any(m.value.get("poison") for m in msgs):
            raise ValueError("poison in batch")

    async def one(msg: Message) -> None:
        if msg.value.get("poison"):
            raise PermanentFailure("poison")

    name = agent_name()
    services = FakeServices()
    agent = InstrumentedAgent(
        AgentSpec(name, TOPIC, REGION_ONLY, one, batch_handler=batch, batch_size=10), services
    )
    events = [event(i, {"poison": i == 2}) for i in range(5)]
    asyncio.run(agent.process(events))
    assert batches == [5]
    assert [x.offset for x in services.dead_letters.letters] == [2]
    assert metric("streams_agent_messages_total", agent=name, outcome="success") == 4
    # Only the one-by-one run is timed: the failed batch is not counted twice.
    assert metric("streams_agent_duration_seconds_count", agent=name) == 5


def test_a_good_batch_is_handled_in_one_call_and_measured() -> None:
    seen: list[int] = []

    async def batch(msgs: Sequence[Message]) -> None:
        seen.append(len(msgs))

    name = agent_name()
    agent = InstrumentedAgent(
        AgentSpec(name, TOPIC, REGION_ONLY, Calls(), batch_handler=batch), FakeServices()
    )
    asyncio.run(agent.process([event(i, {}) for i in range(4)]))
    assert seen == [4]
    assert metric("streams_agent_messages_total", agent=name, outcome="success") == 4
    assert metric("streams_agent_duration_seconds_count", agent=name) == 4
    assert metric("streams_agent_memory_delta_bytes_count", agent=name) == 1  # sampled


def test_each_handler_call_runs_in_its_message_trace() -> None:
    other = tracing.TraceContext("ef" * 16, "01" * 8)
    handler = Calls()
    run(handler, [event(1, {}, trace=TRACE), event(2, {}, trace=other), event(3, {})])
    assert [t.trace_id if t else None for t in handler.traces] == [
        TRACE.trace_id,
        other.trace_id,
        None,
    ]
    assert tracing.current() is None


def test_batch_outputs_continue_each_message_trace() -> None:
    other = tracing.TraceContext("ef" * 16, "01" * 8)
    publisher = FakePublisher()
    traces: list[tracing.TraceContext | None] = []

    async def batch(msgs: Sequence[Message]) -> None:
        traces.append(tracing.current())
        out = [Outgoing("webhook-deliveries", {"n": m.offset}, "k", m.trace) for m in msgs]
        await publish_all(FakeRuntime(publisher), out, agent="t")  # type: ignore[arg-type]

    agent = InstrumentedAgent(
        AgentSpec(agent_name(), TOPIC, REGION_ONLY, Calls(), batch_handler=batch), FakeServices()
    )
    asyncio.run(agent.process([event(1, {}, trace=TRACE), event(2, {}, trace=other)]))
    assert traces == [None]  # two traces in the batch: the call itself runs in none
    sent = [s.header(tracing.H_TRACEPARENT) or b"" for s in publisher.sent]
    assert [h.decode().split("-")[1] for h in sent] == [TRACE.trace_id, other.trace_id]


class FakeRuntime:
    def __init__(self, publisher: FakePublisher) -> None:
        self.publisher = publisher


@pytest.mark.parametrize(
    ("exc", "attempt", "expected"),
    [
        (ValueError("x"), 1, Retry(0.5)),
        (ValueError("x"), 3, Retry(2.0)),
        (ValueError("x"), 4, DeadLetter(dl.Failure(FailureReason.HANDLER, "ValueError", "x"))),
        (RetryLater("later", delay=7.0), 1, Retry(7.0)),
        (KeyError("k"), 1, Ignore()),
        (
            PermanentFailure("p"),
            1,
            DeadLetter(dl.Failure.of(FailureReason.PERMANENT, Exception("p"))),
        ),
    ],
)
def test_retry_policy_decides_from_the_exception_and_attempt(
    exc: BaseException, attempt: int, expected: object
) -> None:
    policy = RetryPolicy(times=3, delay=0.5, backoff=2.0, ignore=(KeyError,))
    got = policy.decide(exc, attempt)
    if isinstance(expected, DeadLetter):
        assert isinstance(got, DeadLetter)
        assert (got.failure.reason, got.failure.message) == (
            expected.failure.reason,
            expected.failure.message,
        )
    else:
        assert got == expected


def test_retry_policy_dead_letters_exceptions_it_is_not_told_to_retry() -> None:
    got = RetryPolicy(on=(ValueError,)).decide(KeyError("k"), 1)
    assert isinstance(got, DeadLetter) and got.failure.reason is FailureReason.HANDLER


def test_fake_clock_is_used_for_backoff_not_real_time() -> None:
    clock = FakeClock()
    services = FakeServices(clock=clock, dead_letters=FakeDeadLetterSink())
    run(Calls(fail=99), [event(1, {})], services, retry=RetryPolicy(times=5, delay=10.0))
    assert clock.sleeps == [10.0, 20.0, 30.0, 30.0, 30.0]  # capped at max_delay
