"""What a worker's agents share: settings, codec, publisher, dead letters, database pool."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool

from streams import catalogue
from streams.agents.dead_letters import DeadLetters
from streams.avro.codec import SingleObjectCodec, build_codec
from streams.avro.store import default_store
from streams.db.pool import async_pool
from streams.publisher import Publisher
from streams.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    codec: SingleObjectCodec
    publisher: Publisher
    dead_letters: DeadLetters
    agents: list[str] = field(default_factory=list)
    skipped_agents: list[str] = field(default_factory=list)
    _pool: AsyncConnectionPool | None = None
    _pool_lock: asyncio.Lock | None = None

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        codec = build_codec(default_store(), settings.schema_registry_url)
        publisher = Publisher(settings, codec=codec)
        return cls(settings, codec, publisher, DeadLetters(publisher, settings.topic_prefix))

    def topic(self, name: str) -> str:
        """Full (prefixed) name of a catalogue topic."""
        return catalogue.spec(name).full_name(self.settings.topic_prefix)

    async def pool(self) -> AsyncConnectionPool:
        """The worker's async PostgreSQL pool, opened on first use."""
        if self._pool is None:
            if self._pool_lock is None:
                self._pool_lock = asyncio.Lock()
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await async_pool(self.settings, max_size=10)
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        self.publisher.close()
