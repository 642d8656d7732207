"""``streams invalidate`` refuses a scope that names nothing (exit 1) unless ``--force``."""

from __future__ import annotations

import psycopg
import pytest

from streams.settings import Settings
from tests.cli.support import streams
from tests.support import harness


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--project-id", "999999", "no project 999999 in the database"),
        ("--public-key", "nope", "no key nope in the database"),
        ("--organization-id", "999999", "no organization 999999 in the database"),
    ],
)
def test_unknown_scope_is_refused(settings: Settings, flag: str, value: str, says: str) -> None:
    result = streams("invalidate", flag, value, env=harness.env_for(settings))
    assert result.code == 1, result.stderr
    assert result.err_lines == [f"streams: {says}; nothing requested (--force to request anyway)"]
    assert "requested:" not in result.stdout


def test_force_and_known_project_are_requested(settings: Settings) -> None:
    with psycopg.connect(settings.database_url.get(), autocommit=True) as conn:
        org = conn.execute("INSERT INTO organization (slug) VALUES ('o') RETURNING id").fetchone()
        assert org is not None
        row = conn.execute(
            "INSERT INTO project (organization_id, slug) VALUES (%s, 'p') RETURNING id", org
        ).fetchone()
        assert row is not None
    env = harness.env_for(settings)
    known = streams("invalidate", "--project-id", str(row[0]), env=env)
    assert known.code == 0, known.stderr
    assert known.stdout.startswith("requested: ")
    forced = streams("invalidate", "--project-id", "999999", "--force", env=env)
    assert forced.code == 0, forced.stderr
    assert forced.stdout.startswith("requested: ")
