"""Feeding the served-configs table: directly from the recompute, or from ``project-configs``.

The table (``table.data``, bytes -> bytes) holds each public key's latest
``project-configs`` value as it is in the topic (Avro); ``GET`` renders it. Its
changelog is ``project-configs`` itself: a published config is the table's changelog
record, so nothing else is written per config, and a worker taking a partition
recovers the table by reading that partition of the topic (Faust's recovery, from
the start of the compacted log). With ``STREAMS_DIRECT_CONSUMERS=0`` the feed is a
Faust agent, which cannot read a topic that is also a changelog: the table then has
a changelog of its own, written through librdkafka (``ChangelogWriter``) on the key's
partition (the table and the topic are co-partitioned, murmur2 of the key).

Two paths write the table:

- **direct**: the recompute that publishes a config writes its encoded value here, in
  the same step as the produce, for the partitions this worker owns, and counts it as
  *unseen* for its key. Consuming its own configs back and decoding them cost more
  than the recompute itself at 100k projects (bench/README.md);
- **topic**: the feed reads every message. A message whose key has an unseen count
  is skipped, without its headers or value being read, and the count goes down by
  one; the others are checked (a record that would not render is dead-lettered) and
  written as read.

A skipped message is this worker's own config, or a config of the same key that is
earlier in the log than one this worker already wrote. Either way the table keeps the
newer value, and once the feed has read the log to its end the table holds the last
config of each key: a key's own configs reach the log in the order they were written
here, and the feed cannot read one before it is written, so the counts of a key
return to zero with its last own config read. (A header naming the writing worker,
as before, left the table at an older config when another worker's config of the same
key was in the log before this worker's but read after this worker wrote its own.) A
publish that fails clears the counts of its keys (``unsent``): its configs may or may
not be in the log, and a count too low only costs a config read again. A revoke
clears them all.

With a changelog of its own, a batch is acknowledged only once its changelog records
are.

The feed reads ``project-configs`` through librdkafka (``DirectConsumer`` with
``follows``, group ``<app id>.project-configs-served``): it joins no group of its own
but follows the table's partitions as Faust assigns them (the changelog's active
partitions, which ``table_route`` routes ``GET`` requests by). On a revoke it lets go of
every partition, its last batch committed, before Faust's rebalance goes on; once the
table's recovery is complete it takes the new set, each partition from the offset where
Faust's recovery stopped (``recovered_ends``). With ``STREAMS_DIRECT_CONSUMERS=0`` it is a
Faust agent as before (``attach_feed``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

from streams import catalogue
from streams.agents.base import AgentSpec, InstrumentedAgent, Message, from_faust
from streams.agents.wrapper.direct import DirectConsumer
from streams.agents.wrapper.direct import install as install_direct
from streams.agents.wrapper.message import RawEvent
from streams.errors import DecodeError, PublishError
from streams.partitioner import partition_of
from streams.projectconfigs.changelog import UNASSIGNED, ChangelogWriter
from streams.runtime import Runtime

log = logging.getLogger(__name__)


class ServedFeed:
    """The table's two writers. The table holds each key's ``project-configs`` value as
    it is in the topic (Avro bytes); a GET renders it (``check`` refuses a record read
    from the topic that would not render, before it is written)."""

    MAX_CACHED = 500_000  # key -> partition entries (murmur2 is pure Python)

    def __init__(
        self,
        table: Any,
        changelog: ChangelogWriter | None,
        check: Callable[[Any], object],
        partitions: int,
        owned: Callable[[], set[int]],
    ) -> None:
        """``changelog`` None: the table's changelog is ``project-configs`` itself, so
        nothing is written besides the topic."""
        self.table = table
        self.changelog = changelog
        self.check = check
        self.partitions = partitions
        self.owned = owned
        self._partition: dict[bytes, int] = {}
        # key -> configs written directly and not yet read by the feed (a key has one
        # partition, murmur2 of the key).
        self._unseen: dict[bytes, int] = {}

    def partition_of(self, key: bytes) -> int:
        """The key's partition as the Java client (and Faust's router) computes it."""
        p = self._partition.get(key)
        if p is None:
            p = partition_of(key, self.partitions)
            if len(self._partition) >= self.MAX_CACHED:
                self._partition.clear()
            self._partition[key] = p
        return p

    def serve(self, records: Iterable[tuple[str, bytes | None]]) -> list[bytes]:
        """Write the records of owned partitions now (and queue their changelog records,
        if the table has its own changelog); their keys, each counted unseen until the
        feed reads it.

        ``records`` are (public key, value as published or None). When this worker owns
        every partition, no partition is computed: the key's partition in Python, on the
        first config of each key, was a twentieth of a recompute at 100k projects (a
        changelog record is then placed by its producer, murmur2 as the topic).
        """
        owned = self.owned()
        if not owned:
            return []
        every = len(owned) >= self.partitions
        data, unseen = _dict_of(self.table.data), self._unseen
        send = None if self.changelog is None else self.changelog.send_raw
        done: list[bytes] = []
        for key, value in records:
            raw = key.encode()
            partition = UNASSIGNED
            if not every:
                partition = self.partition_of(raw)
                if partition not in owned:
                    continue
            if value is None:
                data.pop(raw, None)
            else:
                data[raw] = value
            if send is not None:
                send(partition, raw, value)
            unseen[raw] = unseen.get(raw, 0) + 1
            done.append(raw)
        return done

    def unsent(self, served: Iterable[bytes]) -> None:
        """Forget the unseen counts of configs whose publish failed (see the module
        docstring): the feed then reads every config of those keys."""
        for key in served:
            self._unseen.pop(key, None)

    def forget(self) -> None:
        """Forget every unseen count (the partitions are let go)."""
        self._unseen.clear()

    async def flushed(self) -> None:
        """Wait for the table's own changelog records sent so far (raises if refused)."""
        if self.changelog is not None:
            await self.changelog.flush()

    async def flush_until_done(self) -> None:
        """Wait until the changelog has every record sent so far, however long it takes:
        the messages skipped meanwhile are not acknowledged before."""
        delay = 0.5
        while True:
            try:
                await self.flushed()
                return
            except PublishError as exc:
                log.warning(
                    "project_configs.served.flush_failed",
                    extra={"error": repr(exc), "retry_in": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def take(
        self, events: Sequence[RawEvent], process: Callable[[list[RawEvent]], Awaitable[None]]
    ) -> None:
        """Hand ``process`` the events whose config the table does not hold yet; those
        it does (see the module docstring) are acknowledged with them, once their
        changelog records are."""
        unseen = self._unseen
        fresh: list[RawEvent] = []
        skipped = False
        for ev in events:
            where = ev.key or b""
            n = unseen.get(where)
            if n:
                skipped = True
                if n == 1:
                    del unseen[where]
                else:
                    unseen[where] = n - 1
            else:
                fresh.append(ev)
        if skipped:
            await self.flush_until_done()
        if fresh:
            await process(fresh)

    async def handle_batch(self, msgs: Sequence[Message]) -> None:
        # Everything is checked before anything is written: a bad message fails the
        # batch, which the wrapper then replays one by one (the bad one dead-lettered).
        check = self.check
        for msg in msgs:
            if not msg.key:
                raise DecodeError("project-configs message without a key")
            if msg.value is not None:
                check(msg.value)
        data = self.table.data
        send = None if self.changelog is None else self.changelog.send_raw
        for msg in msgs:
            key = cast(bytes, msg.key)
            if msg.raw is None:
                data.pop(key, None)  # a tombstone: the key is deleted
            else:
                data[key] = msg.raw
            if send is not None:
                send(msg.partition, key, msg.raw)
        await self.flushed()

    async def handle(self, msg: Message) -> None:
        await self.handle_batch([msg])


def _dict_of(data: Any) -> Any:
    """The plain dict behind a Faust table's in-memory store (``Store.data``), else
    ``data``: the store's ``__setitem__`` is a Python call per write (a config per
    window at 100k projects) that only writes that dict."""
    inner = getattr(data, "data", None)
    return inner if type(inner) is dict else data


def attach_feed(app: Any, runtime: Runtime, spec: AgentSpec, feed: ServedFeed) -> None:
    """Register the feed agent (as ``attach`` does) with a filter before the wrapper:
    messages this process served directly are acknowledged without being decoded."""
    topic_spec = catalogue.lookup(spec.topic)
    topic = app.topic(
        topic_spec.full_name(runtime.settings.topic_prefix),
        partitions=topic_spec.partitions,
        key_serializer="raw",
        value_serializer="raw",
    )
    runner = InstrumentedAgent(spec, runtime)

    async def agent(stream: Any) -> None:
        async for events in stream.take_events(spec.batch_size, within=spec.batch_within):
            await feed.take([from_faust(e) for e in events], runner.process)

    async def on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        feed.forget()

    agent.__name__ = agent.__qualname__ = spec.name
    app.agent(topic, name=spec.name)(agent)
    app.on_partitions_revoked.connect(on_revoked)
    runtime.agents.append(spec.name)


class FeedRunner:
    """What the feed's ``DirectConsumer`` drives: ``ServedFeed.take`` before the wrapper."""

    def __init__(self, feed: ServedFeed, runner: InstrumentedAgent) -> None:
        self.feed = feed
        self.runner = runner

    @property
    def spec(self) -> AgentSpec:
        return self.runner.spec

    async def process(self, events: Sequence[RawEvent]) -> None:
        await self.feed.take(events, self.runner.process)


FOLLOW_TIMEOUT = 60.0  # how long a revoke waits for the feed to let go (then goes on)


def attach_direct_feed(
    app: Any, runtime: Runtime, spec: AgentSpec, feed: ServedFeed, actives: Callable[[], set[int]]
) -> DirectConsumer:
    """Feed the table through librdkafka, following Faust's assignment of the table
    (``actives``: the changelog partitions this worker owns, once recovered)."""
    topic_spec = catalogue.lookup(spec.topic)
    consumer = DirectConsumer(
        FeedRunner(feed, InstrumentedAgent(spec, runtime)),
        runtime.settings,
        topic_spec.full_name(runtime.settings.topic_prefix),
        compacted=topic_spec.compacted,
        follows=True,
    )

    topic = topic_spec.full_name(runtime.settings.topic_prefix)

    async def on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        # Before Faust goes on: the next owner recovers the table from the topic.
        try:
            await asyncio.wait_for(asyncio.wrap_future(consumer.follow(())), FOLLOW_TIMEOUT)
        except TimeoutError:
            log.warning("project_configs.served.release_slow", extra={"after": FOLLOW_TIMEOUT})
        feed.forget()

    async def on_recovered(sender: Any, **_: Any) -> None:
        partitions, starts = actives(), recovered_ends(app, topic)
        extra = {"partitions": sorted(partitions), "starts": starts}
        log.info("project_configs.served.follow", extra=extra)
        consumer.follow(partitions, starts)

    app.on_partitions_revoked.connect(on_revoked)
    app.on_rebalance_complete.connect(on_recovered)
    install_direct(app, consumer)
    runtime.consumers.append(consumer)
    runtime.agents.append(spec.name)
    return consumer


def recovered_ends(app: Any, topic: str) -> dict[int, int]:
    """partition -> the offset after the last record Faust's recovery surely applied to
    the table (its changelog is ``topic``), where the feed takes over. Not the group's
    commit: on the embedded broker Faust's recovery stops at the base offset of a
    partition's last record batch (docs/broker.md #2), and the records of that batch
    read after it stopped are counted as read but never applied. So: up to the lower of
    the offset read and the high watermark Faust aimed at; the feed reads the rest
    (a record applied twice is written twice, with the same value)."""
    recovery = getattr(getattr(app, "tables", None), "recovery", None)
    read = getattr(recovery, "active_offsets", None) or {}
    aimed = getattr(recovery, "active_highwaters", None) or {}
    return {
        tp.partition: max(0, min(int(o), int(aimed.get(tp, o))) + 1)
        for tp, o in read.items()
        if tp.topic == topic
    }


def feed_of(app: Any) -> ServedFeed | None:
    """The served feed of this worker's app, if it runs one."""
    feed = getattr(app, "streams_served_feed", None)
    return feed if isinstance(feed, ServedFeed) else None
