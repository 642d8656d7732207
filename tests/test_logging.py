"""One log format everywhere: event names with their fields, JSON lines, no secrets."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from streams.dev import stack
from streams.logs import Formatter, redact
from streams.settings import Secret, Settings
from tests.relay.support import queued, start_relay, wait_empty, write
from tests.support import harness

PASSWORD = f"pw-{uuid.uuid4().hex}"


def record(event: str, level: int = logging.WARNING, **extra: Any) -> logging.LogRecord:
    logger = logging.getLogger("streams.test")
    return logger.makeRecord(logger.name, level, __file__, 1, event, (), None, extra=extra)


def test_text_lines_show_the_event_and_every_field() -> None:
    line = Formatter().format(
        record("relay.publish.failed", table="region_outbox", outbox_id=42, error="timed out")
    )
    assert re.search(
        r" WARNING streams\.test relay\.publish\.failed table=region_outbox outbox_id=42 "
        r'error="timed out"$',
        line,
    ), line


def test_json_lines_parse_and_carry_the_fields() -> None:
    fmt = Formatter(json_lines=True)
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("agent.failed", logging.ERROR, attempt=3, tags=["a", "b"])
        failed.exc_info = sys.exc_info()
    lines = [fmt.format(r) for r in (record("relay.started", concurrency=1), failed)]
    parsed = [json.loads(line) for line in "\n".join(lines).splitlines()]
    assert parsed[0]["event"] == "relay.started" and parsed[0]["concurrency"] == 1
    assert parsed[1]["attempt"] == 3 and parsed[1]["tags"] == ["a", "b"]
    assert "ValueError: boom" in parsed[1]["exception"]


@pytest.mark.parametrize("json_lines", [False, True])
def test_secrets_and_dsn_passwords_never_print(json_lines: bool) -> None:
    fmt = Formatter(json_lines=json_lines, secrets=[PASSWORD])
    lines = [
        fmt.format(record("db.connect", dsn=f"postgresql://app:{PASSWORD}@db:5432/app")),
        fmt.format(record("db.connect", dsn=f"host=db password={PASSWORD} dbname=app")),
        fmt.format(record("settings.loaded", database_url=Secret("postgresql://x:y@z/db"))),
        fmt.format(record(f"oops {PASSWORD}")),  # a bare secret of this process
    ]
    for line in lines:
        assert PASSWORD not in line and "x:y@" not in line, line
        if json_lines:
            json.loads(line)
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"  # nothing to hide


@pytest.fixture
def broker_pid(real_stack: harness.Stack) -> int:
    if real_stack.started is None or real_stack.started.broker_pid is None:
        pytest.skip("the broker is not ours to pause")
    return real_stack.started.broker_pid


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_failed_relay_publish_logs_table_outbox_id_and_error(
    settings: Settings,
    processes: list[harness.Proc],
    tmp_path: Path,
    broker_pid: int,
    log_format: str,
) -> None:
    dsn = settings.database_url.get()
    relay = start_relay(
        settings,
        processes,
        tmp_path / "relay.log",
        concurrency=1,
        STREAMS_LOG_FORMAT=log_format,
        STREAMS_RELAY_PUBLISH_TIMEOUT="1",
    )
    harness.wait_for(lambda: "relay.started" in relay.output(), 30, 0.1, "relay started")
    os.kill(broker_pid, signal.SIGSTOP)  # the broker stops answering; the row stays queued
    try:
        (outbox_id,) = write(dsn, [(1, 1)])
        harness.wait_for(lambda: "relay.publish.failed" in relay.output(), 30, 0.2, "failure")
    finally:
        os.kill(broker_pid, signal.SIGCONT)
    wait_empty(dsn, 60, relay)  # and it goes out once the broker is back
    relay.stop()
    lines = relay.output().splitlines()
    if log_format == "json":
        events = [json.loads(line) for line in lines]  # every line parses
        failed = next(e for e in events if e["event"] == "relay.publish.failed")
        assert failed["table"] == "region_outbox"
        assert failed["outbox_id"] == outbox_id
        assert failed["error"]
    else:
        failed_line = next(line for line in lines if "relay.publish.failed" in line)
        assert f"table=region_outbox outbox_id={outbox_id} error=" in failed_line
    assert queued(dsn) == 0


@pytest.mark.slow  # `make test-slow` (CI runs it): a load or kill -9 test
def test_streams_up_never_logs_the_database_password(settings: Settings, tmp_path: Path) -> None:
    """Every line `streams up` and its children write, with a DSN that has a password."""
    env = harness.env_for(settings)
    state = tmp_path / "state"
    env.update(
        {
            # Embedded PostgreSQL trusts local connections, so any password connects.
            "DATABASE_URL": f"{settings.database_url.get()} password={PASSWORD}",
            "STREAMS_STATE_DIR": str(state),
            "STREAMS_WEB_PORT": str(stack.free_port()),
            "STREAMS_LAG_EXPORTER_PORT": str(stack.free_port()),
            "STREAMS_METRICS_PORT": str(stack.free_port()),
            "STREAMS_LOG_LEVEL": "INFO",
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "streams", "up", "--duration", "30"],
        env=env,
        cwd=harness.ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    console = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, "\n".join(console[-40:])
    logs = {p.name: p.read_text(errors="replace").splitlines() for p in (state / "logs").glob("*")}
    assert {"worker.log", "relay.log", "lag-exporter.log"} <= set(logs)
    assert any("relay.started" in line for line in logs["relay.log"])  # the scan saw real logs
    assert any("database postgresql" in line or "database " in line for line in console)
    leaks = [
        f"{name}: {line}"
        for name, lines in [("console", console), *logs.items()]
        for line in lines
        if PASSWORD in line
    ]
    assert not leaks, "\n".join(leaks[:10])
