"""The retry agent's waiting, with fakes (no broker): due order, bounded hold, re-queue."""

from __future__ import annotations

import asyncio
import contextlib
import time
import types
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest

from streams.agents.base import Message
from streams.agents.webhook_delivery import RETRY_TOPIC, WebhookDeliveries, build_deliverer
from streams.errors import ConfigurationError
from streams.settings import Settings
from streams.webhooks.breaker import CircuitBreaker
from streams.webhooks.deliver import Deliverer, Target, TargetKey
from streams.webhooks.http import HttpResult
from streams.webhooks.ssrf import SsrfGuard


class Sender:
    def __init__(self) -> None:
        self.sent: list[tuple[float, bytes]] = []

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> HttpResult:
        self.sent.append((time.time(), body))
        return HttpResult(200, 0.001)

    async def close(self) -> None:
        return None


class Store:
    async def targets(self, keys: Sequence[TargetKey]) -> Mapping[TargetKey, Target]:
        return {k: Target(k[0], k[1], "http://93.184.216.34/hook", "s") for k in keys}

    async def record(self, entries: Any, fired: Any) -> None:
        return None


class Publisher:
    """Acknowledges every send at once, and remembers it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], str]] = []

    def send(self, topic: str, value: dict[str, Any], *, key: str, on_delivery: Any) -> None:
        self.sent.append((topic, value, key))
        on_delivery(None, None)


class Runtime:
    def __init__(self) -> None:
        self.publisher = Publisher()


def msg(n: int, due_in: float) -> Message:
    value = {
        "delivery_id": f"d-{n}",
        "target_kind": "sentry_app",
        "target_id": n,
        "event_type": "issue.created",
        "resource": "issue",
        "payload": f'{{"n":{n}}}',
        "attempt": 2,
        "not_before": int((time.time() + due_in) * 1000),
        "created_at": 0,
    }
    return Message(RETRY_TOPIC, 0, n, None, value, b"", {}, 0.0)


def agent(hold: float) -> tuple[WebhookDeliveries, Sender, Runtime]:
    sender, runtime = Sender(), Runtime()
    deliverer = Deliverer(
        sender,
        SsrfGuard(),
        CircuitBreaker(10, 60.0),
        timeout=1.0,
        max_attempts=5,
        retry_delay=1.0,
    )
    return WebhookDeliveries(runtime, deliverer, Store(), hold=hold), sender, runtime  # type: ignore[arg-type]


def test_retries_wait_for_their_time_in_due_order() -> None:
    handler, sender, runtime = agent(hold=5.0)
    started = time.time()
    asyncio.run(handler.retries([msg(2, 0.3), msg(1, 0.0), msg(3, 0.15)]))
    assert [body for _, body in sender.sent] == [b'{"n":1}', b'{"n":3}', b'{"n":2}']
    assert sender.sent[0][0] - started < 0.1
    assert sender.sent[1][0] - started >= 0.14
    assert sender.sent[2][0] - started >= 0.29
    assert runtime.publisher.sent == []


def test_what_is_not_due_within_the_hold_goes_back_unchanged() -> None:
    handler, sender, runtime = agent(hold=0.3)
    late = msg(3, 30.0)
    started = time.monotonic()
    asyncio.run(handler.retries([msg(1, 0.0), late, msg(2, 0.1)]))
    assert time.monotonic() - started < 1.0  # held about 0.3 s, not 30
    assert [body for _, body in sender.sent] == [b'{"n":1}', b'{"n":2}']
    assert runtime.publisher.sent == [(RETRY_TOPIC, late.value, "sentry_app:3")]


def test_max_retries_counts_retries_and_the_old_variable_is_refused() -> None:
    base = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DATABASE_URL": "postgresql://x"}
    assert Settings.from_env(base).webhook_max_retries == 5  # 1 + 5 attempts
    s = Settings.from_env({**base, "STREAMS_WEBHOOK_MAX_RETRIES": "2"})
    assert build_deliverer(s).max_attempts == 3
    with pytest.raises(ConfigurationError, match="STREAMS_WEBHOOK_MAX_RETRIES instead"):
        Settings.from_env({**base, "STREAMS_WEBHOOK_MAX_ATTEMPTS": "5"})


class Conn:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.stored: list[tuple[Any, ...]] = []

    async def execute(self, sql: bytes, params: tuple[Any, ...]) -> None:
        if self.fail:
            raise ConnectionError("database down")
        self.stored.append(params)


class Pool:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        yield self.conn


class StoringRuntime(Runtime):
    """A runtime whose database is ``conn`` (values encoded as their repr)."""

    def __init__(self, conn: Conn) -> None:
        super().__init__()
        self.conn = conn
        self.settings = types.SimpleNamespace(producer_name="test")
        self.codec = types.SimpleNamespace(encode=lambda topic, value: repr(value).encode())

    def topic(self, name: str) -> str:
        return name

    async def pool(self) -> Pool:
        return Pool(self.conn)


def failing_agent(conn: Conn, retry_delay: float) -> tuple[WebhookDeliveries, StoringRuntime]:
    class Failing(Sender):
        async def post(
            self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
        ) -> HttpResult:
            return HttpResult(503, 0.001)

    runtime = StoringRuntime(conn)
    deliverer = Deliverer(
        Failing(), SsrfGuard(), CircuitBreaker(100, 60.0), timeout=1.0, max_attempts=6,
        retry_delay=retry_delay,
    )  # fmt: skip
    return WebhookDeliveries(runtime, deliverer, Store()), runtime  # type: ignore[arg-type]


def test_a_long_retry_waits_in_the_database_a_short_one_on_the_topic() -> None:
    conn = Conn(fail=False)
    handler, runtime = failing_agent(conn, retry_delay=300.0)
    asyncio.run(handler.retries([msg(1, 0.0)]))
    assert runtime.publisher.sent == []  # nothing holds the retry partition for 5 minutes
    ((delay, topic, _key, _value, _names, _values, dedupe),) = conn.stored
    assert (topic, 299.0 < delay <= 300.0) == (RETRY_TOPIC, True)
    assert dedupe.startswith("webhook:d-1:2:")  # the consumed attempt: stored once

    conn = Conn(fail=False)
    handler, runtime = failing_agent(conn, retry_delay=0.5)
    asyncio.run(handler.retries([msg(2, 0.0)]))
    assert conn.stored == []
    ((topic, value, _),) = runtime.publisher.sent
    assert (topic, value["attempt"]) == (RETRY_TOPIC, 3)


def test_a_long_retry_the_database_refuses_goes_onto_the_topic_not_lost() -> None:
    handler, runtime = failing_agent(Conn(fail=True), retry_delay=300.0)
    asyncio.run(handler.retries([msg(3, 0.0)]))  # never raises: the POST was sent
    ((topic, value, _),) = runtime.publisher.sent
    assert (topic, value["attempt"]) == (RETRY_TOPIC, 3)
