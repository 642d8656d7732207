"""Invalidation against a real worker, broker and PostgreSQL: debounce, recompute, recovery."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Final

import pytest

from streams.dev import stack
from streams.dlq import replay as dlq
from streams.projectconfigs.scopes import Scope, ScopeKind
from streams.publisher import Publisher
from streams.settings import Settings
from tests.projectconfigs.support import committed, configs, metric, seed, send_requests
from tests.support import harness

TOPIC: Final = "project-config-invalidations"
COUNTDOWN = 2.0
ENV = {"STREAMS_INVALIDATION_COUNTDOWN": str(int(COUNTDOWN))}


def project_scope(org: int, project: int) -> Scope:
    return Scope(ScopeKind.PROJECT, organization_id=org, project_id=project)


def test_a_thousand_requests_within_the_countdown_recompute_once(
    settings: Settings,
    database: str,
    publisher: Publisher,
    worker: Callable[..., harness.Proc],
) -> None:
    proc = worker(**ENV)
    s = seed(database, projects=2)
    busy, quiet = s.project_ids
    send_requests(publisher, project_scope(s.organization_id, busy), 500, countdown=COUNTDOWN)
    # A request that fits the schema but names no project: dead-lettered, nothing stops.
    bad = Scope(ScopeKind.PROJECT, organization_id=s.organization_id)
    send_requests(publisher, bad, countdown=COUNTDOWN)
    send_requests(publisher, project_scope(s.organization_id, busy), 500, countdown=COUNTDOWN)
    send_requests(publisher, project_scope(s.organization_id, quiet), 1, countdown=COUNTDOWN)
    harness.wait_for(
        lambda: metric(proc, "streams_invalidation_recomputes_total") >= 2, 20, what="recomputes"
    )
    time.sleep(COUNTDOWN + 0.5)  # a second recompute would have come by now
    published = Counter(p.key for p in configs(settings))
    assert published == {s.keys[busy][0]: 1, s.keys[quiet][0]: 1}
    assert metric(proc, "streams_invalidation_scheduled_total", reason="project") == 2
    assert metric(proc, "streams_invalidation_skipped_total", reason="pending_project") == 999
    letters = list(dlq.read(settings, source_topic=settings.topic_prefix + TOPIC))
    assert [d.reason for d in letters] == ["permanent"]
    assert letters[0].value is not None
    dead = publisher.codec.decode(TOPIC, letters[0].value)
    assert (dead["scope"], dead["project_id"]) == ("project", None)


def test_a_pending_organization_swallows_its_projects_and_keys(
    settings: Settings,
    database: str,
    publisher: Publisher,
    worker: Callable[..., harness.Proc],
) -> None:
    proc = worker(**ENV)
    s = seed(database, projects=2, keys_per_project=2)
    other = seed(database, projects=1)
    org = s.organization_id
    first, second = s.project_ids
    send_requests(
        publisher, Scope(ScopeKind.ORGANIZATION, organization_id=org), countdown=COUNTDOWN
    )
    send_requests(publisher, project_scope(org, first), 5, countdown=COUNTDOWN)
    key_scope = Scope(ScopeKind.PUBLIC_KEY, org, second, s.keys[second][1])
    send_requests(publisher, key_scope, 5, countdown=COUNTDOWN)
    # Not covered: another organization's project.
    send_requests(
        publisher, project_scope(other.organization_id, other.project_ids[0]), countdown=COUNTDOWN
    )
    harness.wait_for(
        lambda: metric(proc, "streams_invalidation_recomputes_total") >= 2, 20, what="recomputes"
    )
    time.sleep(0.5)
    published = configs(settings)
    org_keys = {k for keys in s.keys.values() for k in keys}
    tombstones = Counter(p.key for p in published if p.value is None)
    assert tombstones == dict.fromkeys(org_keys, 1)
    assert [p.key for p in published if p.value is not None] == [
        other.keys[other.project_ids[0]][0]
    ]
    assert metric(proc, "streams_invalidation_skipped_total", reason="pending_organization") == 10
    assert metric(proc, "streams_invalidation_scheduled_total", reason="organization") == 1
    assert metric(proc, "streams_invalidation_scheduled_total", reason="project") == 1


def test_a_request_made_during_a_recompute_schedules_another(
    settings: Settings,
    database: str,
    publisher: Publisher,
    worker: Callable[..., harness.Proc],
) -> None:
    import psycopg

    proc = worker(**ENV)
    s = seed(database)
    project = s.project_ids[0]
    key = s.keys[project][0]
    with psycopg.connect(database) as blocker:
        # Hold the recompute inside its query: it waits for this lock.
        blocker.execute("LOCK TABLE project_key IN ACCESS EXCLUSIVE MODE")
        send_requests(publisher, project_scope(s.organization_id, project), 3, countdown=COUNTDOWN)

        def recompute_waiting() -> bool:
            with psycopg.connect(database, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE %s",
                    ("%project_key%",),
                ).fetchone()
            return bool(row and row[0])

        harness.wait_for(recompute_waiting, COUNTDOWN + 10, 0.1, "recompute blocked on the lock")
        send_requests(publisher, project_scope(s.organization_id, project), 3, countdown=COUNTDOWN)
        harness.wait_for(
            lambda: metric(proc, "streams_invalidation_scheduled_total") >= 2, 10, what="second"
        )
        blocker.rollback()
    harness.wait_for(
        lambda: metric(proc, "streams_invalidation_recomputes_total") >= 2, 15, what="recomputes"
    )
    assert [p.key for p in configs(settings)] == [key, key]
    assert metric(proc, "streams_invalidation_skipped_total", reason="pending_project") == 4


@pytest.mark.slow  # `make test-slow` (CI runs it): a load or kill -9 test
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "faust-table"])
def test_pending_recomputes_survive_kill_9_and_run_exactly_once(
    settings: Settings,
    database: str,
    publisher: Publisher,
    worker: Callable[..., harness.Proc],
    direct: bool,
) -> None:
    """Both ways of keeping the due table: streams' own (direct consumer) and Faust's."""
    settings = settings.with_(direct_consumers=direct)
    first = worker(settings, **ENV)
    # Four organizations, so the pending work spreads over the partitions.
    orgs = [seed(database, projects=25) for _ in range(4)]
    countdown = 8.0
    for s in orgs:
        for project in s.project_ids:
            send_requests(publisher, project_scope(s.organization_id, project), countdown=countdown)
    harness.wait_for(
        lambda: metric(first, "streams_invalidation_scheduled_total") == 100, 10, what="scheduled"
    )
    # Once the requests are committed the pending work must come back through the due
    # changelog: through Faust, the windows themselves; direct, each partition's oldest
    # request still needed, from which the next owner reads the requests again.
    harness.wait_for(
        lambda: committed(settings, "project-config-invalidations", "invalidation") == 100,
        10,
        what="commit",
    )
    first.kill9()
    assert configs(settings) == []  # all 100 were still pending
    second = worker(settings, **ENV)
    expected = {key for s in orgs for keys in s.keys.values() for key in keys}
    harness.wait_for(
        lambda: len(configs(settings)) >= 100, countdown + 30, 0.5, what="100 recomputes"
    )
    time.sleep(1.0)  # duplicates, if any, would show up now
    published = Counter(p.key for p in configs(settings))
    assert published == dict.fromkeys(expected, 1)
    assert metric(second, "streams_invalidation_recomputes_total") == 100


@pytest.mark.slow  # `make test-slow` (CI runs it): two workers and a rebalance
def test_two_workers_share_the_scopes_and_one_leaving_hands_its_pending_windows_over(
    settings: Settings,
    database: str,
    publisher: Publisher,
    worker: Callable[..., harness.Proc],
) -> None:
    first = worker(**ENV)
    second = worker(settings.with_(web_port=stack.free_port()), **ENV)
    topic = f"{settings.topic_prefix}{TOPIC}:"

    def owns(proc: harness.Proc) -> bool:
        return any(a.startswith(topic) for a in proc.health().get("assignment", []))

    harness.wait_for(lambda: owns(first) and owns(second), 60, 0.5, what="both own partitions")
    orgs = [seed(database, projects=3) for _ in range(12)]
    countdown = 10.0
    for s in orgs:
        for project in s.project_ids:
            send_requests(publisher, project_scope(s.organization_id, project), countdown=countdown)
    scheduled = "streams_invalidation_scheduled_total"
    harness.wait_for(
        lambda: metric(first, scheduled) + metric(second, scheduled) == 36, 15, what="scheduled"
    )
    assert metric(first, scheduled) > 0 and metric(second, scheduled) > 0  # the scopes are shared
    harness.wait_for(lambda: committed(settings, TOPIC, "invalidation") == 36, 10, what="commit")
    first.stop()  # before any window is due: its pending windows must move to the second
    expected = {key for s in orgs for keys in s.keys.values() for key in keys}
    harness.wait_for(
        lambda: len(configs(settings)) >= 36, countdown + 40, 0.5, what="36 recomputes"
    )
    time.sleep(1.0)  # duplicates, if any, would show up now
    assert Counter(p.key for p in configs(settings)) == dict.fromkeys(expected, 1)
    assert metric(second, "streams_invalidation_recomputes_total") == 36
