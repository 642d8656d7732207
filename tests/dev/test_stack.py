"""`streams dev start|status|stop`: real processes, found by PID, none outliving stop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from streams.dev import stack
from tests.support.harness import ROOT


def cli(args: list[str], state: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")
    }
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env={**clean, "STREAMS_STATE_DIR": str(state), **env},
        cwd=ROOT,
        check=False,
    )


@pytest.fixture
def state() -> Iterator[Path]:
    # Under the checkout's .streams/ like the real thing: pytest's own tmp dirs are 0700,
    # which the unprivileged PostgreSQL user cannot enter.
    path = ROOT / ".streams" / f"devtest-{uuid.uuid4().hex[:8]}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_dev_start_prints_exports_that_work_and_stop_leaves_nothing(state: Path) -> None:
    started = cli(["dev", "start"], state)
    assert started.returncode == 0, started.stderr
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in started.stdout.splitlines()
        if line.startswith("export ")
    )
    info = stack.read_stack(state)
    try:
        assert info.broker_pid and stack.pid_alive(info.broker_pid)
        assert info.postgres_pid and stack.pid_alive(info.postgres_pid)
        with psycopg.connect(exports["DATABASE_URL"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        admin = AdminClient({"bootstrap.servers": exports["KAFKA_BOOTSTRAP_SERVERS"]})
        assert admin.list_topics(timeout=10).brokers
        status = cli(["dev", "status"], state)
        assert status.returncode == 0 and "running" in status.stdout
        # A second start reuses what runs.
        again = cli(["dev", "start"], state)
        assert again.stdout == started.stdout
    finally:
        stopped = cli(["dev", "stop"], state)
    assert stopped.returncode == 0, stopped.stderr
    assert not stack.pid_alive(info.broker_pid)
    assert not stack.pid_alive(info.postgres_pid)
    postgres_children = subprocess.run(
        ["pgrep", "-f", str(state)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert postgres_children == []
    assert cli(["dev", "status"], state).returncode == 3


def test_dev_start_uses_environment_and_starts_nothing_of_that_part(state: Path) -> None:
    started = cli(
        ["dev", "start"],
        state,
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        DATABASE_URL="postgresql://nobody@127.0.0.1:1/x",
    )
    try:
        assert started.returncode == 0, started.stderr
        info = stack.read_stack(state)
        assert info.broker_pid is None and info.postgres_pid is None
        assert "127.0.0.1:1" in started.stdout
    finally:
        cli(["dev", "stop"], state)
