"""What the wrapper consumes (``RawEvent``) and what a handler sees (``Message``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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


Headers = Sequence[tuple[str, bytes]] | Mapping[str, bytes]


class Consumed(Protocol):
    """A record as librdkafka hands it over (``confluent_kafka.Message``)."""

    def headers(self) -> list[tuple[str, bytes]] | None: ...


class RawEvent:
    """The parts of a consumed record the wrapper needs (Faust-independent).

    ``headers`` may be read lazily from the consumed record (``RawEvent.of``):
    librdkafka turns a record's headers into Python objects only when asked, and for
    ten headers that cost the consumer thread 3-20 us a record, more than the rest of
    the record (bench/README.md, config invalidation). Most records are handled
    without reading their headers.
    """

    __slots__ = ("_headers", "_source", "key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(  # noqa: PLR0917 (positional, as the dataclass it replaced)
        self,
        topic: str,  # full name
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp: float,
    ) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key, self.value, self.timestamp = key, value, timestamp
        self._headers: Headers | None = headers
        self._source: Consumed | None = None

    @classmethod
    def of(  # noqa: PLR0917 (the constructor's order, on the consumer's hot path)
        cls,
        source: Consumed,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp: float,
    ) -> RawEvent:
        """An event whose headers are read from ``source`` when first asked for."""
        ev = cls(topic, partition, offset, key, value, (), timestamp)
        ev._headers, ev._source = None, source
        return ev

    @property
    def headers(self) -> Headers:
        got = self._headers
        if got is None:
            assert self._source is not None
            got = self._headers = self._source.headers() or []
            self._source = None
        return got

    def __repr__(self) -> str:
        return (
            f"RawEvent({self.topic!r}, {self.partition}, {self.offset}, {self.key!r}, "
            f"{len(self.value or b'')} bytes)"
        )


class LazyHeaders(Mapping[str, bytes]):
    """``Message.headers`` of an event: its headers as a dict, made on first use."""

    __slots__ = ("_dict", "_ev")

    def __init__(self, ev: RawEvent) -> None:
        self._ev: RawEvent | None = ev
        self._dict: dict[str, bytes] | None = None

    def _made(self) -> dict[str, bytes]:
        got = self._dict
        if got is None:
            assert self._ev is not None
            headers = self._ev.headers
            got = self._dict = dict(headers.items() if isinstance(headers, Mapping) else headers)
            self._ev = None
        return got

    def __getitem__(self, name: str) -> bytes:
        return self._made()[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._made().get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._made()

    def __iter__(self) -> Iterator[str]:
        return iter(self._made())

    def __len__(self) -> int:
        return len(self._made())

    def __repr__(self) -> str:
        return repr(self._made())
