"""Resource changes -> webhook POSTs, end to end: real worker, broker, PostgreSQL, receiver."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from streams.dlq import replay as dlq
from streams.publisher import Publisher
from streams.settings import Settings
from streams.webhooks import signing
from tests.support import harness
from tests.support.webhooks import Receiver, Rows

RETRY_DELAY = 5.0
WORKER_ENV = {
    # Only this issue's agents: the test does not depend on the others.
    "STREAMS_AGENTS": "resource_changes,webhook_delivery",
    "STREAMS_CONSUMER_FETCH_MAX_WAIT": "0.1",
    "STREAMS_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "STREAMS_WEBHOOK_RETRY_DELAY": "0.5",
    "STREAMS_WEBHOOK_MAX_RETRIES": "2",
    "STREAMS_WEBHOOK_TIMEOUT": "2",
    # The seed's schedule (5 retries, 5 minutes apart), in seconds.
    "STREAMS_RESOURCE_CHANGE_RETRIES": "5",
    "STREAMS_RESOURCE_CHANGE_RETRY_DELAY": str(RETRY_DELAY),
}


@pytest.fixture(scope="module")
def mod_settings(real_stack: harness.Stack, template_db: str) -> Iterator[Settings]:
    with harness.isolated_settings(real_stack, template_db) as s:
        yield s


@pytest.fixture(scope="module")
def mod_worker(
    mod_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.Proc]:
    log = tmp_path_factory.mktemp("rc") / "worker.log"
    proc = harness.start_worker(mod_settings, log, env=WORKER_ENV)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def mod_relay(
    mod_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.Proc]:
    """Publishes delayed retries (and outbox rows) for the module's tests."""
    log = tmp_path_factory.mktemp("rc-relay") / "relay.log"
    env = harness.env_for(mod_settings, STREAMS_RELAY_POLL_INTERVAL="0.1", STREAMS_METRICS_PORT="0")
    proc = harness.spawn(["relay"], env, log)
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


def test_one_change_reaches_every_subscriber_once_signed(
    mod_worker: harness.Proc, pub: Publisher, receiver: Receiver, rows: Rows
) -> None:
    apps = [rows.app(receiver.url(f"/app{n}"), ["error.created"]) for n in range(3)]
    installs = [rows.install(a) for a in apps]
    # Not notified: another resource, a pending installation, an inactive app.
    rows.install(rows.app(receiver.url("/other"), ["issue"]))
    rows.install(rows.app(receiver.url("/pending"), ["error"]), status=1)
    rows.install(rows.app(receiver.url("/inactive"), ["error"], status=1))
    hooks = [rows.hook(receiver.url(f"/hook{n}"), ["event.created"]) for n in range(2)]
    rows.hook(receiver.url("/hook-off"), ["event.created"], status=1)
    rows.hook(receiver.url("/hook-alert"), ["event.alert"])
    group = rows.issue("KeyError: 'user'")
    event = rows.error(group, "KeyError: 'user'")

    pub.publish("resource-changes", rows.change("Event", event), key=rows.organization_id)

    harness.wait_for(lambda: len(receiver.received()) >= 5, 30, what="5 POSTs")
    time.sleep(1.0)  # anything extra would have arrived by now
    got = receiver.received()
    assert sorted(r.path for r in got) == ["/app0", "/app1", "/app2", "/hook0", "/hook1"]
    for n, app_id in enumerate(apps):
        (req,) = receiver.received(f"/app{n}")
        secret = rows.secret_of_app(app_id)
        assert signing.verify(req.body, secret, req.headers[signing.H_SIGNATURE])
        assert not signing.verify(req.body, "wrong", req.headers[signing.H_SIGNATURE])
        assert req.headers[signing.H_RESOURCE] == "error"
        assert req.headers[signing.H_REQUEST_ID]
        assert abs(int(req.headers[signing.H_TIMESTAMP]) - time.time()) < 60
        body = req.json()
        assert body["action"] == "created"
        assert body["installation"] == {"uuid": installs[n][1]}
        assert body["actor"]["type"] == "application"
        assert body["data"]["error"]["issue_id"] == str(group)
        assert body["data"]["error"]["message"] == "KeyError: 'user'"
    for n, hook_id in enumerate(hooks):
        (req,) = receiver.received(f"/hook{n}")
        secret = rows.secret_of_hook(hook_id)
        assert signing.verify(req.body, secret, req.headers[signing.H_HOOK_SIGNATURE])
        body = req.json()
        assert set(body) == {"project", "group", "event"}
        assert body["project"] == {"slug": body["project"]["slug"], "name": "Backend"}
        assert body["group"]["id"] == str(group)
        assert body["event"]["message"] == "KeyError: 'user'"
    ids = {r.headers[signing.H_REQUEST_ID] for r in got}
    assert len(ids) == 5

    # Each service hook counted one firing; every request is in its target's log.
    def counted() -> list[tuple[int, int]]:
        with psycopg.connect(rows.dsn) as conn:
            return [
                (int(a), int(b))
                for a, b in conn.execute(
                    "SELECT service_hook_id, sum(count) FROM service_hook_fired "
                    "WHERE service_hook_id = ANY(%s) GROUP BY 1 ORDER BY 1",
                    (hooks,),
                ).fetchall()
            ]

    harness.wait_for(lambda: counted() == [(h, 1) for h in sorted(hooks)], 10, what="fired")
    with psycopg.connect(rows.dsn) as conn:
        logged = conn.execute(
            "SELECT target_kind, target_id, status_code, event_type FROM webhook_delivery_log "
            "WHERE delivery_id = ANY(%s)",
            (list(ids),),
        ).fetchall()
    assert sorted(logged) == sorted(
        [("sentry_app", i[0], 200, "error.created") for i in installs]
        + [("service_hook", h, 200, "event.created") for h in hooks]
    )


