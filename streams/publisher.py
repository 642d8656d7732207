"""Safe publishing: schema check, Avro encoding, metadata headers, idempotent producer.

``Publisher.send`` checks and enqueues without blocking; ``publish`` waits for the
broker's acknowledgement (raising ``PublishError`` if it does not come), and
``publish_async`` awaits it from asyncio. Delivery callbacks are served by one
background poll thread per publisher.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import psycopg
from confluent_kafka import KafkaError, Message, Producer

from streams import catalogue, kafka_config, metrics, tracing
from streams.avro.codec import SingleObjectCodec, build_codec
from streams.avro.store import SchemaStore, default_store
from streams.delayed.due import delay_seconds
from streams.delayed.store import DelayedWriter, Prepared, Scheduled, insert
from streams.errors import MessageTooLarge, PublishError, SchemaMismatch, WrongSilo
from streams.settings import Settings

HeaderInput = Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] | None
_delayed_lock = threading.Lock()


@dataclass(frozen=True)
class Delivered:
    topic: str
    partition: int
    offset: int


class _Route:
    """Per-topic state resolved once: silo checked, full name, metric children."""

    __slots__ = ("broker_errors", "full", "published", "schema_errors", "seconds", "spec", "topic")

    def __init__(self, topic: str, spec: catalogue.TopicSpec, full: str) -> None:
        self.topic = topic
        self.spec = spec
        self.full = full
        self.seconds = metrics.PUBLISH_SECONDS.labels(topic)
        self.published = metrics.PUBLISHED.labels(topic)
        self.broker_errors = metrics.PUBLISH_ERRORS.labels(topic, "broker")
        self.schema_errors = metrics.PUBLISH_ERRORS.labels(topic, "schema")

    def delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.published.inc()
        else:
            self.broker_errors.inc()


class ProducerLike(Protocol):
    def produce(self, topic: str, value: Any = ..., key: Any = ..., **kwargs: Any) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...


def _key_bytes(key: str | bytes | int | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return str(key).encode()


def _headers(extra: HeaderInput, base: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    if not extra:
        return base
    items = extra.items() if isinstance(extra, Mapping) else extra
    out = list(base)
    for k, v in items:
        out.append((k, v if isinstance(v, bytes) else str(v).encode()))
    return out


class Publisher:
    """Publishes values to catalogue topics, checked against their schemas first."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: SchemaStore | None = None,
        codec: SingleObjectCodec | None = None,
        producer: ProducerLike | None = None,
        **producer_overrides: Any,
    ) -> None:
        self.settings = settings
        self.codec = codec or build_codec(store or default_store(), settings.schema_registry_url)
        self.producer: ProducerLike = cast(
            ProducerLike,
            producer or Producer(kafka_config.producer(settings, **producer_overrides)),
        )
        # Only refusals get a delivery report (no Python call per acknowledged message):
        # the sender learns success from a flush that emptied the queue
        # (streams.projectconfigs.publish.send_all).
        self.reports_only_errors = bool(producer_overrides.get("delivery.report.only.error"))
        self._prefix = settings.topic_prefix
        self._producer_name = settings.producer_name
        self._routes: dict[str, _Route] = {}
        self._silo = settings.silo_mode
        self._closed = threading.Event()
        self._delayed: DelayedWriter | None = None
        # Called first by flush() (and so close()): e.g. increments held to be summed
        # (streams/incr_coalesce.py) are sent before the producer is flushed.
        self.before_flush: list[Callable[[], None]] = []
        self._poller = threading.Thread(target=self._poll_loop, name="streams-poll", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._closed.is_set():
            self.producer.poll(0.05)

    def count_published(self, topic: str, n: int) -> None:
        """Count ``n`` acknowledged messages whose success had no delivery report."""
        self._route(topic).published.inc(n)

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        self._closed.set()
        self._poller.join(timeout=1.0)
        if self._delayed is not None:
            self._delayed.close()

    def flush(self, timeout: float = 10.0) -> None:
        for hook in self.before_flush:
            hook()
        remaining = self.producer.flush(timeout)
        if remaining:
            raise PublishError(f"{remaining} messages not acknowledged within {timeout}s")

    def _route(self, topic: str) -> _Route:
        route = self._routes.get(topic)
        if route is None:
            spec = catalogue.lookup(topic)
            if not self._silo.allows(spec.publishers):
                raise WrongSilo(
                    f"silo {self._silo.value!r} may not publish to {topic!r} "
                    f"(owned by {sorted(s.value for s in spec.publishers)})"
                )
            route = _Route(topic, spec, spec.full_name(self._prefix))
            self._routes[topic] = route
        return route

    def encode(self, topic: str, value: Any) -> tuple[str, bytes | None]:
        """Check silo and schema, then encode. Raises TypeError/WrongSilo before any I/O."""
        route = self._route(topic)
        return route.full, self._encode(route, value)

    def _encode(self, route: _Route, value: Any) -> bytes | None:
        spec = route.spec
        if value is None:
            if not spec.compacted:
                raise SchemaMismatch(
                    route.topic, "", value, "tombstones only go to compacted topics"
                )
            return None
        if not spec.avro:
            if not isinstance(value, bytes):
                raise SchemaMismatch(route.topic, "", value, "this topic carries raw bytes")
            return value
        try:
            return self.codec.encode(route.topic, value)
        except SchemaMismatch:
            route.schema_errors.inc()
            raise

    def send(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | int | None = None,
        headers: HeaderInput = None,
        attempt: int = 1,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> list[tuple[str, bytes]]:
        """Check, encode and enqueue; the broker's answer arrives at ``on_delivery``.
        Returns the headers sent (a delivery report does not carry them)."""
        started = time.perf_counter()
        route = self._route(topic)
        data = self._encode(route, value)
        hdrs = _headers(headers, tracing.metadata_headers(self._producer_name, attempt))
        key_bytes = _checked_size(route, data, _key_bytes(key), hdrs)
        if on_delivery is None:
            cb = route.delivered
        else:

            def cb(err: KafkaError | None, msg: Message) -> None:
                route.delivered(err, msg)
                on_delivery(err, msg)

        self._produce(route.full, data, key_bytes, hdrs, cb)
        route.seconds.observe(time.perf_counter() - started)
        return hdrs

    def send_batch(
        self,
        topic: str,
        items: Sequence[tuple[str | bytes, Any, list[tuple[str, bytes]]]],
        on_delivery: Callable[[KafkaError | None, Message], None],
    ) -> list[bytes | None]:
        """``send`` for many (key, value, headers) at once, one delivery callback for all:
        the topic resolved, the shared metadata headers built and the time recorded
        once per batch (``streams_publish_seconds`` gets the batch's mean per message,
        one observation). Every value is checked and encoded before any is enqueued.
        Returns the encoded values, in order (None: a tombstone)."""
        started = time.perf_counter()
        route = self._route(topic)
        encode, limit = (
            self._encoder(route),
            route.spec.max_message_bytes - catalogue.RECORD_OVERHEAD,
        )
        metas = list(tracing.metadata_headers_many(self._producer_name, len(items)))
        # The metadata headers of one batch all have the same size (fixed-width ids).
        meta_size = sum(len(k) + len(v) for k, v in metas[0]) if metas else 0
        ready = []
        try:
            for (key, value, extra), meta in zip(items, metas, strict=True):
                data = encode(value) if value is not None else self._encode(route, None)
                key_bytes = key if isinstance(key, bytes) else key.encode()
                hdrs = meta + extra
                size = len(data or b"") + len(key_bytes) + meta_size
                for k, v in extra:  # a loop: a generator per message cost 0.8 us
                    size += len(k) + len(v)
                if size > limit:
                    _checked_size(route, data, key_bytes, hdrs)  # raises, with the message
                ready.append((data, key_bytes, hdrs))
        except SchemaMismatch:
            route.schema_errors.inc()
            raise

        def cb(err: KafkaError | None, msg: Message) -> None:
            route.delivered(err, msg)
            on_delivery(err, msg)

        self._produce_all(route.full, ready, cb)
        if items:
            route.seconds.observe((time.perf_counter() - started) / len(items))
        return [data for data, _, _ in ready]

    def send_raw(
        self,
        full_topic: str,
        value: bytes | None,
        *,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        """Enqueue bytes as they are (dead letters and their replay)."""
        self._produce(full_topic, value, key, headers, on_delivery)

    def _encoder(self, route: _Route) -> Callable[[Any], bytes | None]:
        """``_encode`` for one topic's values other than None (tombstones), resolved
        once per batch."""
        make = getattr(self.codec, "encoder", None)
        if route.spec.avro and make is not None:
            return cast(Callable[[Any], bytes], make(route.topic))
        return functools.partial(self._encode, route)

    def _produce_all(
        self,
        topic: str,
        ready: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]],
        cb: Callable[[KafkaError | None, Message], None],
    ) -> None:
        producer = self.producer
        if not isinstance(producer, Producer):  # a stand-in (tests): by keyword
            for data, key_bytes, hdrs in ready:
                self._produce(topic, data, key_bytes, hdrs, cb)
            return
        produce = producer.produce
        for data, key_bytes, hdrs in ready:
            while True:
                try:
                    # Positional: topic, value, key, partition (-1: the partitioner's),
                    # callback, on_delivery, timestamp (0: now), headers. Parsing keywords
                    # was a quarter of the call (tests/projectconfigs/test_send_all.py
                    # checks every field arrives).
                    produce(topic, data, key_bytes, -1, cb, None, 0, hdrs)
                    break
                except BufferError:
                    time.sleep(0.005)  # local queue full: the poll thread drains it

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        cb: Callable[[KafkaError | None, Message], None] | None,
    ) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=cb)
                return
            except BufferError:
                # Local queue full: let the poll thread drain it, then try again.
                time.sleep(0.005)

    def publish(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | int | None = None,
        headers: HeaderInput = None,
        timeout: float = 30.0,
    ) -> Delivered:
        """Publish and wait for the broker's acknowledgement."""
        done = threading.Event()
        result: list[Delivered | PublishError] = []

        def cb(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                result.append(PublishError(f"{topic}: {err.str()}"))
            else:
                result.append(_delivered(msg))
            done.set()

        self.send(topic, value, key=key, headers=headers, on_delivery=cb)
        if not done.wait(timeout):
            raise PublishError(
                f"{topic}: no acknowledgement from Kafka at "
                f"{self.settings.kafka_bootstrap_servers} within {timeout}s"
            )
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
        """Publish and await the broker's acknowledgement without blocking the loop."""
        fut = self.send_future(topic, value, key=key, headers=headers)
        return await fut

    def prepare(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | int | None = None,
        headers: HeaderInput = None,
        attempt: int = 1,
    ) -> Prepared:
        """Check silo and schema and encode, with metadata headers; nothing is sent."""
        route = self._route(topic)
        data = self._encode(route, value)
        hdrs = _headers(headers, tracing.metadata_headers(self._producer_name, attempt))
        return Prepared(route.full, data, _checked_size(route, data, _key_bytes(key), hdrs), hdrs)

    def schedule(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | int | None = None,
        headers: HeaderInput = None,
        countdown: float | None = None,
        eta: dt.datetime | None = None,
        conn: psycopg.Connection[Any] | None = None,
        dedupe_id: str | None = None,
    ) -> Scheduled:
        """Publish ``countdown`` s from now (or at ``eta``), through ``scheduled_messages``.

        The value is checked and encoded now (``TypeError`` before anything is stored).
        With ``conn`` the row is part of the caller's transaction: nothing is published
        unless it commits, and (without countdown/eta) it is published right after the
        commit. Without ``conn`` it is committed on its own before this returns. A
        ``dedupe_id`` already stored makes the call a no-op (``Scheduled.id`` is None).
        """
        delay = delay_seconds(countdown, eta)
        msg = self.prepare(topic, value, key=key, headers=headers)
        if conn is not None:
            return insert(conn, msg, delay, dedupe_id)
        return self.delayed_writer().store(msg, delay, dedupe_id)

    async def schedule_async(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | int | None = None,
        headers: HeaderInput = None,
        countdown: float | None = None,
        eta: dt.datetime | None = None,
        dedupe_id: str | None = None,
    ) -> Scheduled:
        """``schedule`` without blocking the event loop (its own committed write)."""
        delay = delay_seconds(countdown, eta)
        msg = self.prepare(topic, value, key=key, headers=headers)
        return await asyncio.to_thread(self.delayed_writer().store, msg, delay, dedupe_id)

    def delayed_writer(self) -> DelayedWriter:
        """The pool that stores delayed messages of callers without a transaction."""
        if self._delayed is None:
            with _delayed_lock:
                if self._delayed is None:
                    self._delayed = DelayedWriter(self.settings.database_url.get())
        return self._delayed

    def send_future(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | int | None = None,
        headers: HeaderInput = None,
        attempt: int = 1,
    ) -> asyncio.Future[Delivered]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Delivered] = loop.create_future()
        self.send(
            topic,
            value,
            key=key,
            headers=headers,
            attempt=attempt,
            on_delivery=_resolver(loop, fut, topic),
        )
        return fut


