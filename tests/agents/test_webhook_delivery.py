"""Webhook delivery end to end: retries, dead letters, SSRF refusals, alerts, load shedding."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams import client
from streams.dlq import replay as dlq
from streams.publisher import Publisher
from streams.settings import Settings
from streams.webhooks import signing
from tests.support import harness
from tests.support.webhooks import Receiver, Rows

# Over DIRECT_WITHIN: retries wait in scheduled_messages and the relay's pump sends them.
RETRY_DELAY = 1.5
WORKER_ENV = {
    # Only this agents: the test does not depend on the others.
    "STREAMS_AGENTS": "resource_changes,webhook_delivery",
    "STREAMS_CONSUMER_FETCH_MAX_WAIT": "0.1",
    "STREAMS_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "STREAMS_WEBHOOK_RETRY_DELAY": str(RETRY_DELAY),
    # STREAMS_WEBHOOK_MAX_RETRIES: the default, 5 (1 + 5 attempts).
    "STREAMS_WEBHOOK_TIMEOUT": "3",
    "STREAMS_WEBHOOK_BREAKER_THRESHOLD": "3",
    "STREAMS_WEBHOOK_BREAKER_PAUSE": "2",
}


@pytest.fixture(scope="module")
def mod_settings(real_stack: harness.Stack, template_db: str) -> Iterator[Settings]:
    with harness.isolated_settings(real_stack, template_db) as s:
        yield s


@pytest.fixture(scope="module")
def mod_relay(
    mod_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.Proc]:
    """Publishes the delayed retries (and the deferrals of an open circuit)."""
    log = tmp_path_factory.mktemp("wd-relay") / "relay.log"
    env = harness.env_for(mod_settings, STREAMS_RELAY_POLL_INTERVAL="0.1", STREAMS_METRICS_PORT="0")
    proc = harness.spawn(["relay"], env, log)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def mod_worker(
    mod_settings: Settings, mod_relay: harness.Proc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.Proc]:
    log = tmp_path_factory.mktemp("wd") / "worker.log"
    proc = harness.start_worker(mod_settings, log, env=WORKER_ENV)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def pub(mod_settings: Settings) -> Iterator[Publisher]:
    p = Publisher(mod_settings)
    yield p
    p.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


@pytest.fixture
def rows(mod_settings: Settings) -> Rows:
    return Rows(mod_settings.database_url.get())


def deliver(
    pub: Publisher, kind: str, target_id: int, note: str = "", key: str | None = None
) -> str:
    """Publish one delivery request straight to webhook-deliveries; returns its id."""
    delivery_id = str(uuid.uuid4())
    now = int(time.time() * 1000)
    pub.publish(
        "webhook-deliveries",
        {
            "delivery_id": delivery_id,
            "target_kind": kind,
            "target_id": target_id,
            "event_type": "issue.created",
            "resource": "issue",
            "payload": f'{{"note": "{note}"}}',
            "attempt": 1,
            "not_before": now,
            "created_at": now,
        },
        key=key or f"{kind}:{target_id}",
    )
    return delivery_id


def letters(settings: Settings, reason: str | None = None) -> list[dlq.DeadLetter]:
    return [
        x
        for topic in ("webhook-deliveries", "webhook-retries")
        for x in dlq.read(settings, source_topic=topic)
        if reason is None or x.reason == reason
    ]


def letter_ids(settings: Settings, pub: Publisher, reason: str | None = None) -> dict[str, str]:
    """delivery id -> dead-letter reason."""
    out = {}
    for x in letters(settings, reason):
        assert x.value is not None
        topic = x.source_topic.removeprefix(settings.topic_prefix)
        out[pub.codec.decode(topic, x.value)["delivery_id"]] = x.reason
    return out


def metric(proc: harness.Proc, name: str, **labels: str) -> float:
    status, body = proc.get("/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_flaky_target_gets_it_on_third_attempt_without_delaying_others(
    mod_worker: harness.Proc, pub: Publisher, receiver: Receiver, rows: Rows
) -> None:
    flaky, _ = rows.install(rows.app(receiver.url("/flaky"), ["issue"], secret="s3cret"))
    healthy = [rows.install(rows.app(receiver.url(f"/ok{n}"), ["issue"]))[0] for n in range(5)]
    receiver.plan("/flaky", [500, 500, 200])

    flaky_id = deliver(pub, "sentry_app", flaky, "flaky")
    for target in healthy:
        # The flaky target's key: same partition, queued right behind the failing delivery.
        deliver(pub, "sentry_app", target, "healthy", key=f"sentry_app:{flaky}")

    harness.wait_for(lambda: len(receiver.received("/flaky")) >= 3, 30, what="3 attempts")
    time.sleep(RETRY_DELAY * 3)  # a 4th attempt would come by now
    attempts = receiver.received("/flaky")
    assert len(attempts) == 3
    assert all(a.headers[signing.H_REQUEST_ID] == flaky_id for a in attempts)
    assert all(signing.verify(a.body, "s3cret", a.headers[signing.H_SIGNATURE]) for a in attempts)
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    assert min(gaps) >= RETRY_DELAY * 0.9, gaps
    # The failing delivery's retries did not hold back the deliveries queued behind it.
    ok = [r for r in receiver.received() if r.path.startswith("/ok")]
    assert len(ok) == 5
    assert max(r.at for r in ok) < attempts[1].at


@pytest.mark.allow_errors
def test_always_failing_target_gets_1_plus_5_attempts_then_a_dead_letter(
    mod_worker: harness.Proc,
    mod_settings: Settings,
    pub: Publisher,
    receiver: Receiver,
    rows: Rows,
) -> None:
    down, _ = rows.install(rows.app(receiver.url("/down"), ["issue"]))
    receiver.plan("/down", [500])
    with Receiver() as other:
        gone = rows.hook(other.url("/gone"), ["event.created"])
        other.plan("/gone", [404])
        down_id = deliver(pub, "sentry_app", down)
        gone_id = deliver(pub, "service_hook", gone)

        def both() -> dict[str, str]:
            got = letter_ids(mod_settings, pub)
            return got if {down_id, gone_id} <= set(got) else {}

        dead = harness.wait_for(both, 60, what="two dead letters")
        time.sleep(RETRY_DELAY * 2)
        attempts = receiver.received("/down")
        assert len(attempts) == 6  # max_retries = 5: the first attempt and 5 retries
        gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
        assert min(gaps) >= RETRY_DELAY * 0.9, gaps
        assert len(other.received("/gone")) == 1  # a 404 is not retried
    assert dead[down_id] == "http_500"
    assert dead[gone_id] == "http_404"
    with psycopg.connect(rows.dsn) as conn:
        logged = conn.execute(
            "SELECT attempt, status_code FROM webhook_delivery_log WHERE delivery_id = %s "
            "ORDER BY attempt",
            (down_id,),
        ).fetchall()
        # The 5 retries waited in PostgreSQL, not in a held partition.
        stored = conn.execute(
            "SELECT count(*) FROM scheduled_messages WHERE dedupe_id LIKE %s",
            (f"webhook:{down_id}:%",),
        ).fetchone()
    assert logged == [(n, 500) for n in range(1, 7)]
    assert stored is not None and stored[0] >= 5  # and any deferral of an open circuit


def test_internal_addresses_are_refused_without_a_request(
    mod_worker: harness.Proc, mod_settings: Settings, pub: Publisher, rows: Rows
) -> None:
    private = rows.hook("http://10.0.0.1/hook", ["event.created"])
    metadata = rows.hook("http://169.254.169.254/latest/meta-data/", ["event.created"])
    started = time.monotonic()
    ids = [deliver(pub, "service_hook", private), deliver(pub, "service_hook", metadata)]

    def logged() -> list[tuple[int, int | None, float, str]]:
        with psycopg.connect(rows.dsn) as conn:
            return conn.execute(
                "SELECT target_id, status_code, duration_ms, error FROM webhook_delivery_log "
                "WHERE delivery_id = ANY(%s) ORDER BY target_id",
                (ids,),
            ).fetchall()

    found = harness.wait_for(lambda: len(logged()) == 2 and logged(), 20, what="log rows")
    # Decided before any connection: faster than one request timeout (3 s), no duration,
    # no status, and a single attempt each (a refusal is final).
    assert time.monotonic() - started < 3.0
    assert [(t, s, d) for t, s, d, _ in found] == [(private, None, 0.0), (metadata, None, 0.0)]
    assert "10.0.0.1" in found[0][3] and "private" in found[0][3]
    assert "link-local" in found[1][3]

    def refused() -> dict[str, str]:
        got = letter_ids(mod_settings, pub, "ssrf")
        return got if set(ids) <= set(got) else {}

    harness.wait_for(refused, 20, what="ssrf dead letters")
    assert (
        metric(mod_worker, "streams_webhook_requests_total", kind="service_hook", result="ssrf")
        == 0
    )


def test_send_alert_event_delivers_event_rule_and_extra_payload(
    mod_worker: harness.Proc, pub: Publisher, receiver: Receiver, rows: Rows
) -> None:
    app = rows.app(receiver.url("/alerts"), ["issue"])
    _, install_uuid = rows.install(app)
    not_installed = rows.app(receiver.url("/never"), ["issue"])
    event: dict[str, Any] = {"project_id": rows.project_id, "event_id": "ab12", "message": "boom"}
    client.set_publisher(pub)
    try:
        with pytest.raises(TypeError, match="additional_payload"):
            client.send_alert_event(event, "r", app, "k", {"bad": {1, 2}})
        assert client.send_alert_event(event, "High error rate", not_installed) is None
        sent = client.send_alert_event(
            event, "High error rate", app, "metric_alert", {"threshold": 10}
        )
        assert sent is not None
    finally:
        client.set_publisher(None)
    (req,) = harness.wait_for(receiver.received, 20, what="alert POST")
    assert req.path == "/alerts"
    assert req.headers[signing.H_RESOURCE] == "event_alert"
    assert signing.verify(req.body, rows.secret_of_app(app), req.headers[signing.H_SIGNATURE])
    assert req.json() == {
        "action": "triggered",
        "installation": {"uuid": install_uuid},
        "data": {
            "event": event,
            "triggered_rule": "High error rate",
            "metric_alert": {"threshold": 10},
        },
        "actor": {"type": "application", "id": "sentry", "name": "Sentry"},
    }


def test_failing_target_is_paused_not_flooded_and_recovers(
    mod_worker: harness.Proc,
    mod_settings: Settings,
    pub: Publisher,
    receiver: Receiver,
    rows: Rows,
) -> None:
    target, _ = rows.install(rows.app(receiver.url("/flapping"), ["issue"]))
    receiver.plan("/flapping", [503])
    ids = {deliver(pub, "sentry_app", target, str(n)) for n in range(20)}

    harness.wait_for(
        lambda: metric(mod_worker, "streams_webhook_circuit_open") == 1, 20, what="circuit open"
    )
    time.sleep(4.0)  # two pauses: without the breaker, 20 x 3 attempts would all be spent
    during_outage = len(receiver.received())
    assert during_outage <= 20 + 4, during_outage

    receiver.plan("/flapping", [200])

    def answered_ok() -> list[str]:
        return [r.headers[signing.H_REQUEST_ID] for r in receiver.received() if r.status == 200]

    def settled() -> bool:
        dead = set(letter_ids(mod_settings, pub)) & ids
        return len(set(answered_ok())) + len(dead) == 20

    harness.wait_for(settled, 30, 0.5, what="every delivery settled")
    time.sleep(RETRY_DELAY * 2)
    ok = answered_ok()
    assert len(ok) == len(set(ok))  # each delivered once
    assert set(ok) <= ids
    assert len(ok) >= 16  # only the few spent as probes during the outage were given up
    assert metric(mod_worker, "streams_webhook_circuit_open") == 0
