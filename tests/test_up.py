"""`make run` = `streams up`: the whole pipeline comes up, messages flow, nothing outlives it."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
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


# --- Ctrl-C on a terminal (issue 15, "stopping") ------------------------------------------


class Terminal:
    """``streams ARGS`` on a pseudo-terminal, as typed by a user; Ctrl-C is ``\\x03``."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: a session leader with the pty as its terminal
            os.chdir(ROOT)
            os.execve(sys.executable, [sys.executable, "-m", "streams", *args], env)
        self.text = ""
        self.code: int | None = None
        self.hung_up = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self.hung_up:
            # select, not a blocking read: close() cannot end a read already waiting, and
            # the terminal only hangs up once no reference to it is left.
            if not select.select([self.fd], [], [], 0.05)[0]:
                continue
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # EIO: the terminal's last writer is gone
                return
            if not chunk:
                return
            self.text += chunk.decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text, re.MULTILINE):
            assert self.exited() is None, f"exited early:\n{self.text[-3000:]}"
            assert time.monotonic() < deadline, f"no {pattern!r}:\n{self.text[-3000:]}"
            time.sleep(0.1)

    def exited(self) -> int | None:
        if self.code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
        return self.code

    def ctrl_c(self, timeout: float = 30.0) -> tuple[float, list[str]]:
        """Press Ctrl-C; (seconds until the command exited, lines it printed after)."""
        before = len(self.text)
        os.write(self.fd, b"\x03")
        started = time.monotonic()
        while self.exited() is None and time.monotonic() - started < timeout:
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        self._reader.join(5)
        after = [ln for ln in self.text[before:].splitlines() if ln.strip() not in ("", "^C")]
        return elapsed, after

    def hang_up(self) -> None:
        """Close the terminal, as a closed window does (SIGHUP to its session)."""
        self.hung_up = True
        self._reader.join(5)
        os.close(self.fd)

    def close(self) -> None:
        if self.exited() is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        if not self.hung_up:
            self.hung_up = True
            self._reader.join(5)
            os.close(self.fd)


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMS_", "KAFKA_"))}
    env.pop("DATABASE_URL", None)
    return {
        **env,
        "PYTHONPATH": str(ROOT),
        "STREAMS_STATE_DIR": str(tmp_path / "state"),
        "STREAMS_WEB_PORT": str(stack.free_port()),
        "STREAMS_LAG_EXPORTER_PORT": str(stack.free_port()),
        "STREAMS_METRICS_PORT": str(stack.free_port()),
    }


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
    return out


def test_ctrl_c_stops_components_then_its_own_stack_within_5s(tmp_path: Path) -> None:
    term = Terminal(["up"], _clean_env(tmp_path))
    try:
        term.wait_for(r"^\[\d\d:\d\d:\d\d\] ", 120)  # the first status line: all running
        family = [p.pid for p in psutil.Process(term.pid).children(recursive=True)]
        info = stack.read_stack(tmp_path / "state")
        assert info.broker_pid in family and info.postgres_pid in family
        elapsed, printed = term.ctrl_c()
    finally:
        term.close()
    assert term.code == 0, term.text[-3000:]
    assert elapsed < 5.0, f"stop took {elapsed:.1f}s:\n{term.text[-3000:]}"
    assert len(printed) <= 3, printed
    assert not _alive(family), "a process outlived `streams up`"
    assert not stack.stack_file(tmp_path / "state").exists()


def test_ctrl_c_leaves_a_dev_stack_running(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    run = [sys.executable, "-m", "streams", "dev"]
    subprocess.run([*run, "start"], env=env, cwd=ROOT, check=True, capture_output=True)
    dev = stack.read_stack(tmp_path / "state")
    dev_pids = [p for p in (dev.broker_pid, dev.postgres_pid) if p]
    try:
        term = Terminal(["up", "--no-demo"], env)
        try:
            term.wait_for(r"^\[\d\d:\d\d:\d\d\] ", 120)
            components = [p.pid for p in psutil.Process(term.pid).children()]
            elapsed, printed = term.ctrl_c()
        finally:
            term.close()
        assert term.code == 0, term.text[-3000:]
        assert elapsed < 5.0, f"stop took {elapsed:.1f}s"
        assert len(printed) <= 3, printed
        assert not _alive(components)
        assert _alive(dev_pids) == dev_pids, "`streams up` stopped a stack it did not start"
        assert stack.read_stack(tmp_path / "state").broker_pid == dev.broker_pid
    finally:
        subprocess.run([*run, "stop"], env=env, cwd=ROOT, check=False, capture_output=True)
    assert not _alive(dev_pids)


def test_closing_the_terminal_stops_the_components(settings: Settings, tmp_path: Path) -> None:
    """A hang-up (terminal closed) reaches `up` alone; it still stops what it started."""
    env = {**_clean_env(tmp_path), **env_for(settings)}
    for name in ("STREAMS_STATE_DIR", "STREAMS_WEB_PORT", "STREAMS_METRICS_PORT"):
        env[name] = _clean_env(tmp_path)[name]
    env["STREAMS_LAG_EXPORTER_PORT"] = str(stack.free_port())
    term = Terminal(["up", "--no-demo"], env)
    try:
        term.wait_for(r"^\[\d\d:\d\d:\d\d\] ", 120)
        components = [p.pid for p in psutil.Process(term.pid).children()]
        assert len(components) >= 3
        term.hang_up()
        started = time.monotonic()
        while _alive([term.pid, *components]) and time.monotonic() - started < 10:
            time.sleep(0.05)
        assert not _alive(components), "a component outlived its closed terminal"
        assert time.monotonic() - started < 5.0
    finally:
        term.close()


def test_the_status_line_shows_a_whole_report_subject_and_cuts_a_long_one_visibly(
    settings: Settings,
) -> None:
    """The last mail's subject on the status line: a weekly report's dates whole (it once
    read 'Nov 23 - Nov 3' for 'Nov 23 - Nov 30'), a longer subject cut with '...'."""
    import asyncio
    from types import SimpleNamespace

    from streams.demo import reports

    def receive(subject: str) -> str:
        raw = f"Subject: {subject}\r\nX-Streams-Kind: weekly_report\r\n\r\nbody\r\n".encode()
        envelope = SimpleNamespace(original_content=raw, content=raw)
        asyncio.run(reports._Sink().handle_DATA(None, None, envelope))
        return reports.status(settings)

    whole = "Weekly report for demo-reports-2: Nov 23 - Nov 30"
    assert f"last={whole!r}" in receive(whole)
    long = "[shop] ana1 commented on ZeroDivisionError: division by zero in cart totals"
    line = receive(long)
    shown = line.split("last=", 1)[1]
    assert shown == repr(long[: reports.SUBJECT_WIDTH - 3] + "...")
    assert len(shown) == reports.SUBJECT_WIDTH + 2  # and its quotes