def test_unsubscribed_action_sends_nothing_and_unknown_sender_is_dead_lettered(
    mod_worker: harness.Proc,
    mod_settings: Settings,
    pub: Publisher,
    receiver: Receiver,
    rows: Rows,
) -> None:
    rows.install(rows.app(receiver.url("/created-only"), ["issue.created"]))
    issue = rows.issue()
    org = rows.organization_id
    pub.publish("resource-changes", rows.change("Group", issue, "resolved"), key=org)
    pub.publish("resource-changes", rows.change("Project", issue), key=org)
    # Same key, so same partition: this one is handled after the two above.
    user = rows.user("jane")
    pub.publish("resource-changes", rows.change("Group", issue, "created", actor_id=user), key=org)

    harness.wait_for(receiver.received, 30, what="the subscribed change")
    time.sleep(0.5)
    (only,) = receiver.received()
    assert only.json()["action"] == "created"
    assert only.json()["actor"]["type"] == "user"
    assert only.json()["actor"]["id"] == user
    assert only.json()["actor"]["name"].startswith("jane-")

    def letters() -> list[dlq.DeadLetter]:
        return [
            x
            for x in dlq.read(mod_settings, source_topic="resource-changes")
            if x.reason == "unknown_sender"
        ]

    (letter,) = harness.wait_for(letters, 15, what="unknown sender dead letter")
    assert "Project" in letter.header("dlq.error_message")
    assert letter.value is not None  # the original bytes, decodable as the original change
    assert pub.codec.decode("resource-changes", letter.value)["sender"] == "Project"
    assert mod_worker.alive()


def test_change_published_before_commit_is_delivered_after_commit(
    mod_worker: harness.Proc,
    mod_relay: harness.Proc,
    pub: Publisher,
    receiver: Receiver,
    rows: Rows,
) -> None:
    rows.install(rows.app(receiver.url("/race"), ["issue.created"]))
    with psycopg.connect(rows.dsn) as conn:
        row = conn.execute(
            "INSERT INTO issue_group (project_id, title) VALUES (%s, 'race') RETURNING id",
            (rows.project_id,),
        ).fetchone()
        assert row is not None
        pub.publish("resource-changes", rows.change("Group", int(row[0])), key=rows.organization_id)
        time.sleep(1.5)  # the agent sees the change while the row is invisible
        assert receiver.received() == []
        conn.commit()
        committed = time.time()
    (req,) = harness.wait_for(receiver.received, 30, what="delivery after commit")
    assert req.at >= committed
    assert req.json()["data"]["issue"]["title"] == "race"


