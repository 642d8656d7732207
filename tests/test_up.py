"""`make run` = `streams up`: the whole pipeline comes up, messages flow, nothing outlives it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo

from streams.db.pool import redacted_url
from streams.dev import stack
from streams.settings import Settings
from tests.support.harness import ROOT, env_for

# The test PostgreSQL trusts local connections, so a password in the URL is accepted
# and ignored: enough to check that `streams up` never prints it.
PASSWORD = "up-test-dsn-password"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/streams", "postgresql://app:***@db:5432/streams"),
        (
            "postgresql://app:p@ss@db/streams?sslmode=require",
            "postgresql://app:***@db/streams?sslmode=require",
        ),
        ("postgresql://app@db/streams?password=s3cret", "postgresql://app@db/streams?password=***"),
        (
            "postgresql://postgres@127.0.0.1:5432/streams",
            "postgresql://postgres@127.0.0.1:5432/streams",
        ),
        (
            "host=db user=app password=s3cret dbname=streams",
            "host=db user=app password=*** dbname=streams",
        ),
    ],
)
def test_database_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_up_shows_messages_flowing_within_60s_and_stops_everything(
    settings: Settings, tmp_path: Path
) -> None:
    env = env_for(settings)
    env.update(
        {
            "STREAMS_STATE_DIR": str(tmp_path / "state"),
            "STREAMS_WEB_PORT": str(stack.free_port()),
            "STREAMS_LAG_EXPORTER_PORT": str(stack.free_port()),
            "STREAMS_METRICS_PORT": str(stack.free_port()),
            "STREAMS_BUFFER_FLUSH_INTERVAL": "1",
            "STREAMS_INVALIDATION_COUNTDOWN": "1",
            "DATABASE_URL": make_conninfo(settings.database_url.get(), password=PASSWORD),
        }
    )
    env.pop("STREAMS_KAFKA_SESSION_TIMEOUT")  # `up` brings its own short defaults
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "up"],
        env=env,
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    lines: list[str] = []
    flowing = False
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            status = re.search(r"buffers=(\d+) applied.*webhooks=received:(\d+)", line)
            published = re.search(r"outbox=\d+ queued/(\d+) published", line)
            if (
                status
                and published
                and int(status[1]) > 0
                and int(status[2]) > 0
                and int(published[1]) > 0
            ):
                flowing = True
                break
            if time.monotonic() - started > 60:
                break
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, _ = proc.communicate(timeout=60)
        lines.append(out or "")
    text = "".join(lines)
    assert flowing, f"no flowing status line within 60 s:\n{text[-3000:]}"
    assert PASSWORD not in text
    assert "password=***" in text  # the database address is still shown, masked
    assert proc.returncode == 0, text[-3000:]
    pids = [int(p) for p in re.findall(r"started [\w-]+ pid=(\d+)", text)]
    assert len(pids) >= 3  # worker, relay, lag exporter
    deadline = time.monotonic() + 20
    while any(stack.pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if stack.pid_alive(p)], "a component outlived `streams up`"
