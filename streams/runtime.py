"""What a worker's agents share: settings, codec, publisher, dead-letter sink, pool, clock.

The shared services are typed against Protocols, so an agent's logic runs in unit
tests on the fakes of ``tests/fakes.py`` as well as in a worker on the real ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import KafkaError
from confluent_kafka import Message as KafkaMessage
from psycopg_pool import AsyncConnectionPool

from streams import catalogue
from streams.avro.codec import SingleObjectCodec, build_codec
from streams.avro.store import default_store
from streams.clock import SYSTEM_CLOCK, Clock
from streams.db.pool import async_pool
from streams.dlq.sink import DeadLetterSink, KafkaDeadLetterSink
from streams.publisher import Delivered, HeaderInput, Publisher
from streams.settings import Settings

Key = str | bytes | int | None


class EventPublisher(Protocol):
    """The part of ``streams.publisher.Publisher`` agents publish through."""

    def send(
        self,
        topic: str,
        value: Any,
        *,
        key: Key = None,
        headers: HeaderInput = None,
        attempt: int = 1,
        on_delivery: Callable[[KafkaError | None, KafkaMessage], None] | None = None,
    ) -> Sequence[tuple[str, bytes]] | None:
        """Check, encode and enqueue; the broker's answer arrives at ``on_delivery``.
        May return the headers sent."""
        ...

    async def publish_async(
        self, topic: str, value: Any, *, key: Key = None, headers: HeaderInput = None
    ) -> Delivered:
        """Publish and await the broker's acknowledgement."""
        ...

    def close(self, timeout: float = 10.0) -> None:
        """Flush and stop."""
        ...


class ConsumerState(Protocol):
    """What ``/health`` reads of a direct agent consumer (``streams.agents.wrapper.direct``)."""

    name: str

    @property
    def ready(self) -> bool: ...

    def assignment(self) -> list[str]: ...


class PoolSource(Protocol):
    """Hands out the worker's PostgreSQL pool, opened on first use."""

    async def get(self) -> AsyncConnectionPool:
        """The pool (opened once)."""
        ...

    async def close(self) -> None:
        """Close the pool if it was opened."""
        ...


class LazyPool:
    """A ``PoolSource`` that opens one async pool for these settings on first use."""

    def __init__(self, settings: Settings, max_size: int = 10) -> None:
        self.settings = settings
        self.max_size = max_size
        self._pool: AsyncConnectionPool | None = None
        self._lock: asyncio.Lock | None = None

    async def get(self) -> AsyncConnectionPool:
        if self._pool is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._pool is None:
                    self._pool = await async_pool(self.settings, max_size=self.max_size)
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


class HandoffTarget(Protocol):
    def offer(self, records: Sequence[Any]) -> int: ...


@dataclass
class Runtime:
    """The services one worker's agents share, and which agents it runs or skipped."""

    settings: Settings
    codec: SingleObjectCodec
    publisher: EventPublisher
    dead_letters: DeadLetterSink
    pools: PoolSource
    clock: Clock = SYSTEM_CLOCK
    agents: list[str] = field(default_factory=list)
    skipped_agents: list[str] = field(default_factory=list)
    consumers: list[ConsumerState] = field(default_factory=list)  # direct agents
    # Catalogue topic -> the worker's own direct consumer of it that takes records this
    # worker published at once (streams/agents/wrapper/handoff.py).
    handoffs: dict[str, HandoffTarget] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        """The real services: Avro codec, Kafka publisher and dead-letter sink, pool."""
        codec = build_codec(default_store(), settings.schema_registry_url)
        publisher = Publisher(settings, codec=codec)
        sink = KafkaDeadLetterSink(publisher, settings.topic_prefix)
        return cls(settings, codec, publisher, sink, LazyPool(settings))

    def topic(self, name: str) -> str:
        """Full (prefixed) name of a catalogue topic (built-in or registered by an extension)."""
        return catalogue.lookup(name).full_name(self.settings.topic_prefix)

    async def pool(self) -> AsyncConnectionPool:
        """The worker's async PostgreSQL pool, opened on first use."""
        return await self.pools.get()

    async def close(self) -> None:
        """Close the pool and flush the publisher."""
        await self.pools.close()
        self.publisher.close()
