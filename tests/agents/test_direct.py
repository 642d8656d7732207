"""Direct consumption (streams/agents/wrapper/direct.py) on the real broker: every record
reaches the agent, a batch whose handling failed is read again (nothing lost), and the
group's committed offsets follow the handled batches, so a new owner starts after them.
A real worker runs it under the resource-change and webhook tests and the chaos tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams import catalogue, kafka_config
from streams.agents.base import AgentSpec, Message
from streams.agents.wrapper.direct import ERRORS, GAPS, DirectConsumer, group_id
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


class Rewinding:
    """A ``Listener`` that still needs one partition's records from ``offset`` on."""

    def __init__(self, partition: int, offset: int) -> None:
        self.partition, self.offset = partition, offset
        self.assigned_to: list[int] = []

    def assigned(self, partitions: list[int]) -> dict[int, int]:
        self.assigned_to = partitions
        return {self.partition: self.offset}

    def revoked(self, partitions: list[int]) -> None:
        return None


def test_a_listener_that_needs_records_before_the_commit_gets_them_again(
    settings: Settings,
) -> None:
    """``Listener.assigned`` may name, per partition, an offset before the group's
    commit (the invalidation's windows held through their requests): the consumer
    starts there; the other partitions start at the commit."""
    ends = _produce(settings, 60, "r")
    topic = catalogue.lookup(TOPIC).full_name(settings.topic_prefix)
    busy = max(ends, key=lambda p: ends[p])
    rewind = ends[busy] // 2

    async def owner(listener: Rewinding | None, wanted: int) -> Recorder:
        recorder = Recorder()
        direct = DirectConsumer(recorder, settings, topic)
        direct.listener = listener
        direct.start(asyncio.get_running_loop())
        try:
            await _until(lambda: len(recorder.handled()) >= wanted, 60, f"{wanted} records")
            await asyncio.sleep(0.5)  # more, if any, would show up now
        finally:
            await direct.stop()
        return recorder

    asyncio.run(owner(None, sum(ends.values())))  # everything handled and committed
    listener = Rewinding(busy, rewind)
    again = asyncio.run(owner(listener, ends[busy] - rewind)).handled()
    assert listener.assigned_to == list(range(catalogue.lookup(TOPIC).partitions))
    assert again == {(busy, o) for o in range(rewind, ends[busy])}


def test_a_following_consumer_reads_the_partitions_it_is_given_and_lets_go_committed(
    settings: Settings,
) -> None:
    """``follows``: no group membership; the partitions are the ones ``follow`` names (as
    the served-configs feed follows Faust's table). A partition let go has its last batch
    committed; a new one starts at the group's commit."""
    ends = _produce(settings, 120, "f")
    topic = catalogue.lookup(TOPIC).full_name(settings.topic_prefix)
    first = {(p, o) for p in (0, 1) for o in range(ends.get(p, 0))}

    async def run() -> tuple[Recorder, dict[int, int]]:
        recorder = Recorder(batch_size=7)
        direct = DirectConsumer(recorder, settings, topic, follows=True)
        direct.start(asyncio.get_running_loop())
        try:
            await asyncio.wait_for(asyncio.wrap_future(direct.follow({0, 1})), 60)
            assert direct.ready and direct.following() == {0, 1}
            await _until(lambda: recorder.handled() >= first, 60, "partitions 0 and 1")
            assert {p for p, _ in recorder.handled()} == {0, 1}
            await asyncio.wait_for(asyncio.wrap_future(direct.follow({1, 2})), 60)
            assert direct.assignment() == [f"{topic}:1", f"{topic}:2"]
            more = _produce(settings, 60, "g")
            wanted = first | {(p, o) for p in (1, 2) for o in range(more[p])}
            await _until(lambda: recorder.handled() >= wanted, 60, "partitions 1 and 2")
        finally:
            await direct.stop()
        return recorder, more

    recorder, more = asyncio.run(run())
    # Partition 0 was let go: none of its new records was read.
    assert max(o for p, o in recorder.handled() if p == 0) == ends[0] - 1 < more[0] - 1
    assert {p for p, _ in recorder.handled()} == {0, 1, 2}
    committed = _committed(settings, "direct_probe")
    assert (committed[0], committed[1], committed[2]) == (ends[0], more[1], more[2])
    assert committed[3] < 0  # never followed: never committed


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


