"""Direct consumption (streams/agents/wrapper/direct.py) on the real broker: every record
reaches the agent, a batch whose handling failed is read again (nothing lost), and the
group's committed offsets follow the handled batches, so a new owner starts after them.
A real worker runs it under the resource-change and webhook tests and the chaos tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams import catalogue, kafka_config
from streams.agents.base import AgentSpec, Message
from streams.agents.wrapper.direct import ERRORS, DirectConsumer, group_id
from streams.agents.wrapper.message import RawEvent
from streams.settings import Settings
from streams.silo import REGION_ONLY, SiloMode

TOPIC = "resource-changes"


async def _nothing(msg: Message) -> None:
    return None


class Recorder:
    """Records every batch; the first ``failures`` calls raise (an infrastructure error)."""

    def __init__(self, failures: int = 0, batch_size: int = 20) -> None:
        self.spec = AgentSpec(
            name="direct_probe",
            topic=TOPIC,
            silos=REGION_ONLY,
            handler=_nothing,
            batch_size=batch_size,
            direct=True,
        )
        self.failures = failures
        self.batches: list[list[tuple[int, int]]] = []
        self.failed: list[list[tuple[int, int]]] = []

    async def process(self, events: Sequence[RawEvent]) -> None:
        batch = [(e.partition, e.offset) for e in events]
        if self.failures:
            self.failures -= 1
            self.failed.append(batch)
            raise ConnectionError("database went away")
        self.batches.append(batch)

    def handled(self) -> set[tuple[int, int]]:
        return {po for b in self.batches for po in b}


def _produce(settings: Settings, n: int, tag: str) -> dict[int, int]:
    """``n`` records over the topic's partitions; returns the end offset per partition."""
    producer = Producer(kafka_config.producer(settings))
    ends: dict[int, int] = {}

    def acked(err: object, msg: object) -> None:
        assert err is None, err
        ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)  # type: ignore[attr-defined]

    topic = catalogue.lookup(TOPIC).full_name(settings.topic_prefix)
    for i in range(n):
        producer.produce(topic, f"{tag}-{i}".encode(), key=str(i).encode(), on_delivery=acked)
    assert producer.flush(30) == 0
    return ends


def _committed(settings: Settings, agent: str) -> dict[int, int]:
    topic = catalogue.lookup(TOPIC).full_name(settings.topic_prefix)
    consumer = Consumer(kafka_config.consumer(settings, group_id(settings, agent)))
    try:
        parts = [TopicPartition(topic, p) for p in range(catalogue.lookup(TOPIC).partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
    finally:
        consumer.close()


async def _until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.allow_errors  # the two failed batches are logged at ERROR, as they must be
def test_every_record_is_handled_a_failed_batch_is_read_again_and_commits_follow(
    settings: Settings,
) -> None:
    ends = _produce(settings, 200, "a")
    wanted = {(p, o) for p, end in ends.items() for o in range(end)}
    topic = catalogue.lookup(TOPIC).full_name(settings.topic_prefix)
    errors_before = ERRORS.labels("direct_probe", "handler")._value.get()

    async def first_owner() -> Recorder:
        recorder = Recorder(failures=2)
        direct = DirectConsumer(recorder, settings, topic)
        direct.start(asyncio.get_running_loop())
        try:
            await _until(lambda: direct.ready, 60, "the group's assignment")
            assert direct.assignment(), "one consumer in the group owns every partition"
            await _until(lambda: recorder.handled() >= wanted, 60, "every record handled")
        finally:
            await direct.stop()
        return recorder

    recorder = asyncio.run(first_owner())
    # The two failed batches were read again: each of their records was handled later.
    assert len(recorder.failed) == 2
    assert set(recorder.failed[0]) <= recorder.handled()
    assert ERRORS.labels("direct_probe", "handler")._value.get() == errors_before + 2
    # Within a partition, records reach the agent in order.
    for p in ends:
        seen = [o for b in recorder.batches for (q, o) in b if q == p]
        assert seen == sorted(seen)
    # Every handled batch was committed before stop() returned.
    committed = _committed(settings, "direct_probe")
    assert {p: committed[p] for p in ends} == ends

    # A new owner of the group starts after the committed batches: only new records.
    more = _produce(settings, 10, "b")

    async def second_owner() -> Recorder:
        recorder = Recorder()
        direct = DirectConsumer(recorder, settings, topic)
        direct.start(asyncio.get_running_loop())
        try:
            await _until(lambda: len(recorder.handled()) >= 10, 60, "the 10 new records")
        finally:
            await direct.stop()
        return recorder

    second = asyncio.run(second_owner())
    assert second.handled() == {
        (p, o) for p, end in more.items() for o in range(ends.get(p, 0), end)
    }


def test_the_direct_agents_list_names_the_agents_a_worker_consumes_directly(
    settings: Settings,
) -> None:
    """DIRECT_AGENTS (the manifests' KEDA triggers follow it) is what the worker does."""
    from dataclasses import replace

    from streams.agents import DIRECT_AGENTS
    from streams.app import create_app

    for silo in (SiloMode.REGION, SiloMode.CONTROL):
        app = create_app(replace(settings, silo_mode=silo))
        runtime = app.streams_runtime  # type: ignore[attr-defined]
        try:
            assert sorted(c.name for c in runtime.consumers) == sorted(
                name for name, silos in DIRECT_AGENTS.items() if silo in silos
            )
        finally:
            runtime.publisher.close()
    app = create_app(replace(settings, direct_consumers=False))
    assert app.streams_runtime.consumers == []  # type: ignore[attr-defined]
    app.streams_runtime.publisher.close()  # type: ignore[attr-defined]


def test_after_an_upgrade_a_direct_agent_starts_where_the_faust_group_stopped(
    settings: Settings,
) -> None:
    """The agent ran in the worker's Faust group (STREAMS_APP_ID) before: its new group
    starts at that group's commits instead of re-reading the whole topic."""
    ends = _produce(settings, 100, "old")
    topic = catalogue.lookup(TOPIC).full_name(settings.topic_prefix)
    faust_done = {p: end // 2 for p, end in ends.items()}
    old = Consumer(kafka_config.consumer(settings, settings.app_id))
    try:
        old.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in faust_done.items()],
            asynchronous=False,
        )
    finally:
        old.close()
    wanted = {(p, o) for p, end in ends.items() for o in range(faust_done[p], end)}

    async def run() -> Recorder:
        recorder = Recorder()
        direct = DirectConsumer(recorder, settings, topic)
        direct.start(asyncio.get_running_loop())
        try:
            await _until(lambda: recorder.handled() >= wanted, 60, "the records after the commit")
        finally:
            await direct.stop()
        return recorder

    assert asyncio.run(run()).handled() == wanted