@pytest.mark.usefixtures("mod_worker", "mod_relay")
@pytest.mark.slow  # `make test-slow` (CI runs it): a load or kill -9 test
def test_row_committed_12s_later_reaches_each_subscriber_exactly_once(
    mod_settings: Settings,
    pub: Publisher,
    receiver: Receiver,
    rows: Rows,
) -> None:
    for n in range(2):
        rows.install(rows.app(receiver.url(f"/late-app{n}"), ["error.created"]))
    rows.hook(receiver.url("/late-hook"), ["event.created"])
    group = rows.issue("late")
    with psycopg.connect(rows.dsn) as conn:
        row = conn.execute(
            "INSERT INTO error_event (event_id, project_id, group_id, message, platform, data)"
            " VALUES (gen_random_uuid(), %s, %s, 'late row', 'python', '{}') RETURNING id",
            (rows.project_id, group),
        ).fetchone()
        assert row is not None
        published = time.time()
        pub.publish("resource-changes", rows.change("Event", int(row[0])), key=rows.organization_id)
        time.sleep(12.0)  # the scenario itself: the row commits 12 s after its change
        assert receiver.received() == []  # looked up at about 0, 5 and 10 s: not visible
        conn.commit()
        committed = time.time()

    harness.wait_for(lambda: len(receiver.received()) >= 3, 30, what="3 POSTs after the commit")
    time.sleep(RETRY_DELAY + 1.0)  # one more retry would have delivered again by now
    got = receiver.received()
    assert sorted(r.path for r in got) == ["/late-app0", "/late-app1", "/late-hook"]
    assert all(r.at >= committed for r in got)
    # Delivered by the third delayed retry (due about 15 s after the change), not later.
    assert max(r.at for r in got) - published < 15.0 + 10.0
    assert not [
        x
        for x in dlq.read(mod_settings, source_topic="resource-changes")
        if f"error_event {row[0]} " in x.header("dlq.error_message")
    ]