@pytest.mark.allow_errors  # the accepted gap is logged at ERROR, as it must be
def test_offsets_no_fetch_returns_are_read_again_then_accepted_and_reading_goes_on(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transactional producer leaves a commit marker after each transaction: an offset
    no fetch returns, so the records after it look like a gap. The consumer reads the
    partition again from the gap for the patience, then accepts it (logged, counted) and
    handles everything after it; it does not stall."""
    from streams.agents.wrapper import gaps

    monkeypatch.setattr(gaps, "PATIENCE", 0.5)
    topic = catalogue.lookup(TOPIC).full_name(settings.topic_prefix)
    producer = Producer(
        {**kafka_config.producer(settings), "transactional.id": f"{settings.app_id}-tx"}
    )
    producer.init_transactions(30)
    for txn in ("a", "b"):
        producer.begin_transaction()
        for i in range(3):
            producer.produce(topic, f"{txn}{i}".encode(), partition=0)
        producer.commit_transaction(30)
    accepted = GAPS.labels("direct_probe", "accepted")
    before = accepted._value.get()
    # Offsets 0-2, the first marker at 3, then 4-6 (and the second marker at 7).
    wanted = {(0, o) for o in (0, 1, 2, 4, 5, 6)}

    async def run() -> Recorder:
        recorder = Recorder()
        direct = DirectConsumer(recorder, settings, topic)
        direct.start(asyncio.get_running_loop())
        try:
            await _until(lambda: recorder.handled() >= wanted, 60, "the records past the marker")
        finally:
            await direct.stop()
        return recorder

    started = time.monotonic()
    assert asyncio.run(run()).handled() == wanted
    assert accepted._value.get() == before + 1
    assert time.monotonic() - started < 30
    assert _committed(settings, "direct_probe")[0] == 7


class SkippingConsumer(Consumer):
    """The real consumer, except that the first fetch returning ``skip`` hands out what
    follows them instead, as the embedded broker's fetch sometimes does (gaps.py):
    librdkafka's position moves past them and no later fetch returns them."""

    def __init__(self, config: dict[str, object], skip: set[tuple[int, int]]) -> None:
        super().__init__(config)
        self.skip = set(skip)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        records = super().consume(num_messages, timeout)
        if not self.skip:
            return records
        kept = [m for m in records if (m.partition(), m.offset()) not in self.skip]
        last = max(self.skip)
        if any(m.partition() == last[0] and (m.offset() or 0) > last[1] for m in kept):
            self.skip.clear()  # the fetch went past them: a re-read returns them
        return kept


class SkippingDirect(DirectConsumer):
    def __init__(self, *args: Any, skip: set[tuple[int, int]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skip = skip

    def _consumer(self) -> Consumer:
        return SkippingConsumer(self.config, self.skip)


@pytest.mark.parametrize("checked", [True, False], ids=["checked", "unchecked"])
def test_records_a_fetch_skipped_are_read_again_and_handled(
    settings: Settings, checked: bool
) -> None:
    """Records 20-49 of partition 0 are skipped by one fetch. With the gap check (the
    default on a non-compacted topic) the partition is read again from 20 and all are
    handled; without it (``compacted=True`` turns it off) the 30 are never handled,
    which is what happened on the embedded broker before the check."""
    ends = _produce(settings, 400, "gap")
    assert ends[0] > 60
    skipped = {(0, o) for o in range(20, 50)}
    wanted = {(p, o) for p, end in ends.items() for o in range(end)}
    topic = catalogue.lookup(TOPIC).full_name(settings.topic_prefix)
    refetched = GAPS.labels("direct_probe", "refetched")
    before = refetched._value.get()

    async def run() -> Recorder:
        recorder = Recorder()
        direct = SkippingDirect(recorder, settings, topic, skip=skipped, compacted=not checked)
        direct.start(asyncio.get_running_loop())
        try:
            await _until(lambda: recorder.handled() >= wanted - skipped, 60, "the other records")
            if checked:
                await _until(lambda: recorder.handled() >= wanted, 30, "the skipped records")
            else:
                await asyncio.sleep(1.0)  # time enough for a re-read that is not coming
        finally:
            await direct.stop()
        return recorder

    handled = asyncio.run(run()).handled()
    if checked:
        assert handled == wanted
        assert refetched._value.get() == before + 1
        assert _committed(settings, "direct_probe") == ends
    else:
        assert handled == wanted - skipped
        assert refetched._value.get() == before
