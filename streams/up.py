"""``streams up`` / ``make run``: the whole pipeline in the foreground.

Starts the embedded stack (unless the environment names a broker / database),
migrates, creates the topics, starts every long-running component as a child
process, runs a small demo workload, and prints a status line every few seconds.
Ctrl-C (or ``--duration``) stops everything, by PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams import client
from streams.db.pool import redacted_url
from streams.demo import buffers as buffers_demo
from streams.demo import configs as configs_demo
from streams.demo import lag as lag_status
from streams.demo import outbox as relay_demo
from streams.demo import reports as reports_demo
from streams.demo import webhooks as webhooks_demo
from streams.dev import stack
from streams.settings import Settings, read

# Settings for the embedded stack (docs/broker.md #1, #8); the environment wins.
LOCAL: dict[str, Any] = {
    "kafka_session_timeout": 6.0,
    "kafka_heartbeat_interval": 1.0,
    "consumer_fetch_max_wait": 0.1,  # streams/faust_fetch.py
}
# Settings the demo workloads need: the webhook demo's receiver is on 127.0.0.1.
DEMO: dict[str, Any] = {"ssrf_allow": ("127.0.0.1",), **reports_demo.SETTINGS}

# Long-running components: (name, argv after `python -m streams`). Each capability
# that adds a process appends itself here.
COMPONENTS: list[tuple[str, list[str]]] = [
    ("worker", ["worker", "--loglevel", "warning"]),
    ("relay", ["relay"]),
    ("lag-exporter", ["lag-exporter"]),
]

# Demo workloads: called once in a thread with (settings, stop event).
DEMOS: list[Callable[[Settings, threading.Event], None]] = [
    relay_demo.write_outbox_rows,
    buffers_demo.run_demo,
    configs_demo.run_demo,
    webhooks_demo.run_demo,
    reports_demo.run_demo,
]

# Status providers: each returns a short "name=value" fragment for the status line.
STATUS: list[Callable[[Settings], str]] = [
    relay_demo.status,
    lag_status.status,
    buffers_demo.status,
    configs_demo.status,
    webhooks_demo.status,
    reports_demo.status,
]


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


def _spawn(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Child:
    log = logs / f"{name}.log"
    out = log.open("ab")
    popen = subprocess.Popen(
        [sys.executable, "-m", "streams", *argv],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        # Its own session: the terminal's Ctrl-C reaches `up` alone, which stops the
        # components in order (SIGTERM, then SIGKILL after STOP_GRACE).
        start_new_session=True,
    )
    return Child(name, popen, log)


# Seconds a component gets to stop after SIGTERM before SIGKILL; the whole Ctrl-C stays
# under 5 s (the stack's own stop takes well under a second).
STOP_GRACE = 3.0


def _stop(children: list[Child], grace: float = STOP_GRACE) -> list[str]:
    """SIGTERM every component at once, SIGKILL what is left after ``grace`` seconds;
    returns the names of those that had to be killed."""
    for c in children:
        if c.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                c.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    killed = []
    for c in children:
        try:
            c.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed.append(c.name)
            c.popen.kill()
            c.popen.wait(5)
    return killed


def _close_demos(demos: list[threading.Thread]) -> None:
    """Let the demo workloads see ``stop``, then send what their client still holds while
    the broker is up: a producer left holding messages for a broker that is gone delayed
    the exit by seconds."""
    deadline = time.monotonic() + 0.5
    for t in demos:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    try:
        client.close(timeout=0.5)
    except Exception as exc:  # the stop goes on; what was not sent is named
        _say(f"streams up: demo messages not all sent: {exc}")


def _stop_stack(state: Path, started: stack.StackInfo) -> None:
    """Stop the broker and PostgreSQL only if this run started them (a stack from
    `streams dev start`, or named by the environment, keeps running)."""
    if started.broker_pid:
        # The memory-only broker lingers on SIGTERM while clients (the demo threads'
        # producers) stay connected; it holds nothing worth waiting for.
        stack.stop_pid(started.broker_pid, signal.SIGTERM, timeout=0.5)
    if started.postgres_pid:
        # SIGINT is PostgreSQL's fast shutdown; SIGQUIT (immediate) if that lingers.
        stack.stop_pid(started.postgres_pid, signal.SIGINT, timeout=1.5)
    left = stack.read_stack(state)
    if left.broker_pid == started.broker_pid:
        left.broker_pid = left.kafka_bootstrap_servers = None
    if left.postgres_pid == started.postgres_pid:
        left.postgres_pid = left.database_url = None
    if left.broker_pid or left.postgres_pid:
        stack.write_stack(state, left)
    else:
        with contextlib.suppress(FileNotFoundError):
            stack.stack_file(state).unlink()


def _started_here(before: stack.StackInfo, after: stack.StackInfo) -> stack.StackInfo:
    """The part of the stack this run started: PIDs in ``after`` that ``before`` lacked."""

    def new(pid: int | None, old: int | None) -> int | None:
        return pid if pid and not (old and old == pid and stack.pid_alive(old)) else None

    return stack.StackInfo(
        broker_pid=new(after.broker_pid, before.broker_pid),
        postgres_pid=new(after.postgres_pid, before.postgres_pid),
    )


def _say(text: str) -> None:
    """Print, unless the terminal is gone (closed window): the stop must go on anyway."""
    with contextlib.suppress(OSError):
        print(text, flush=True)


def _watch(
    children: list[Child], settings: Settings, stop: threading.Event, duration: float | None
) -> int:
    """Print a status line every 5 s until ``stop``, ``duration`` or a component dies."""
    started = time.monotonic()
    while not stop.is_set():
        if duration is not None and time.monotonic() - started >= duration:
            break
        stop.wait(5.0)
        dead = [c for c in children if c.popen.poll() is not None]
        if dead:
            for c in dead:
                print(f"!! {c.name} exited with {c.popen.returncode}; see {c.log}", flush=True)
            return 1
        parts = []
        for status in STATUS:
            with contextlib.suppress(Exception):
                parts.append(status(settings))
        print(f"[{time.strftime('%H:%M:%S')}] " + "  ".join(parts), flush=True)
    return 0


def run(*, demo: bool = True, duration: float | None = None) -> int:
    from streams import topics
    from streams.db.migrate import migrate
    from streams.settings import reset_settings

    state: Path = read("state_dir")
    before = stack.read_stack(state)
    # Detached (own session): Ctrl-C must not stop the broker and PostgreSQL before the
    # components that use them; `up` stops them last, and only if it started them.
    info = stack.start(state, detach=True, env=dict(os.environ))
    owned = _started_here(before, info)
    addresses = {
        "KAFKA_BOOTSTRAP_SERVERS": info.kafka_bootstrap_servers or "",
        "DATABASE_URL": info.database_url or "",
    }
    settings = Settings.from_env({**os.environ, **addresses}).unless_set(
        os.environ, **LOCAL, **(DEMO if demo else {})
    )
    env = {**os.environ, **settings.to_env()}  # the children see exactly these settings
    reset_settings(settings)
    children: list[Child] = []
    demos: list[threading.Thread] = []
    stop = threading.Event()
    # The components run in their own sessions: a closed terminal (SIGHUP) or a SIGTERM
    # must still reach them, through `up`'s orderly stop.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    try:
        print(
            f"streams up: broker {settings.kafka_bootstrap_servers}, database "
            f"{redacted_url(settings.database_url.get())}",
            flush=True,
        )
        for m in migrate(settings.database_url.get()):
            print(f"  migrated {m.version:04d}_{m.name}", flush=True)
        created = topics.create_all(settings)
        print(f"  topics ready ({len(created)} created)", flush=True)
        logs = state / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name, argv in COMPONENTS:
            children.append(_spawn(name, argv, env, logs))
            print(
                f"  started {name} pid={children[-1].popen.pid} (log {logs / (name + '.log')})",
                flush=True,
            )
        print(
            f"  web console: http://{settings.web_host}:{settings.web_port}/console\n"
            f"  worker metrics: http://{settings.web_host}:{settings.web_port}/metrics\n"
            f"  relay metrics: {relay_demo.metrics_url(settings)}\n"
            f"  lag exporter metrics: {lag_status.metrics_url(settings)}",
            flush=True,
        )
        if demo:
            for d in DEMOS:
                demos.append(threading.Thread(target=d, args=(settings, stop), daemon=True))
                demos[-1].start()
        return _watch(children, settings, stop, duration)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how `up` is meant to end
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: the stop is bounded
        stop.set()
        began = time.monotonic()
        _say("\nstreams up: stopping")
        _close_demos(demos)
        killed = _stop(children)
        _stop_stack(state, owned)
        note = f" (killed after {STOP_GRACE:g} s: {', '.join(killed)})" if killed else ""
        _say(f"streams up: stopped in {time.monotonic() - began:.1f} s{note}")
