"""Computed configs end to end: client -> debounce -> recompute -> topic -> HTTP."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams import client
from streams.agents.project_configs import H_TRIGGER, H_WINDOW, window_of
from streams.dev import stack
from streams.dlq.headers import H_REASON, FailureReason
from streams.projectconfigs.documents import disabled_record
from streams.projectconfigs.scopes import DatabaseScopeResolver
from streams.publisher import Publisher
from streams.settings import Settings
from tests.buffers.support import read_topic
from tests.projectconfigs.support import configs, execute, metric, seed
from tests.support import harness

ENV = {"STREAMS_INVALIDATION_COUNTDOWN": "1"}


@pytest.fixture
def invalidate(database: str, publisher: Publisher) -> Iterator[Callable[..., None]]:
    """``streams.client.schedule_invalidate_project_config`` wired to this test's stack."""
    resolver = DatabaseScopeResolver(database)
    client.set_publisher(publisher)
    client.set_scope_resolver(resolver)

    def call(**scope: Any) -> None:
        client.schedule_invalidate_project_config(trigger="test", countdown=1, **scope)

    try:
        yield call
    finally:
        client.set_scope_resolver(None)
        client.set_publisher(None)
        resolver.close()


def get(proc: harness.Proc, key: str) -> tuple[int, dict[str, Any]]:
    status, body = proc.get(f"/api/project-configs/{key}")
    return status, json.loads(body)


def latest(settings: Settings) -> dict[str, dict[str, Any] | None]:
    return {p.key: p.value for p in configs(settings)}


def test_configs_are_computed_published_and_served(
    settings: Settings,
    database: str,
    worker: Callable[..., harness.Proc],
    invalidate: Callable[..., None],
) -> None:
    proc = worker(**ENV)
    s = seed(database, keys_per_project=3)
    project = s.project_ids[0]
    active, inactive, deleted = s.keys[project]
    execute(database, "UPDATE project_key SET status = 1 WHERE public_key = %s", inactive)
    execute(database, "DELETE FROM project_key WHERE public_key = %s", deleted)

    invalidate(project_id=project)
    invalidate(public_key=deleted)
    harness.wait_for(lambda: len(latest(settings)) == 3, 15, 0.2, "three configs")
    published = latest(settings)
    assert (published[inactive] or {}).get("disabled") is True
    assert (published[deleted] or {}).get("disabled") is True
    config = published[active]
    assert config is not None and config["disabled"] is False
    assert config["project_id"] == project and config["organization_id"] == s.organization_id
    # Each config says which window it satisfies and what triggered it (tracing, latency).
    message = next(p for p in configs(settings) if p.key == active)
    scope, requested_ms, due_ms = window_of(message.headers[H_WINDOW].encode())
    assert scope == f"p:{project}" and message.headers[H_TRIGGER] == "test"
    assert due_ms - requested_ms == 1000  # the countdown the client asked for
    assert requested_ms <= message.timestamp_ms

    harness.wait_for(lambda: get(proc, active)[0] == 200, 10, 0.2, "served")
    status, doc = get(proc, active)
    assert doc["config"]["project_slug"] == "p0"
    assert doc["config"]["key"]["rate_limit"] == {"count": 100, "window": 60}
    assert doc["revision"] == config["revision"]
    for key in (inactive, deleted):
        status, doc = get(proc, key)
        assert (status, doc["disabled"], doc["config"]) == (200, True, {"disabled": True})
    assert get(proc, "no-such-key")[0] == 404

    # An option change reaches the endpoint after an invalidation.
    execute(
        database,
        "INSERT INTO project_option (project_id, key, value) VALUES (%s, 'sentry:scrub_data',"
        " 'true'), (%s, 'ui:theme', '\"dark\"')",
        project,
        project,
    )
    invalidate(project_id=project)
    harness.wait_for(
        lambda: get(proc, active)[1]["revision"] != config["revision"], 15, 0.2, "new revision"
    )
    assert get(proc, active)[1]["config"]["options"]["project"] == {"sentry:scrub_data": True}

    # Organization scope: every key of the organization is cleared (tombstones). A GET
    # for one of its keys then computes the current config: never a 404.
    before = get(proc, active)[1]["revision"]
    execute(
        database,
        "INSERT INTO organization_option (organization_id, key, value)"
        " VALUES (%s, 'relay:pii', '\"strict\"')",
        s.organization_id,
    )
    invalidate(organization_id=s.organization_id)
    statuses: list[int] = []

    def current() -> bool:
        status, doc = get(proc, active)
        statuses.append(status)
        return status == 200 and doc["revision"] != before

    harness.wait_for(current, 15, 0.05, "the current config")
    assert set(statuses) == {200}, statuses
    status, doc = get(proc, active)
    assert status == 200
    assert doc["config"]["options"]["organization"] == {"relay:pii": "strict"}
    for key in (inactive, deleted):  # inactive: computed as disabled; deleted: as before
        status, doc = get(proc, key)
        assert (status, doc["disabled"]) == (200, True)
    assert get(proc, "no-such-key")[0] == 404
    doc_revision = get(proc, active)[1]["revision"]

    def republished() -> bool:
        """The tombstone, then the config again (the miss asked for a recompute)."""
        mine = [p.value for p in configs(settings) if p.key == active]
        cleared = [n for n, v in enumerate(mine) if v is None]
        return bool(cleared) and any(
            v is not None and v["revision"] == doc_revision for v in mine[cleared[-1] + 1 :]
        )

    harness.wait_for(republished, 15, 0.2, "the tombstone, then the config again")
    final = latest(settings)
    assert final[deleted] is not None  # no longer a key of the organization: untouched


