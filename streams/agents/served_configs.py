"""Feeding the served-configs table: directly from the recompute, or from ``project-configs``.

Two paths write the same table (``table.data``, bytes -> bytes) and its changelog
through librdkafka (``ChangelogWriter``), on the key's partition of
``project-configs`` (the table and the topic are co-partitioned, murmur2 of the key):

- **direct**: the recompute that publishes a config writes it here first, for the
  partitions this worker owns, and marks the message with its own token
  (``served-by`` header). Consuming its own configs back through Faust, decoding the
  Avro and rendering the JSON again cost more than the recompute itself at 100k
  projects (bench/README.md);
- **topic**: the feed agent reads every message; those this process already served
  directly are acknowledged without being decoded (after the changelog is flushed),
  the others (another worker's, or a partition that moved) are written as before.

Either way a batch is acknowledged only once its changelog records are.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiokafka.partitioner import murmur2

from streams import catalogue
from streams.agents.base import AgentSpec, InstrumentedAgent, Message, from_faust
from streams.errors import DecodeError, PublishError
from streams.projectconfigs.changelog import ChangelogWriter
from streams.runtime import Runtime

log = logging.getLogger(__name__)

HEADER = "streams.served-by"  # the token of the process that served the config directly


class ServedFeed:
    """The table's two writers; ``render(record, trusted)`` makes a served document."""

    MAX_CACHED = 500_000  # key -> partition entries (murmur2 is pure Python here)

    def __init__(
        self,
        table: Any,
        changelog: ChangelogWriter,
        render: Callable[[Any, bool], bytes],
        partitions: int,
        owned: Callable[[], set[int]],
    ) -> None:
        self.table = table
        self.changelog = changelog
        self.render = render
        self.partitions = partitions
        self.owned = owned
        self.token = uuid.uuid4().hex.encode()
        self._partition: dict[bytes, int] = {}

    def partition_of(self, key: bytes) -> int:
        """The key's partition as the Java client (and Faust's router) computes it."""
        p = self._partition.get(key)
        if p is None:
            p = (murmur2(key) & 0x7FFFFFFF) % self.partitions
            if len(self._partition) >= self.MAX_CACHED:
                self._partition.clear()
            self._partition[key] = p
        return p

    def serve(self, records: Iterable[tuple[str, Any]]) -> set[str]:
        """Write the records of owned partitions now (queued changelog); their keys.

        ``records`` are (public key, record or None) as the recompute built them.
        """
        owned = self.owned()
        if not owned:
            return set()
        every = len(owned) >= self.partitions
        data, send, render = self.table.data, self.changelog.send_raw, self.render
        done: set[str] = set()
        for key, value in records:
            raw = key.encode()
            partition = self.partition_of(raw)
            if not every and partition not in owned:
                continue
            doc = None if value is None else render(value, True)
            if doc is None:
                data.pop(raw, None)
            else:
                data[raw] = doc
            send(partition, raw, doc)
            done.add(key)
        return done

    def served_here(self, headers: Sequence[tuple[str, bytes]] | None) -> bool:
        """Whether this process wrote the message's config directly."""
        for name, value in headers or ():
            if name == HEADER:
                return bool(value == self.token)
        return False

    async def flush_until_done(self) -> None:
        """Wait until the changelog has every record sent so far, however long it takes:
        the messages skipped meanwhile are not acknowledged before."""
        delay = 0.5
        while True:
            try:
                await self.changelog.flush()
                return
            except PublishError as exc:
                log.warning(
                    "project_configs.served.flush_failed",
                    extra={"error": repr(exc), "retry_in": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def handle_batch(self, msgs: Sequence[Message]) -> None:
        # Everything is rendered before anything is written: a bad message fails the
        # batch, which the wrapper then replays one by one (the bad one dead-lettered).
        rows: list[tuple[int, bytes, bytes | None]] = []
        for msg in msgs:
            if not msg.key:
                raise DecodeError("project-configs message without a key")
            doc = None if msg.value is None else self.render(msg.value, False)
            rows.append((msg.partition, msg.key, doc))
        data, send = self.table.data, self.changelog.send_raw
        for partition, key, doc in rows:
            if doc is None:
                data.pop(key, None)  # a tombstone: the key is deleted
            else:
                data[key] = doc
            send(partition, key, doc)
        await self.changelog.flush()

    async def handle(self, msg: Message) -> None:
        await self.handle_batch([msg])


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
    served_here = feed.served_here

    async def agent(stream: Any) -> None:
        async for events in stream.take_events(spec.batch_size, within=spec.batch_within):
            fresh = [from_faust(e) for e in events if not served_here(e.message.headers)]
            if len(fresh) < len(events):
                # Acknowledged with this batch: their direct changelog records first.
                await feed.flush_until_done()
            if fresh:
                await runner.process(fresh)

    agent.__name__ = agent.__qualname__ = spec.name
    app.agent(topic, name=spec.name)(agent)
    runtime.agents.append(spec.name)


def feed_of(app: Any) -> ServedFeed | None:
    """The served feed of this worker's app, if it runs one."""
    feed = getattr(app, "streams_served_feed", None)
    return feed if isinstance(feed, ServedFeed) else None
