"""What the wrapper consumes (``RawEvent``) and what a handler sees (``Message``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streams import tracing


@dataclass(frozen=True)
class Message:
    """One decoded message as an agent's handler sees it."""

    topic: str  # catalogue name
    partition: int
    offset: int
    key: bytes | None
    value: Any
    raw: bytes | None
    headers: Mapping[str, bytes]
    timestamp: float

    @property
    def attempt(self) -> int:
        """The ``streams-attempt`` header (1 when absent or malformed)."""
        raw = self.headers.get(tracing.H_ATTEMPT)
        try:
            return int(raw) if raw else 1
        except ValueError:
            return 1

    @property
    def trace(self) -> tracing.TraceContext | None:
        """The trace context the message was published in (None if it carries none)."""
        return tracing.parse_traceparent(self.headers.get(tracing.H_TRACEPARENT))


Handler = Callable[[Message], Awaitable[None]]
BatchHandler = Callable[[Sequence[Message]], Awaitable[None]]


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
