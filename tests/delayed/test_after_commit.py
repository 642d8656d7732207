"""After-commit forms (``conn=``): published if, and only if, the caller's transaction commits."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from streams import client
from streams.publisher import Publisher
from streams.settings import Settings
from tests.projectconfigs.support import seed
from tests.relay.support import TopicReader, start_relay
from tests.support import harness

ENV = {"STREAMS_AGENTS": "invalidation,project_configs"}


@pytest.fixture
def wired(
    settings: Settings, publisher: Publisher, processes: list[harness.Proc], tmp_path: Path
) -> Iterator[str]:
    """The client on this test's stack, and a relay (whose pump sends committed rows)."""
    client.set_publisher(publisher)
    start_relay(settings, processes, tmp_path / "relay.log")
    try:
        yield settings.database_url.get()
    finally:
        client.set_scope_resolver(None)
        client.set_publisher(None)


def served(proc: harness.Proc, key: str) -> dict[str, Any]:
    status, body = proc.get(f"/api/project-configs/{key}")
    return json.loads(body) if status == 200 else {}


def test_a_commit_6_s_after_the_call_is_what_the_served_config_shows(
    wired: str, worker: Callable[..., harness.Proc]
) -> None:
    dsn = wired
    proc = worker(**ENV)
    s = seed(dsn)
    project = s.project_ids[0]
    key = s.keys[project][0]
    client.schedule_invalidate_project_config(trigger="test", project_id=project, countdown=0)
    harness.wait_for(lambda: served(proc, key).get("revision"), 30, 0.2, "first config")

    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO project_option (project_id, key, value)"
            " VALUES (%s, 'sentry:scrub_data', 'true')",
            (project,),
        )
        client.schedule_invalidate_project_config(
            trigger="test", project_id=project, countdown=5, conn=conn
        )
        time.sleep(6.0)  # longer than the countdown: the recompute must still see the commit
        assert "sentry:scrub_data" not in served(proc, key)["config"]["options"]["project"]
        conn.commit()
    harness.wait_for(
        lambda: served(proc, key)["config"]["options"]["project"].get("sentry:scrub_data"),
        30,
        0.2,
        "the committed option served",
    )


def test_a_rollback_publishes_nothing_for_every_conn_form(wired: str, settings: Settings) -> None:
    dsn = wired
    s = seed(dsn)
    project = s.project_ids[0]
    topics = ["project-config-invalidations", "buffer-increments"]
    reader = TopicReader(settings, topics)
    try:
        with psycopg.connect(dsn) as conn:
            client.schedule_invalidate_project_config(
                trigger="rolled-back", project_id=project, conn=conn
            )
            client.incr("issue_group", {"times_seen": 1}, {"id": 42}, conn=conn)
            conn.rollback()
            client.schedule_invalidate_project_config(
                trigger="committed", project_id=project, conn=conn
            )
            client.incr("issue_group", {"times_seen": 2}, {"id": 42}, conn=conn)
            conn.commit()
        records = reader.wait_for(lambda rs: len(rs) >= 2, 20, "the committed messages")
        reader.drain(1.5)
        assert sorted(r.topic for r in reader.records) == sorted(topics)
        invalidation = next(r for r in records if r.topic == topics[0])
        assert invalidation.value["trigger"] == "committed"
        increment = next(r for r in records if r.topic == topics[1])
        assert increment.value["columns"] == {"times_seen": 2}
    finally:
        reader.close()
