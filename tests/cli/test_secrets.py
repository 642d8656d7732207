"""No command prints the password of DATABASE_URL (issue 15, "safe defaults")."""

from __future__ import annotations

from pathlib import Path

from tests.cli.support import PASSWORD, streams


def test_dev_start_and_status_mask_the_password_of_a_given_database(tmp_path: Path) -> None:
    env = {"STREAMS_STATE_DIR": str(tmp_path)}  # both addresses given: nothing is started
    start = streams("dev", "start", env=env)
    assert start.code == 0, start.stderr
    assert "export DATABASE_URL=postgresql://streams:***@127.0.0.1:1/streams" in start.stdout
    status = streams("dev", "status", env=env)
    for result in (start, status):
        assert PASSWORD not in result.stdout + result.stderr


def test_errors_never_show_the_password() -> None:
    for args in (["db", "migrate"], ["relay"], ["schedules", "list"], ["dlq", "list"]):
        result = streams(*args)
        assert result.code == 2
        assert PASSWORD not in result.stdout + result.stderr
