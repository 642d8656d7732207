"""``recompute`` against a real PostgreSQL: what a batch of due work publishes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import psycopg

from streams.projectconfigs.debounce import DueWork
from streams.projectconfigs.recompute import Publication, recompute
from tests.projectconfigs.support import execute, seed

NOW = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)


def work(kind: str, org: int | None, project: int | None = None, key: str | None = None) -> DueWork:
    return DueWork(kind, org, project, key, "test", 0.0, 5.0, 0)


def run(dsn: str, works: list[DueWork]) -> list[Publication]:
    async def go() -> list[Publication]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await recompute(conn, works, NOW)

    return asyncio.run(go())


def options(pub: Publication) -> dict[str, Any]:
    assert pub.value is not None and pub.value["config"] is not None
    return dict(json.loads(pub.value["config"])["options"])


def test_one_batch_of_every_scope_kind_publishes_what_each_scope_covers(database: str) -> None:
    a = seed(database, projects=2, keys_per_project=2)
    b = seed(database, projects=1)
    gone = seed(database, projects=1)
    (a0, a1), (b0,) = a.project_ids, b.project_ids
    execute(database, "INSERT INTO project_option VALUES (%s, 'sentry:scrub_data', 'true')", a0)
    execute(
        database,
        "INSERT INTO organization_option VALUES (%s, 'relay:pii', '\"on\"')",
        a.organization_id,
    )
    execute(database, "INSERT INTO project_option VALUES (%s, 'ui:theme', '\"dark\"')", a1)
    pubs = run(
        database,
        [
            work("project", a.organization_id, a0),
            work("public_key", a.organization_id, a1, a.keys[a1][0]),
            work("public_key", a.organization_id, a1, "no-such-key"),
            work("organization", b.organization_id),
        ],
    )
    by_key = {p.public_key: p for p in pubs}
    assert set(by_key) == {*a.keys[a0], a.keys[a1][0], "no-such-key", *b.keys[b0]}
    for key in a.keys[a0]:  # the project's keys, with its options and its organization's
        assert options(by_key[key]) == {
            "project": {"sentry:scrub_data": True},
            "organization": {"relay:pii": "on"},
        }
    assert options(by_key[a.keys[a1][0]]) == {"project": {}, "organization": {"relay:pii": "on"}}
    missing = by_key["no-such-key"].value
    assert missing is not None and missing["disabled"] is True  # stops a cached config
    assert all(by_key[k].value is None for k in b.keys[b0])  # tombstones
    assert gone.keys[gone.project_ids[0]][0] not in by_key


def test_a_project_that_moved_gets_its_new_organizations_options(database: str) -> None:
    """The request named the project's old organization: the config is the project's
    as it is now, with its new organization's options."""
    old, new = seed(database), seed(database)
    (project,) = old.project_ids
    execute(
        database,
        "UPDATE project SET organization_id = %s, slug = 'moved' WHERE id = %s",
        new.organization_id,
        project,
    )
    execute(
        database,
        "INSERT INTO organization_option VALUES (%s, 'filters:x', '1')",
        new.organization_id,
    )
    (pub,) = run(database, [work("project", old.organization_id, project)])
    assert pub.value is not None and pub.value["organization_id"] == new.organization_id
    assert options(pub) == {"project": {}, "organization": {"filters:x": 1}}