def test_a_config_that_does_not_decode_is_dead_lettered_and_the_feed_goes_on(
    settings: Settings, worker: Callable[..., harness.Proc], publisher: Publisher
) -> None:
    """Configs published by another process reach the served table through the feed (a
    librdkafka consumer following the table's partitions); one that is not Avro goes to
    the dead letters with its bytes and reason, and the configs after it are served."""
    proc = worker(**ENV)
    now = dt.datetime.now(dt.UTC)
    topic = publisher.encode("project-configs", disabled_record("before", now))[0]
    publisher.publish("project-configs", disabled_record("before", now), key="before")
    garbage = b"not a config"
    publisher.send_raw(topic, garbage, key=b"garbled", headers=[])
    publisher.publish("project-configs", disabled_record("after", now), key="after")
    publisher.flush()
    for key in ("before", "after"):
        harness.wait_for(lambda key=key: get(proc, key)[0] == 200, 30, 0.2, f"{key} served")
        doc = get(proc, key)[1]
        assert (doc["public_key"], doc["config"]) == (key, {"disabled": True})
    letters = harness.wait_for(
        lambda: [(v, h) for _, v, h in read_topic(settings, "dead-letters")] or None, 15, 0.5
    )
    assert [v for v, _ in letters] == [garbage]
    assert letters[0][1][H_REASON] == FailureReason.DECODE.value.encode()
    assert get(proc, "garbled")[0] == 404  # not a key: nothing was served for it


@pytest.mark.slow  # two worker starts per mode (make test-slow)
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "faust-feed"])
def test_a_restarted_worker_serves_the_configs_it_had_without_recomputing_them(
    settings: Settings,
    database: str,
    worker: Callable[..., harness.Proc],
    invalidate: Callable[..., None],
    direct: bool,
) -> None:
    """The served table comes back from its changelog (``project-configs`` itself with
    the direct feed, the table's own otherwise): the same documents, not computed again
    (a key the table does not hold is computed on the GET, with a new ``computed_at``)."""
    settings = settings.with_(direct_consumers=direct)
    first = worker(settings, **ENV)
    s = seed(database, keys_per_project=2)
    project = s.project_ids[0]
    keys = s.keys[project]
    invalidate(project_id=project)
    harness.wait_for(lambda: set(keys) <= set(latest(settings)), 15, 0.2, "published")
    harness.wait_for(lambda: all(get(first, k)[0] == 200 for k in keys), 10, 0.2, "served")
    before = {k: get(first, k)[1] for k in keys}
    first.stop()

    second = worker(settings, **ENV)
    # No GET before the table holds them: a GET of a key it does not hold computes the
    # key's config (and requests a recompute). On the embedded broker Faust's recovery
    # stops before the last record batch of a partition; the feed reads the rest.
    harness.wait_for(
        lambda: metric(second, "streams_project_configs_served_keys") >= len(keys),
        30,
        0.2,
        "the table recovered",
    )
    harness.wait_for(lambda: all(get(second, k)[0] == 200 for k in keys), 20, 0.2, "served")
    assert {k: get(second, k)[1] for k in keys} == before
    assert metric(second, "streams_invalidation_scheduled_total") == 0  # no miss requested


@pytest.mark.slow  # two workers and a rebalance: about 20 s (make test-slow)
def test_either_of_two_workers_answers_for_every_key(
    settings: Settings,
    database: str,
    worker: Callable[..., harness.Proc],
    invalidate: Callable[..., None],
) -> None:
    owner = DefaultPartitioner()  # murmur2, as the configs are published

    def partition(key: str) -> int:
        return int(owner(key.encode(), [0, 1, 2, 3], [0, 1, 2, 3]))

    first = worker(**ENV)
    s = seed(database, keys_per_project=0)
    project = s.project_ids[0]
    # Two keys on each partition, so each worker owns some.
    candidates = [f"routed-{n}" for n in range(200)]
    keys = [k for p in range(4) for k in [c for c in candidates if partition(c) == p][:2]]
    for k in keys:
        execute(
            database, "INSERT INTO project_key (project_id, public_key) VALUES (%s, %s)", project, k
        )
    second = worker(settings.with_(web_port=stack.free_port()), **ENV)
    harness.wait_for(
        lambda: first.health().get("status") == "ready", 30, 0.25, "first ready after rebalance"
    )
    # Both own some partitions: a key's config lives with its partition's owner.
    assert first.health()["assignment"] and second.health()["assignment"]

    invalidate(project_id=project)
    for proc in (first, second):
        harness.wait_for(
            lambda proc=proc: all(get(proc, k)[0] == 200 for k in keys), 20, 0.2, "all served"
        )
    # Until the table holds a key, a GET computes it (computed_at differs per answer);
    # then either worker answers from the owner's table: the same document.
    harness.wait_for(
        lambda: set(keys) <= {k for k, v in latest(settings).items() if v}, 20, 0.2, "published"
    )
    harness.wait_for(
        lambda: all(get(first, k)[1] == get(second, k)[1] for k in keys), 20, 0.2, "same answers"
    )

    # Routed, not just replicated: asked through the first worker, the keys of the
    # second's partitions are answered by the second.
    topic = settings.topic_prefix + "project-configs"
    theirs = {
        int(tp.rsplit(":", 1)[1])
        for tp in second.health()["assignment"]
        if tp.rsplit(":", 1)[0] == topic
    }
    expected = sum(partition(k) in theirs for k in keys)
    assert 0 < expected < len(keys)
    before = metric(second, "streams_project_configs_served_total")
    for k in keys:
        assert get(first, k)[0] == 200
    assert metric(second, "streams_project_configs_served_total") - before == expected
    assert {get(proc, "unknown")[0] for proc in (first, second)} == {404}
