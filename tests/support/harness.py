"""Test harness: the embedded stack once per session, isolation per test, worker processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from streams.dev import stack
from streams.settings import Secret, Settings

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    bootstrap: str
    admin_dsn: str  # a DSN whose database can CREATE DATABASE
    started: stack.StackInfo | None = None
    state_dir: Path | None = None


def start_stack() -> Stack:
    env_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    env_db = os.environ.get("DATABASE_URL")
    state = ROOT / ".streams" / f"test-{os.getpid()}"
    info = stack.start(state, detach=False, env=dict(os.environ))
    assert info.kafka_bootstrap_servers and info.database_url
    return Stack(
        info.kafka_bootstrap_servers,
        info.database_url,
        None if (env_kafka and env_db) else info,
        state,
    )


def stop_stack(s: Stack) -> None:
    if s.state_dir is not None:
        stack.stop(s.state_dir)
        import shutil

        shutil.rmtree(s.state_dir, ignore_errors=True)


def dsn_for(admin_dsn: str, database: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(admin_dsn)
    info["dbname"] = database
    return psycopg.conninfo.make_conninfo("", **info)


def create_template(admin_dsn: str) -> str:
    from streams.db.migrate import migrate

    name = f"streams_tpl_{os.getpid()}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    migrate(dsn_for(admin_dsn, name))
    return name


def create_database(admin_dsn: str, template: str) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    return name


def drop_database(admin_dsn: str, name: str) -> None:
    with contextlib.suppress(psycopg.Error), psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def isolated_settings(s: Stack, template: str, **changes: Any) -> Iterator[Settings]:
    """Settings with their own database, topic prefix and consumer group, topics created;
    for module-scoped fixtures (the function-scoped ``settings`` fixture does the same)."""
    from streams import topics

    name = create_database(s.admin_dsn, template)
    try:
        settings = make_settings(s.bootstrap, dsn_for(s.admin_dsn, name), **changes)
        topics.create_all(settings)
        yield settings
    finally:
        drop_database(s.admin_dsn, name)


@contextlib.contextmanager
def probe_settings(s: Stack, template: str) -> Iterator[Settings]:
    """``isolated_settings`` of a region worker that runs only the probe agent
    (``tests/support/probe_agent.py``)."""
    from streams.silo import SiloMode

    with isolated_settings(
        s,
        template,
        agent_modules=("tests.support.probe_agent",),
        silo_mode=SiloMode.REGION,
        agents=("none",),
    ) as settings:
        yield settings


def make_settings(bootstrap: str, dsn: str, **changes: Any) -> Settings:
    tag = uuid.uuid4().hex[:8]
    base = Settings(
        kafka_bootstrap_servers=bootstrap,
        database_url=Secret(dsn),
        topic_prefix=f"t{tag}.",
        app_id=f"streams-t{tag}",
        # Short timeouts (docs/broker.md #1): Tansu's group join waits session.timeout / 2.
        kafka_session_timeout=6.0,
        kafka_heartbeat_interval=1.0,
        web_port=stack.free_port(),
        state_dir=ROOT / ".streams" / f"test-{os.getpid()}" / tag,
    )
    return base.with_(**changes)


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a subprocess needs to see ``settings`` (then ``extra`` on top)."""
    return {**os.environ, **settings.to_env(), "PYTHONPATH": str(ROOT), **extra}


@dataclass
class Proc:
    """A streams process started by a test, stopped by PID."""

    popen: subprocess.Popen[bytes]
    log: Path
    web_port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        assert self.web_port is not None
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.web_port}{path}", timeout=timeout
            ) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def health(self) -> dict[str, Any]:
        status, body = self.get("/health")
        data: dict[str, Any] = json.loads(body) if status == 200 else {}
        return data


def spawn(args: list[str], env: dict[str, str], log: Path) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "streams", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )
    return Proc(popen, log)


def wait_for(predicate: Any, timeout: float, interval: float = 0.1, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: {last!r}")


def start_worker(
    settings: Settings,
    log: Path,
    *,
    ready: bool = True,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    **extra_env: str,
) -> Proc:
    extra_env = {**(env or {}), **extra_env}  # env: a prepared dict, typed apart from the flags
    proc = spawn(["worker", "--loglevel", "warning"], env_for(settings, **extra_env), log)
    proc.web_port = settings.web_port
    if ready:

        def is_ready() -> bool:
            if not proc.alive():
                raise AssertionError(f"worker exited:\n{proc.output()[-4000:]}")
            with contextlib.suppress(OSError, ValueError):
                return proc.health().get("status") == "ready"
            return False

        try:
            wait_for(is_ready, timeout, 0.25, "worker ready")
        except BaseException:
            proc.stop()  # not handed to the caller: it would outlive the test
            raise
    return proc


def iter_lines(path: Path) -> Iterator[str]:
    yield from path.read_text().splitlines()
