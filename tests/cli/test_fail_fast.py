"""Unreachable dependencies and bad settings: exit 2 within seconds, with one line naming
the address, the cause and the variable, and no secret (issue 15, "fail fast")."""

from __future__ import annotations

import socket

import pytest

from streams.settings import Settings
from tests.cli.support import CLOSED, PASSWORD, streams
from tests.support import harness

KAFKA_LINE = (
    f"streams: cannot reach Kafka at {CLOSED} (connection refused) — is the broker running? "
    "see KAFKA_BOOTSTRAP_SERVERS"
)
BAD_DSN_LINE = "streams: DATABASE_URL is not a valid PostgreSQL DSN"


def assert_one_line(result: object, expected: str, limit: float = 5.0) -> None:
    from tests.cli.support import Result

    assert isinstance(result, Result)
    assert result.code == 2, result.stderr[-2000:]
    assert result.err_lines == [result.err_lines[0]], result.stderr[-2000:]
    assert result.err_lines[0].startswith(expected), result.err_lines[0]
    assert PASSWORD not in result.stdout + result.stderr
    assert result.seconds < limit, f"took {result.seconds:.1f}s"


@pytest.mark.parametrize(
    "args",
    [
        ["topics", "list"],
        ["worker"],
        ["relay"],
        ["invalidate", "--project-id", "1"],
        ["dlq", "replay", "--topic", "resource-changes"],  # publishes
        ["backfill"],
        ["lag-exporter", "--once"],
    ],
    ids=" ".join,
)
def test_broker_not_listening(args: list[str]) -> None:
    assert_one_line(streams(*args), KAFKA_LINE)


def test_database_not_listening_db_migrate() -> None:
    assert_one_line(
        streams("db", "migrate"),
        "streams: cannot connect to PostgreSQL at 127.0.0.1:1/streams (connection refused) — "
        "is the database running? see DATABASE_URL",
    )


@pytest.mark.parametrize("args", [["db", "migrate"], ["relay"], ["worker"]], ids=" ".join)
@pytest.mark.parametrize(
    "dsn", [f"host=db password={PASSWORD} nonsense", f"postgresql://u:{PASSWORD}@db:port/x"]
)
def test_bad_dsn(args: list[str], dsn: str) -> None:
    result = streams(*args, env={"DATABASE_URL": dsn})
    assert_one_line(result, "streams: DATABASE_URL ")
    assert "***" not in result.stderr  # the expected shape is shown as written, not masked


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("STREAMS_WEB_PORT", "99999", "STREAMS_WEB_PORT=99999 must be <= 65535"),
        ("STREAMS_LOG_LEVEL", "verbose", "STREAMS_LOG_LEVEL='verbose': not a log level"),
        ("STREAMS_AGENTS", "bogus", "STREAMS_AGENTS names unknown agents bogus; known: backfill"),
        ("STREAMS_CONNECT_TIMEOUT", "soon", "STREAMS_CONNECT_TIMEOUT"),
    ],
)
def test_invalid_setting(variable: str, value: str, says: str) -> None:
    assert_one_line(streams("worker", env={variable: value}), f"streams: {says}")


def test_lag_exporter_once_exits_nonzero_when_poll_fails() -> None:
    """A port that accepts TCP but answers no Kafka metadata: not "exit 0"."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = streams(
            "lag-exporter",
            "--once",
            env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "STREAMS_CONNECT_TIMEOUT": "1"},
        )
    assert result.code != 0
    assert f"127.0.0.1:{port}" in result.err_lines[-1]
    assert result.seconds < 10


# --- with the session's real broker and PostgreSQL ----------------------------------------


@pytest.mark.parametrize(
    "args", [["relay"], ["worker"], ["invalidate", "--project-id", "1"]], ids=" ".join
)
def test_database_not_listening_broker_up(settings: Settings, args: list[str]) -> None:
    env = harness.env_for(settings, DATABASE_URL=f"postgresql://u:{PASSWORD}@127.0.0.1:1/x")
    assert_one_line(
        streams(*args, env=env),
        "streams: cannot connect to PostgreSQL at 127.0.0.1:1/x (connection refused)",
    )


def test_second_relay_names_the_busy_metrics_port(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = harness.env_for(settings, STREAMS_METRICS_PORT=str(port))
        result = streams("relay", env=env)
    assert_one_line(result, f"streams: cannot listen on 127.0.0.1:{port} for the relay's /metrics")
    assert "STREAMS_METRICS_PORT" in result.err_lines[0]


def test_lag_exporter_port_out_of_range_is_a_usage_error() -> None:
    result = streams("lag-exporter", "--port", "99999")
    assert result.code == 2
    assert result.err_lines[-1].endswith("argument --port: 99999 is not a port (0-65535)")
