"""One shared set of fakes for unit tests, behind the Protocols the real code uses.

``FakePublisher`` (``streams.runtime.EventPublisher`` and the sink's ``RawSender``; schema checks
with ``codec=``),
``FakeDeadLetterSink`` (``streams.dlq.sink.DeadLetterSink``), ``FakeClock``
(``streams.clock.Clock``), ``JsonCodec`` (the wrapper's ``Decoder``) and
``FakeServices`` (what the agent wrapper needs from a ``Runtime``). There is no fake
pool: agents speak SQL, so their database side is tested against real PostgreSQL.
``tests/dlq/test_contracts.py`` runs the same contract tests against these fakes and
the real implementations.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError
from confluent_kafka import Message as KafkaMessage

from streams import catalogue, tracing
from streams.avro.codec import SingleObjectCodec
from streams.dlq.headers import Letter
from streams.errors import DecodeError, PublishError
from streams.publisher import Delivered, HeaderInput

OnDelivery = Callable[[KafkaError | None, KafkaMessage], None]


@dataclass(frozen=True)
class Sent:
    """One message a fake publisher accepted."""

    topic: str  # full name
    value: Any
    key: bytes | None
    headers: list[tuple[str, bytes]]
    trace: tracing.TraceContext | None  # the trace context current at send time

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


def _headers(extra: HeaderInput, base: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    if not extra:
        return base
    items = extra.items() if isinstance(extra, Mapping) else extra
    return base + [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in items]


class FakeError:
    """What a fake delivery report carries when the fake refuses a message."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def str(self) -> str:
        return self.reason


class FakePublisher:
    """Accepts and acknowledges every message at once (offset = its index), unless
    ``fail_next`` is above 0: then that many deliveries report an error instead."""

    def __init__(
        self, prefix: str = "", producer: str = "fake", *, codec: SingleObjectCodec | None = None
    ) -> None:
        self.prefix = prefix
        self.producer = producer
        self.codec = codec  # when set, values are checked against their schema first
        self.sent: list[Sent] = []
        self.fail_next = 0
        self.closed = False

    def _deliver(self, sent: Sent, on_delivery: OnDelivery | None) -> None:
        """Accept ``sent`` or refuse it; the answer goes to ``on_delivery`` (else a
        refusal raises ``PublishError``, as a failed synchronous publish would)."""
        if self.fail_next > 0:
            self.fail_next -= 1
            if on_delivery is None:
                raise PublishError(f"{sent.topic}: fake broker refused")
            on_delivery(FakeError("fake broker refused"), None)  # type: ignore[arg-type]
            return
        self.sent.append(sent)
        if on_delivery is not None:
            on_delivery(None, None)  # type: ignore[arg-type]

    def send(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | int | None = None,
        headers: HeaderInput = None,
        attempt: int = 1,
        on_delivery: OnDelivery | None = None,
    ) -> None:
        full = catalogue.lookup(topic).full_name(self.prefix)
        if self.codec is not None:
            self.codec.encode(topic, value)  # raises SchemaMismatch (a TypeError)
        raw_key = key if key is None or isinstance(key, bytes) else str(key).encode()
        hdrs = _headers(headers, tracing.metadata_headers(self.producer, attempt))
        self._deliver(Sent(full, value, raw_key, hdrs, tracing.current()), on_delivery)

    def _sync(self, topic: str, value: Any, **kw: Any) -> Delivered:
        result: list[Delivered | PublishError] = []

        def cb(err: KafkaError | None, _msg: KafkaMessage) -> None:
            full = catalogue.lookup(topic).full_name(self.prefix)
            if err is None:
                result.append(Delivered(full, 0, len(self.sent) - 1))
            else:
                result.append(PublishError(f"{full}: {err.str()}"))

        self.send(topic, value, on_delivery=cb, **kw)
        outcome = result[0]
        if isinstance(outcome, PublishError):
            raise outcome
        return outcome

    async def publish_async(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | int | None = None,
        headers: HeaderInput = None,
    ) -> Delivered:
        return self._sync(topic, value, key=key, headers=headers)

    def send_raw(
        self,
        full_topic: str,
        value: bytes | None,
        *,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        on_delivery: OnDelivery | None = None,
    ) -> None:
        self._deliver(Sent(full_topic, value, key, list(headers), tracing.current()), on_delivery)

    def close(self, timeout: float = 10.0) -> None:
        self.closed = True


@dataclass
class FakeDeadLetterSink:
    """Stores each letter with its wire headers, as the dead-letter topic would."""

    letters: list[Letter] = field(default_factory=list)
    stored: list[list[tuple[str, bytes]]] = field(default_factory=list)

    async def send(self, letter: Letter) -> None:
        self.letters.append(letter)
        self.stored.append(letter.wire_headers())

    def reasons(self) -> list[str]:
        return [letter.failure.reason.value for letter in self.letters]


class FakeClock:
    """Time that moves only when something sleeps: retries and backoff cost nothing."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)  # still yield to the loop, as a real sleep does

    def block(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)


class JsonCodec:
    """Decodes JSON objects; anything else is a ``DecodeError`` (the wrapper's Decoder)."""

    def decode(self, topic: str, data: bytes) -> Any:
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise DecodeError(f"{topic}: not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise DecodeError(f"{topic}: not a JSON object")
        return value


@dataclass
class FakeServices:
    """What ``InstrumentedAgent`` needs, all fake."""

    codec: JsonCodec = field(default_factory=JsonCodec)
    dead_letters: FakeDeadLetterSink = field(default_factory=FakeDeadLetterSink)
    clock: FakeClock = field(default_factory=FakeClock)
