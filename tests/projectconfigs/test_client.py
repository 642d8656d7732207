"""``streams.client.schedule_invalidate_project_config`` against the real broker and database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import pytest

from streams import client
from streams.projectconfigs.scopes import DatabaseScopeResolver
from streams.publisher import Publisher
from streams.settings import Settings
from tests.projectconfigs.support import execute, read_topic, seed
from tests.support import harness

TOPIC: Final = "project-config-invalidations"


@pytest.fixture
def wired(database: str, publisher: Publisher) -> Iterator[None]:
    resolver = DatabaseScopeResolver(database)
    client.set_publisher(publisher)
    client.set_scope_resolver(resolver)
    try:
        yield
    finally:
        client.set_scope_resolver(None)
        client.set_publisher(None)
        resolver.close()


@pytest.mark.parametrize(
    "scope",
    [
        {},
        {"organization_id": 1, "project_id": 2},
        {"project_id": 2, "public_key": "abc"},
        {"organization_id": 1, "project_id": 2, "public_key": "abc"},
    ],
)
def test_no_scope_or_several_scopes_raise_type_error_and_publish_nothing(
    settings: Settings, wired: None, scope: dict[str, Any]
) -> None:
    with pytest.raises(TypeError, match="exactly one of"):
        client.schedule_invalidate_project_config(trigger="test", **scope)
    assert read_topic(settings, TOPIC) == []


def test_bad_trigger_or_countdown_publish_nothing(settings: Settings, wired: None) -> None:
    with pytest.raises(TypeError, match="trigger"):
        client.schedule_invalidate_project_config(trigger=None, project_id=1)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="countdown"):
        client.schedule_invalidate_project_config(trigger="t", project_id=1, countdown="5")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="countdown"):
        client.schedule_invalidate_project_config(trigger="t", project_id=1, countdown=-1)
    assert read_topic(settings, TOPIC) == []


def test_every_scope_of_an_organization_is_keyed_by_the_organization(
    settings: Settings, database: str, wired: None
) -> None:
    s = seed(database)
    project = s.project_ids[0]
    key = s.keys[project][0]
    client.schedule_invalidate_project_config(trigger="a", organization_id=s.organization_id)
    client.schedule_invalidate_project_config(trigger="b", project_id=project, countdown=0.5)
    client.schedule_invalidate_project_config(trigger="c", public_key=key)
    execute(database, "DELETE FROM project_key WHERE public_key = %s", key)
    client.schedule_invalidate_project_config(trigger="d", public_key=key)
    sent = {m.value["trigger"]: m for m in read_topic(settings, TOPIC) if m.value}
    org = str(s.organization_id)
    assert [sent[t].key for t in "abc"] == [org, org, org]
    assert sent["c"].value is not None and sent["c"].value["project_id"] == project
    assert sent["b"].value is not None and sent["b"].value["countdown"] == 0.5
    # The key is gone: no organization to resolve; it is keyed by itself.
    gone = sent["d"].value
    assert gone is not None and sent["d"].key == f"k:{key}"
    assert (gone["scope"], gone["organization_id"], gone["public_key"]) == ("public_key", None, key)


def test_the_cli_schedules_an_invalidation(settings: Settings, database: str) -> None:
    import subprocess
    import sys

    s = seed(database)
    done = subprocess.run(
        [sys.executable, "-m", "streams", "invalidate", "--project-id", str(s.project_ids[0])],
        env=harness.env_for(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (sent,) = read_topic(settings, TOPIC)
    assert sent.key == str(s.organization_id)
    assert sent.value is not None
    assert (sent.value["trigger"], sent.value["project_id"]) == ("cli", s.project_ids[0])