def scheduled_retries(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM scheduled_messages WHERE dedupe_id LIKE 'resource_change:%'"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.usefixtures("mod_worker", "mod_relay")
@pytest.mark.slow  # `make test-slow` (CI runs it): a load or kill -9 test
def test_change_whose_row_never_appears_is_dead_lettered_after_the_last_retry(
    mod_settings: Settings, pub: Publisher, receiver: Receiver, rows: Rows
) -> None:
    rows.install(rows.app(receiver.url("/replayed"), ["issue.created"]))
    missing = 10**12 + rows.organization_id
    published = time.time()
    pub.publish("resource-changes", rows.change("Group", missing), key=rows.organization_id)

    def letter() -> list[dlq.DeadLetter]:
        return [
            x
            for x in dlq.read(mod_settings, source_topic="resource-changes")
            if x.reason == "instance_missing"
        ]

    (found,) = harness.wait_for(letter, 5 * RETRY_DELAY + 40, 0.5, what="the dead letter")
    # Five delayed retries, RETRY_DELAY apart, came first.
    assert time.time() - published >= 5 * RETRY_DELAY
    error = found.header("dlq.error_message")
    assert f"issue_group {missing} not visible after 5 delayed retries" in error
    assert found.value is not None
    assert pub.codec.decode("resource-changes", found.value)["instance_id"] == missing

    # Replayed while the row is still missing: retried again (a new round, not taken for
    # the first round's retries); the row appears, and the next retry delivers it.
    before = scheduled_retries(rows.dsn)
    key = str(rows.organization_id).encode()
    assert dlq.replay(mod_settings, source_topic="resource-changes", key=key) == 1
    harness.wait_for(lambda: scheduled_retries(rows.dsn) > before, 20, 0.2, "a new retry")
    with psycopg.connect(rows.dsn) as conn:
        conn.execute(
            "INSERT INTO issue_group (id, project_id, title) VALUES (%s, %s, 'at last')",
            (missing, rows.project_id),
        )
    (req,) = harness.wait_for(receiver.received, RETRY_DELAY + 20, what="the replayed change")
    assert req.json()["data"]["issue"]["title"] == "at last"


def test_outbox_row_committed_with_the_issue_reaches_the_webhook(
    mod_worker: harness.Proc, mod_relay: harness.Proc, rows: Rows
) -> None:
    from streams.outbox.categories import OutboxCategory, OutboxScope
    from streams.outbox.write import enqueue_outbox

    with Receiver() as receiver:
        rows.install(rows.app(receiver.url("/via-outbox"), ["issue.created"]))
        with psycopg.connect(rows.dsn) as conn:
            row = conn.execute(
                "INSERT INTO issue_group (project_id, title) VALUES (%s, 'via outbox') "
                "RETURNING id",
                (rows.project_id,),
            ).fetchone()
            assert row is not None
            # The change is written in the issue's own transaction (transactional outbox).
            enqueue_outbox(
                conn,
                scope=OutboxScope.ORGANIZATION,
                shard_identifier=rows.organization_id,
                category=OutboxCategory.ISSUE_CHANGE,
                object_identifier=int(row[0]),
                payload={"action": "created", "project_id": rows.project_id},
            )
            conn.commit()

        (req,) = harness.wait_for(receiver.received, 30, what="POST via outbox and relay")
    assert req.path == "/via-outbox"
    assert req.json()["data"]["issue"]["id"] == str(row[0])
    assert req.json()["data"]["issue"]["title"] == "via outbox"


def test_deliveries_the_worker_published_are_attempted_at_once_and_committed(
    mod_worker: harness.Proc,
    mod_settings: Settings,
    pub: Publisher,
    receiver: Receiver,
    rows: Rows,
) -> None:
    """The worker runs both agents and its webhook_delivery consumer owns every
    partition: deliveries are handed to it at once (streams_consumer_handoffs_total),
    each is POSTed once, and the consumer still commits their offsets."""
    from confluent_kafka import Consumer, TopicPartition

    from streams import catalogue, kafka_config
    from streams.agents.wrapper.direct import group_id
    from streams.offsets import true_end_offsets
    from tests.test_faust_drain import _sample

    def handed() -> float:
        text = mod_worker.get("/metrics")[1].decode()
        return _sample(text, "streams_consumer_handoffs_total", agent="webhook_delivery")

    before = handed()
    for n in range(2):
        rows.install(rows.app(receiver.url(f"/handoff{n}"), ["error.created"]))
    group = rows.issue("ValueError: handoff")
    for _ in range(30):
        event = rows.error(group, "ValueError: handoff")
        pub.publish("resource-changes", rows.change("Event", event), key=rows.organization_id)
    pub.flush()
    harness.wait_for(lambda: len(receiver.received()) >= 60, 60, what="60 POSTs")
    time.sleep(1.0)  # a second attempt of any of them would have arrived by now
    got = receiver.received()
    assert len(got) == 60
    assert len({r.headers[signing.H_REQUEST_ID] for r in got}) == 60
    assert handed() - before >= 30, "most deliveries should skip the topic round trip"

    spec = catalogue.lookup("webhook-deliveries")
    topic = spec.full_name(mod_settings.topic_prefix)
    parts = [TopicPartition(topic, p) for p in range(spec.partitions)]
    probe = Consumer(
        kafka_config.consumer(mod_settings, group_id(mod_settings, "webhook_delivery"))
    )
    try:
        ends = {
            p: hi
            for (_, p), (_, hi) in true_end_offsets(
                probe, [(topic, p) for p in range(spec.partitions)]
            ).items()
        }

        def committed() -> dict[int, int]:
            return {tp.partition: tp.offset for tp in probe.committed(parts, timeout=10)}

        harness.wait_for(
            lambda: all(committed()[p] == end for p, end in ends.items() if end > 0),
            30,
            what="the webhook_delivery group committed every delivery",
        )
    finally:
        probe.close()
