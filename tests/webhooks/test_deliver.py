"""One delivery attempt's verdict, with a fake HTTP sender (no network)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from streams.settings import Secret, Settings
from streams.webhooks import signing
from streams.webhooks.breaker import CircuitBreaker
from streams.webhooks.deliver import Deliverer, Outcome, Target, Verdict
from streams.webhooks.http import HttpResult
from streams.webhooks.ssrf import SsrfGuard


class FakeSender:
    """Answers from a script and records every request it was asked to send."""

    def __init__(self, *answers: HttpResult) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> HttpResult:
        self.sent.append((url, body, dict(headers)))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    async def close(self) -> None:
        return None


TARGET = Target("sentry_app", 1, "http://93.184.216.34/hook", "s3cret")


def delivery(attempt: int = 1) -> dict[str, Any]:
    return {
        "delivery_id": "d-1",
        "target_kind": "sentry_app",
        "target_id": 1,
        "event_type": "issue.created",
        "resource": "issue",
        "payload": '{"action":"created"}',
        "attempt": attempt,
    }


def run(
    sender: FakeSender,
    attempt: int = 1,
    target: Target | None = TARGET,
    breaker: CircuitBreaker | None = None,
) -> Outcome:
    d = Deliverer(
        sender,
        SsrfGuard(),
        breaker or CircuitBreaker(10, 60.0),
        timeout=1.0,
        max_attempts=3,
        retry_delay=300.0,
    )
    return asyncio.run(d.attempt(delivery(attempt), target))


def test_success_is_signed_with_the_target_secret() -> None:
    sender = FakeSender(HttpResult(200, 0.01))
    out = run(sender)
    assert out.verdict is Verdict.DELIVERED and out.requested
    ((url, body, headers),) = sender.sent
    assert url == TARGET.url and body == b'{"action":"created"}'
    assert signing.verify(body, "s3cret", headers[signing.H_SIGNATURE])
    assert headers[signing.H_REQUEST_ID] == "d-1"


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (HttpResult(500, 0.1), "http_500"),
        (HttpResult(503, 0.1), "http_503"),
        (HttpResult(408, 0.1), "http_408"),
        (HttpResult(429, 0.1), "http_429"),
        (HttpResult(None, 1.0, "timeout after 1.0s"), "timeout"),
        (HttpResult(None, 0.0, "ClientConnectorError: refused"), "connection_error"),
    ],
)
def test_retryable_failures_retry_until_the_last_attempt(result: HttpResult, reason: str) -> None:
    out = run(FakeSender(result), attempt=2)
    assert (out.verdict, out.reason, out.retry_in) == (Verdict.RETRY, reason, 300.0)
    last = run(FakeSender(result), attempt=3)
    assert (last.verdict, last.reason) == (Verdict.DEAD, reason)
    assert "gave up after 3 attempts" in last.detail


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 301])
def test_other_answers_are_final(status: int) -> None:
    out = run(FakeSender(HttpResult(status, 0.1)))
    assert (out.verdict, out.reason) == (Verdict.DEAD, f"http_{status}")


def test_internal_target_is_refused_without_sending() -> None:
    sender = FakeSender(HttpResult(200, 0.0))
    for url in ("http://10.0.0.1/x", "http://169.254.169.254/latest/meta-data/"):
        out = run(sender, target=Target("service_hook", 2, url, "s"))
        assert (out.verdict, out.reason, out.requested) == (Verdict.DEAD, "ssrf", False)
    assert sender.sent == []


def test_refusal_at_connect_time_is_final() -> None:
    out = run(FakeSender(HttpResult(None, 0.0, "rebound to 10.0.0.1", refused=True)))
    assert (out.verdict, out.reason) == (Verdict.DEAD, "ssrf")


def test_gone_target_is_skipped() -> None:
    sender = FakeSender(HttpResult(200, 0.0))
    assert run(sender, target=None).verdict is Verdict.SKIPPED
    assert sender.sent == []


def test_open_circuit_defers_without_sending_or_spending_an_attempt() -> None:
    breaker = CircuitBreaker(2, 30.0)
    failing = FakeSender(HttpResult(500, 0.0))
    run(failing, breaker=breaker)
    run(failing, breaker=breaker)
    out = run(failing, breaker=breaker)
    assert out.verdict is Verdict.DEFER and 29.0 < out.retry_in <= 30.0
    assert len(failing.sent) == 2


def test_defaults_are_five_retries_five_minutes_apart() -> None:
    s = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DATABASE_URL": "postgresql://x"})
    assert (s.webhook_max_retries, s.webhook_retry_delay) == (5, 300.0)
    assert s.database_url == Secret("postgresql://x")
