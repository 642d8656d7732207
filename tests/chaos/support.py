"""A broker and a PostgreSQL of the chaos test's own, to restart, stop and pause by PID.

The session stack (tests/conftest.py) is shared by every test of the session, so
chaos is done to a private pair started here (same binaries, same start-up code as
``streams dev``). ``STREAMS_SOAK=1`` runs the long cases (70 s and 5 min outages).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from streams import topics
from streams.dev import stack
from streams.settings import Settings
from tests.support import harness

SOAK = os.environ.get("STREAMS_SOAK") == "1"
RECOVERY_BOUND = 5.0  # seconds from a dependency back to every process working again


@dataclass
class PrivateStack:
    dir: Path
    broker_pid: int
    broker_port: int
    pg_pid: int
    pg_port: int
    template: str = ""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://{stack.PG_USER}@127.0.0.1:{self.pg_port}/{stack.PG_DATABASE}"

    def pg_stop(self) -> None:
        """Fast shutdown (SIGINT): every connection is cut, new ones are refused."""
        stack.stop_pid(self.pg_pid, signal.SIGINT, timeout=30)

    def pg_start(self) -> float:
        """Start PostgreSQL again on the same port and data; the time it accepted."""
        self.pg_pid, _ = stack.start_postgres(self.dir, port=self.pg_port)
        return time.monotonic()

    def pg_processes(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer, walwriter, ...)."""
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # "pid (comm) state ppid ...": comm may hold spaces, so split after ")"
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.pg_pid:
                    children.append(int(stat.parent.name))
        return [self.pg_pid, *children]

    def pg_freeze(self) -> list[int]:
        """SIGSTOP PostgreSQL whole: connections stay open, nothing answers."""
        pids = self.pg_processes()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        return pids

    def pg_thaw(self, pids: list[int]) -> float:
        for pid in reversed(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        return time.monotonic()

    def broker_restart(self) -> None:
        """A new broker on the same port: every topic, offset and group is gone (fact 6)."""
        stack.stop_pid(self.broker_pid, signal.SIGTERM)
        self.broker_pid, _ = stack.start_broker(self.dir, port=self.broker_port)

    def broker_pause(self) -> None:
        os.kill(self.broker_pid, signal.SIGSTOP)

    def broker_resume(self) -> float:
        os.kill(self.broker_pid, signal.SIGCONT)
        return time.monotonic()

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.broker_pid, signal.SIGCONT)  # a paused broker ignores SIGTERM
        self.pg_thaw(self.pg_processes())  # likewise a frozen PostgreSQL
        stack.stop_pid(self.broker_pid, signal.SIGTERM)
        stack.stop_pid(self.pg_pid, signal.SIGINT, timeout=30)


def start_private(base: Path) -> PrivateStack:
    base.mkdir(parents=True, exist_ok=True)
    broker_pid, broker_port = stack.start_broker(base)
    try:
        pg_pid, pg_port = stack.start_postgres(base)
    except Exception:
        stack.stop_pid(broker_pid)
        raise
    s = PrivateStack(base, broker_pid, broker_port, pg_pid, pg_port)
    s.template = harness.create_template(s.admin_dsn)
    return s


@dataclass
class Case:
    """One test's settings on the private stack."""

    stack: PrivateStack
    settings: Settings
    dsn: str


def new_case(s: PrivateStack, **changes: object) -> Iterator[Case]:
    name = harness.create_database(s.admin_dsn, s.template)
    dsn = harness.dsn_for(s.admin_dsn, name)
    settings = harness.make_settings(s.bootstrap, dsn, **changes)
    topics.create_all(settings)
    try:
        yield Case(s, settings, dsn)
    finally:
        harness.drop_database(s.admin_dsn, name)


def timed(predicate: Callable[[], object], since: float, timeout: float, what: str) -> float:
    """Seconds from ``since`` until ``predicate`` holds (polled every 0.1 s)."""
    harness.wait_for(predicate, timeout, 0.1, what)
    return time.monotonic() - since


def figure(line: str) -> None:
    """A figure for the report: printed, and kept in .streams/chaos-figures.txt."""
    print(f"[chaos] {line}")
    out = harness.ROOT / ".streams" / "chaos-figures.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} load={os.getloadavg()[0]:.1f} {line}\n")


def health(proc: harness.Proc) -> tuple[int, str]:
    """The worker's /health (HTTP code, status), whatever the code (503 while a
    dependency is down); (0, "unreachable") when it does not answer."""
    try:
        code, body = proc.get("/health", timeout=10)
        return code, str(json.loads(body).get("status"))
    except (OSError, ValueError):
        return 0, "unreachable"
