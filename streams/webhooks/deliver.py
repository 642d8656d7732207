"""One delivery attempt and its verdict, independent of Kafka and of the database.

``Deliverer.attempt`` takes a delivery (the ``webhook-deliveries`` value) and its
target, applies the SSRF guard and the circuit breaker, signs and POSTs the body,
and says what should happen next: delivered, retry later (spending an attempt),
defer (circuit open, no attempt spent), dead-letter, or skip (target gone).
Retry rule: 408, 429, 5xx, timeouts and connection errors are retried; every other
non-2xx answer is final (retrying cannot change it).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams.webhooks import signing
from streams.webhooks.breaker import CircuitBreaker, origin
from streams.webhooks.http import HttpResult, HttpSender
from streams.webhooks.ssrf import SsrfGuard, SsrfRefused

RETRYABLE_STATUS = frozenset({408, 429})

TargetKey = tuple[str, int]  # (target_kind, target_id)


@dataclass(frozen=True)
class Target:
    kind: str  # sentry_app (an installation) | service_hook
    id: int
    url: str
    secret: str
    guid: str = ""  # service hooks identify themselves with it

    def __repr__(self) -> str:  # the secret stays out of logs
        return f"Target({self.kind}:{self.id} {self.url})"


class Verdict(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # try again after retry_in, as the next attempt
    DEFER = "deferred"  # circuit open: try again after retry_in, same attempt
    DEAD = "dead_lettered"
    SKIPPED = "skipped"  # target uninstalled / deleted / inactive


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reason: str  # short label: ok, http_500, timeout, ssrf, circuit_open, ...
    detail: str = ""
    status: int | None = None
    duration: float = 0.0
    retry_in: float = 0.0
    requested: bool = False  # an HTTP request went out

    @property
    def logged(self) -> bool:
        """Whether this attempt belongs in the target's request log."""
        return self.verdict not in (Verdict.DEFER, Verdict.SKIPPED)


def is_retryable(result: HttpResult) -> bool:
    if result.status is None:
        return not result.refused
    return result.status >= 500 or result.status in RETRYABLE_STATUS


def reason_of(result: HttpResult) -> str:
    if result.status is not None:
        return "ok" if 200 <= result.status < 300 else f"http_{result.status}"
    if result.refused:
        return "ssrf"
    return "timeout" if (result.error or "").startswith("timeout") else "connection_error"


class Deliverer:
    """Decides and performs one attempt; see the module docstring."""

    def __init__(
        self,
        sender: HttpSender,
        guard: SsrfGuard,
        breaker: CircuitBreaker,
        *,
        timeout: float,
        max_attempts: int,
        retry_delay: float,
    ) -> None:
        self.sender = sender
        self.guard = guard
        self.breaker = breaker
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay

    async def attempt(self, delivery: Mapping[str, Any], target: Target | None) -> Outcome:
        if target is None:
            return Outcome(Verdict.SKIPPED, "target_gone", "target inactive or deleted")
        try:
            await self.guard.check_url(target.url)
        except SsrfRefused as exc:
            return Outcome(Verdict.DEAD, "ssrf", str(exc))
        key = origin(target.url)
        wait = self.breaker.wait_time(key)
        if wait is not None:
            return Outcome(Verdict.DEFER, "circuit_open", f"{key} paused", retry_in=wait)
        body = delivery["payload"].encode()
        headers = signing.headers(
            kind=target.kind,
            body=body,
            secret=target.secret,
            request_id=delivery["delivery_id"],
            resource=delivery["resource"],
            hook_guid=target.guid,
            now=time.time(),
        )
        result = await self.sender.post(target.url, body, headers, self.timeout)
        return self._judge(delivery, key, result)

    def _judge(self, delivery: Mapping[str, Any], key: str, result: HttpResult) -> Outcome:
        reason = reason_of(result)
        if result.refused:
            return _outcome(Verdict.DEAD, reason, result.error or "", result)
        retryable = is_retryable(result)
        self.breaker.record(key, ok=not retryable)
        if reason == "ok":
            return _outcome(Verdict.DELIVERED, reason, "", result)
        detail = result.error or f"HTTP {result.status}"
        if not retryable:
            return _outcome(Verdict.DEAD, reason, detail, result)
        attempt = int(delivery.get("attempt", 1))
        if attempt >= self.max_attempts:
            detail = f"gave up after {attempt} attempts; last: {detail}"
            return _outcome(Verdict.DEAD, reason, detail, result)
        return _outcome(Verdict.RETRY, reason, detail, result, self.retry_delay)


def _outcome(
    verdict: Verdict, reason: str, detail: str, result: HttpResult, retry_in: float = 0.0
) -> Outcome:
    return Outcome(verdict, reason, detail, result.status, result.duration, retry_in, True)
