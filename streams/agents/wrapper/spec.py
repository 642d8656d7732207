"""``AgentSpec``: what an agent is (name, topic, silos, handlers, policy, consumption)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.agents.wrapper.message import BatchHandler, Handler
from streams.agents.wrapper.retry import RetryPolicy
from streams.silo import SiloMode


class Mode(enum.Enum):
    """How the agent consumes its topic."""

    TAKE = "take"  # batches of up to batch_size, acknowledged once handled
    EACH = "each"  # one event at a time: table writes take the event's partition
    HOLD = "hold"  # batches the agent's ``Holder`` admits, holds and acknowledges later


class Holder(Protocol):
    """The agent side of ``Mode.HOLD`` (e.g. a buffer acknowledging after its flush)."""

    def consuming(self, stream: Any) -> AbstractAsyncContextManager[None]:
        """Around the agent's whole run over ``stream`` (start/stop background work)."""
        ...

    def admitting(self, events: Sequence[Any]) -> AbstractAsyncContextManager[Sequence[Any]]:
        """Around one batch: yields the events to handle, holds them once handled."""
        ...


@dataclass(frozen=True)
class AgentSpec:
    """One agent: its handlers and how the wrapper runs them."""

    name: str
    topic: str  # catalogue name
    silos: frozenset[SiloMode]
    handler: Handler
    batch_handler: BatchHandler | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    deadline: float | None = 60.0
    batch_size: int = 1
    # Longest a batch waits to fill; 0 (TAKE only): no timer, batches of what is ready.
    batch_within: float = 0.1
    mode: Mode = Mode.TAKE
    holder: Holder | None = None  # required by Mode.HOLD
    tombstones: bool = False  # compacted topic: empty values reach the handler as None
    # No Faust table, no per-event context (TAKE only): consumed by a librdkafka consumer
    # with one commit per batch when STREAMS_DIRECT_CONSUMERS is on (wrapper/direct.py).
    direct: bool = False
    # The direct consumer's fetch wait (seconds); None: DEFAULT_FETCH_WAIT (10 ms).
    # Tansu holds every fetch for the whole wait, so an idle direct consumer fetches
    # 1/wait times a second: agents nobody waits on (delayed retries) poll slower.
    fetch_wait: float | None = None
