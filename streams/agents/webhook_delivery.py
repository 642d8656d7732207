"""Agents ``webhook-deliveries`` and ``webhook-retries``: signed HTTP POSTs with retries.

Topics: ``webhook-deliveries`` (first attempts) and ``webhook-retries`` (later
attempts, each with a not-before time); both keyed by target. A batch is delivered
concurrently; each outcome is settled without blocking the partition:

- delivered: logged; a failure to retry (408/429/5xx/timeout/connection error) goes
  to ``webhook-retries`` as the next attempt, ``retry_delay`` later (1 + max retries
  attempts in all);
- circuit open for the target's origin: to ``webhook-retries``, same attempt, when
  the pause ends (no attempt spent, no request sent);
- a retry due more than ``DIRECT_WITHIN`` from now (5 minutes by default) waits in
  ``scheduled_messages`` and the relay's pump publishes it when due, so it never holds
  a partition; if the database cannot take it, it goes onto the topic at once and the
  retries agent waits for it as below;
- final failure (another 4xx, SSRF refusal, last attempt failed): ``dead-letters``
  with the consumed message's original bytes and the reason;
- target uninstalled/deleted/inactive: skipped.

The retries agent waits for each message's not-before time before attempting it;
that wait holds back only other retries, never first attempts, and lasts at most
``MAX_HOLD`` per batch (the rest goes back onto the topic), so a retry runs at most
about that much after its time. Every request is appended to the
target's request log; service-hook first attempts count as firings (per minute).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final, TypeVar, cast

from prometheus_client.metrics import MetricWrapperBase

from streams import metrics
from streams.agents.base import AgentSpec, Message, RetryPolicy, attach
from streams.agents.batch_io import Outgoing, dead_letter, publish_all
from streams.agents.deferred import Later, store_later
from streams.agents.wrapper.direct import DirectConsumer
from streams.agents.wrapper.handoff import Handoff
from streams.dlq.headers import Failure, FailureReason
from streams.runtime import Runtime
from streams.settings import Settings
from streams.silo import REGION_ONLY
from streams.webhooks.breaker import CircuitBreaker
from streams.webhooks.deliver import Deliverer, Outcome, Target, TargetKey, Verdict
from streams.webhooks.delivered import DeliveredLog
from streams.webhooks.http11 import LeanSender
from streams.webhooks.ssrf import SsrfGuard
from streams.webhooks.store import DeliveryStore, LogEntry

log = logging.getLogger(__name__)
M = TypeVar("M", bound=MetricWrapperBase)

TOPIC: Final = "webhook-deliveries"
RETRY_TOPIC: Final = "webhook-retries"
# Requests in flight per batch. More lanes cost more CPU per request (measured: 32
# lanes ~10% cheaper than 128) and local receivers answer in ~1 ms; slow targets are
# bounded by the request timeout and then paused by the circuit breaker.
MAX_IN_FLIGHT = 32
TRIM_INTERVAL = 30.0
# Longest a retry batch waits for its not-before time before re-queueing the rest.
MAX_HOLD = 60.0
# Retries due sooner than this go straight onto the retry topic; later ones are stored
# for the relay's pump (a database write each, and no partition waits for them).
DIRECT_WITHIN = 1.0

REQUESTS = metrics.counter(
    "streams_webhook_requests_total",
    "Webhook HTTP requests sent, by target kind and result (ok, http_<code>, timeout, ...).",
    ("kind", "result"),
)
REQUEST_SECONDS = metrics.histogram(
    "streams_webhook_request_seconds", "Webhook HTTP request duration.", ("kind",)
)
DELIVERIES = metrics.counter(
    "streams_webhook_deliveries_total",
    "Delivery attempts settled, by target kind and verdict "
    "(delivered, retry, deferred, dead_lettered, skipped).",
    ("kind", "verdict"),
)
DELIVERY_LATENCY = metrics.histogram(
    "streams_webhook_delivery_latency_seconds",
    "From the delivery request's creation to its successful POST.",
    ("kind",),
)


_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: M, *labels: str) -> M:
    """``metric.labels(...)``, memoised: this runs several times per delivery."""
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return cast(M, child)


_PENDING = Outcome(Verdict.RETRY, "not_attempted")
_ALREADY = Outcome(Verdict.SKIPPED, "already_delivered")


def _ms(value: Any) -> float:
    """A timestamp-millis field (decoded as datetime, or given as int ms) in seconds."""
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return float(value or 0) / 1000.0


class WebhookDeliveries:
    """The handler of both topics; one per worker."""

    def __init__(
        self,
        runtime: Runtime,
        deliverer: Deliverer,
        store: DeliveryStore,
        *,
        hold: float = MAX_HOLD,
        delivered: DeliveredLog | None = None,
    ) -> None:
        self.runtime = runtime
        self.hold = hold
        self.deliverer = deliverer
        self.store = store
        self.delivered = delivered  # None: no skipping of acknowledged ones (unit tests)

    async def first_attempts(self, msgs: Sequence[Message]) -> None:
        await self._deliver(msgs)

    async def first_attempt(self, msg: Message) -> None:
        await self._deliver([msg])

    async def retries(self, msgs: Sequence[Message]) -> None:
        """Deliver each message once its not-before time has come, earliest first.

        A batch is held at most ``hold`` seconds: what is not due by then goes back
        onto the retry topic unchanged, so the partition's committed offset keeps
        moving (Faust reports a stream idle for 5 minutes, the default retry delay,
        as stuck) and a crash never replays more than ``hold`` seconds of waiting.
        """
        queue = sorted(msgs, key=_due)
        hold_until = time.monotonic() + self.hold
        while queue:
            wait = _due(queue[0]) - time.time()
            left = hold_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, max(0.0, left)))
            now = time.time()
            due = [m for m in queue if _due(m) <= now]
            queue = queue[len(due) :]
            if due:
                await self._deliver(due)
            elif wait > left:
                await publish_all(
                    self.runtime, [_requeue(m) for m in queue], agent="webhook_delivery"
                )
                return

    async def retry(self, msg: Message) -> None:
        await self.retries([msg])

    async def _deliver(self, msgs: Sequence[Message]) -> None:
        # Only this read may raise (then the wrapper retries); after it nothing does,
        # so no request is ever repeated by the wrapper's fallback.
        keys: list[TargetKey] = [(m.value["target_kind"], m.value["target_id"]) for m in msgs]
        targets = await self.store.targets(keys)
        # Acknowledged before a crash (replayed offsets, a regenerated delivery): skipped.
        done = (
            await self.delivered.already([m.value["delivery_id"] for m in msgs])
            if self.delivered is not None
            else set()
        )
        outcomes: list[Outcome] = [_PENDING] * len(msgs)
        work = iter(enumerate(zip(msgs, keys, strict=True)))

        # A few lanes pulling from one iterator bound the requests in flight; cheaper
        # than a task per delivery behind a semaphore.
        async def lane() -> None:
            for i, (msg, key) in work:
                if msg.value["delivery_id"] in done:
                    outcomes[i] = _ALREADY
                    continue
                outcomes[i] = await self._attempt(msg, targets.get(key))

        await asyncio.gather(*(lane() for _ in range(min(MAX_IN_FLIGHT, len(msgs)))))
        await self._settle(msgs, outcomes)

    async def _attempt(self, msg: Message, target: Target | None) -> Outcome:
        try:
            return await self.deliverer.attempt(msg.value, target)
        except Exception as exc:  # a bug here must not drop the delivery
            log.error("webhook.attempt.crashed", extra={"error": repr(exc)}, exc_info=True)
            return Outcome(
                Verdict.RETRY, "internal_error", repr(exc), retry_in=self.deliverer.retry_delay
            )

    async def _settle(self, msgs: Sequence[Message], outcomes: Sequence[Outcome]) -> None:
        later: list[tuple[Message, Outgoing]] = []
        dead: list[tuple[Message, Failure]] = []
        entries: list[LogEntry] = []
        fired: Counter[int] = Counter()
        sent_at = dt.datetime.now(dt.UTC)
        for msg, out in zip(msgs, outcomes, strict=True):
            v = msg.value
            kind, attempt = v["target_kind"], int(v.get("attempt", 1))
            self._observe(v, out)
            if out.verdict in (Verdict.RETRY, Verdict.DEFER):
                later.append((msg, _retry_of(msg, out)))
            elif out.verdict is Verdict.DEAD:
                dead.append((msg, _failure(out)))
            if out.logged:
                entries.append(_log_entry(v, out, sent_at))
                if kind == "service_hook" and attempt == 1:
                    fired[int(v["target_id"])] += 1
        acked = [
            m.value["delivery_id"]
            for m, o in zip(msgs, outcomes, strict=True)
            if o.verdict is Verdict.DELIVERED
        ]
        if self.delivered is not None:  # first: the shortest window to repeat after a crash
            await self.delivered.record(acked)
        await self._send_later(later)
        for msg, failure in dead:
            await dead_letter(self.runtime, "webhook_delivery", msg, failure)
        try:
            await self.store.record(entries, fired)
        except Exception as exc:  # the log is for people; losing a few rows is acceptable
            log.warning("webhook.log.failed", extra={"error": repr(exc), "rows": len(entries)})

    async def _send_later(self, later: Sequence[tuple[Message, Outgoing]]) -> None:
        """Next attempts: soon ones onto the retry topic, later ones to the pump. Never
        raises (requests were sent: the wrapper must not run this batch again)."""
        now_ms = time.time() * 1000
        direct: list[Outgoing] = []
        stored: list[tuple[Outgoing, Later]] = []
        for consumed, o in later:
            wait = (o.value["not_before"] - now_ms) / 1000
            if wait <= DIRECT_WITHIN:
                direct.append(o)
            else:
                stored.append((o, _stored(consumed, o, wait)))
        try:
            await store_later(self.runtime, [item for _, item in stored])
        except Exception as exc:  # the retries agent waits for them instead
            log.warning(
                "webhook.retry.store_failed", extra={"error": repr(exc), "retries": len(stored)}
            )
            direct += [o for o, _ in stored]
        await publish_all(self.runtime, direct, agent="webhook_delivery")

    def _observe(self, v: dict[str, Any], out: Outcome) -> None:
        kind = v["target_kind"]
        _child(DELIVERIES, kind, out.verdict.value).inc()
        if out.requested:
            _child(REQUESTS, kind, out.reason).inc()
            _child(REQUEST_SECONDS, kind).observe(out.duration)
        if out.verdict is Verdict.DELIVERED:
            created = _ms(v.get("created_at"))
            if created > 0:
                _child(DELIVERY_LATENCY, kind).observe(max(0.0, time.time() - created))
        elif out.verdict is Verdict.DEAD:
            log.warning(
                "webhook.dead_lettered",
                extra={"delivery": v["delivery_id"], "reason": out.reason, "error": out.detail},
            )


def _failure(out: Outcome) -> Failure:
    """The dead-letter failure of a final webhook outcome (its reason, e.g. ``http_410``)."""
    try:
        reason = FailureReason(out.reason)
    except ValueError:  # a verdict reason outside the contract: still dead-lettered
        reason = FailureReason.HANDLER
    return Failure(reason, "WebhookFailed", out.detail or out.reason)


def _due(msg: Message) -> float:
    return _ms(msg.value.get("not_before"))


def _requeue(msg: Message) -> Outgoing:
    """The same delivery, same attempt and not-before, back onto the retry topic."""
    v = msg.value
    return Outgoing(RETRY_TOPIC, dict(v), f"{v['target_kind']}:{v['target_id']}", msg.trace)


def _retry_of(msg: Message, out: Outcome) -> Outgoing:
    v = msg.value
    attempt = int(v.get("attempt", 1)) + (1 if out.verdict is Verdict.RETRY else 0)
    value = dict(v)
    value["attempt"] = attempt
    value["not_before"] = int((time.time() + out.retry_in) * 1000)
    return Outgoing(RETRY_TOPIC, value, f"{v['target_kind']}:{v['target_id']}", msg.trace)


def _stored(consumed: Message, o: Outgoing, delay: float) -> Later:
    # The consumed message's attempt and time identify it: handling it again (after a
    # crash) stores nothing twice, and two copies of it yield one next attempt.
    v = consumed.value
    dedupe = f"webhook:{v['delivery_id']}:{v.get('attempt', 1)}:{_due(consumed):.3f}"
    return Later(o.topic, o.value, o.key, delay, dedupe, trace=o.trace)


def _log_entry(v: dict[str, Any], out: Outcome, sent_at: dt.datetime) -> LogEntry:
    return LogEntry(
        target_kind=v["target_kind"],
        target_id=int(v["target_id"]),
        delivery_id=v["delivery_id"],
        attempt=int(v.get("attempt", 1)),
        event_type=v["event_type"],
        sent_at=sent_at,
        status_code=out.status,
        duration_ms=out.duration * 1000.0,
        error=None if out.verdict is Verdict.DELIVERED else (out.detail or out.reason),
    )


def build_deliverer(s: Settings) -> Deliverer:
    """The deliverer ``s`` describes: 1 + ``webhook_max_retries`` attempts."""
    guard = SsrfGuard(s.ssrf_allow)
    return Deliverer(
        LeanSender(guard),
        guard,
        CircuitBreaker(s.webhook_breaker_threshold, s.webhook_breaker_pause),
        timeout=s.webhook_timeout,
        max_attempts=1 + s.webhook_max_retries,  # the first attempt, then the retries
        retry_delay=s.webhook_retry_delay,
    )


def build(runtime: Runtime) -> WebhookDeliveries:
    deliverer = build_deliverer(runtime.settings)
    return WebhookDeliveries(
        runtime,
        deliverer,
        DeliveryStore(runtime.pool),
        delivered=DeliveredLog(runtime.pool),
    )


def install(app: Any, runtime: Runtime) -> None:
    handler = build(runtime)
    # No deadline: requests carry their own timeout, and a retry may wait for its time.
    common: dict[str, Any] = {
        "silos": REGION_ONLY,
        "retry": RetryPolicy(times=5, delay=1.0),
        "deadline": None,
        "batch_size": 500,
        "batch_within": 0.0,  # batches of what is ready: no timer on the path
        "direct": True,  # stateless: a librdkafka consumer, one commit per batch
    }
    first = AgentSpec(
        name="webhook_delivery",
        topic=TOPIC,
        handler=handler.first_attempt,
        batch_handler=handler.first_attempts,
        **common,
    )
    runner = attach(app, runtime, first)
    direct = [
        c for c in runtime.consumers if isinstance(c, DirectConsumer) and c.name == first.name
    ]
    if runner is not None and direct and runtime.settings.webhook_handoff:
        direct[0].handoff = runtime.handoffs[TOPIC] = Handoff(first.name, runner)
    attach(
        app,
        runtime,
        AgentSpec(
            name="webhook_retry",
            topic=RETRY_TOPIC,
            handler=handler.retry,
            batch_handler=handler.retries,
            # Retries are seconds away by design: 0.1 s more costs nothing, and an idle
            # consumer fetching 10 instead of 100 times a second leaves the CPU to the
            # first attempts' latency.
            fetch_wait=0.1,
            **common,
        ),
    )

    async def trim_delivery_log() -> None:
        try:
            await handler.store.trim()
            if handler.delivered is not None:
                await handler.delivered.prune()
        except Exception as exc:
            log.warning("webhook.log.trim_failed", extra={"error": repr(exc)})

    async def close_http(sender: Any, **kwargs: Any) -> None:
        await handler.deliverer.sender.close()

    app.timer(TRIM_INTERVAL)(trim_delivery_log)
    app.on_before_shutdown.connect(close_http)
