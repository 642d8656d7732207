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

from streams.db.pool import redacted_url
from streams.demo import buffers as buffers_demo
from streams.demo import configs as configs_demo
from streams.demo import lag as lag_status
from streams.demo import outbox as relay_demo
from streams.demo import webhooks as webhooks_demo
from streams.settings import Settings, read

# Settings for the embedded stack (docs/broker.md #1, #8); the environment wins.
LOCAL: dict[str, Any] = {
    "kafka_session_timeout": 6.0,
    "kafka_heartbeat_interval": 1.0,
    "consumer_fetch_max_wait": 0.1,  # streams/faust_fetch.py
}
# Settings the demo workloads need: the webhook demo's receiver is on 127.0.0.1.
DEMO: dict[str, Any] = {"ssrf_allow": ("127.0.0.1",)}

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
]

# Status providers: each returns a short "name=value" fragment for the status line.
STATUS: list[Callable[[Settings], str]] = [
    relay_demo.status,
    lag_status.status,
    buffers_demo.status,
    configs_demo.status,
    webhooks_demo.status,
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
    )
    return Child(name, popen, log)


def _stop(children: list[Child]) -> None:
    for c in children:
        if c.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                c.popen.send_signal(signal.SIGTERM)
    for c in children:
        try:
            c.popen.wait(15)
        except subprocess.TimeoutExpired:
            c.popen.kill()
            c.popen.wait(5)


def run(*, demo: bool = True, duration: float | None = None) -> int:
    from streams import topics
    from streams.db.migrate import migrate
    from streams.dev import stack
    from streams.settings import reset_settings

    state: Path = read("state_dir")
    owned = not (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("DATABASE_URL"))
    info = stack.start(state, detach=False, env=dict(os.environ))
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
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
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
            f"  worker metrics: http://{settings.web_host}:{settings.web_port}/metrics\n"
            f"  relay metrics: {relay_demo.metrics_url(settings)}\n"
            f"  lag exporter metrics: {lag_status.metrics_url(settings)}",
            flush=True,
        )
        if demo:
            for d in DEMOS:
                threading.Thread(target=d, args=(settings, stop), daemon=True).start()
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
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        print("streams up: stopping", flush=True)
        _stop(children)
        if owned:
            stack.stop(state)
    return 0