def _delivered(msg: Message) -> Delivered:
    return Delivered(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)


def _resolver(
    loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Delivered], topic: str
) -> Callable[[KafkaError | None, Message], None]:
    def cb(err: KafkaError | None, msg: Message) -> None:
        def settle() -> None:
            if fut.done():
                return
            if err is not None:
                fut.set_exception(PublishError(f"{topic}: {err.str()}"))
            else:
                fut.set_result(_delivered(msg))

        loop.call_soon_threadsafe(settle)

    return cb


def raw_future(
    publisher: Publisher,
    full_topic: str,
    value: bytes | None,
    *,
    key: bytes | None,
    headers: list[tuple[str, bytes]],
) -> asyncio.Future[Delivered]:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Delivered] = loop.create_future()
    publisher.send_raw(
        full_topic, value, key=key, headers=headers, on_delivery=_resolver(loop, fut, full_topic)
    )
    return fut


def _checked_size(
    route: _Route, data: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]
) -> bytes | None:
    """``key`` once the whole record is known to fit its topic; else ``MessageTooLarge``."""
    size = len(data or b"") + len(key or b"") + sum(len(k) + len(v) for k, v in headers)
    if not route.spec.fits(size):
        raise MessageTooLarge(
            f"{route.topic}: a message of {size} bytes exceeds the topic's limit of "
            f"{route.spec.max_message_bytes} bytes (max.message.bytes); nothing was sent"
        )
    return key
