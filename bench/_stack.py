"""Shared by the benchmarks: the embedded stack (or the environment's), settings for a run."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streams.dev import stack
from streams.settings import Secret, Settings

ROOT = Path(__file__).resolve().parents[1]

# Tansu's group join waits session.timeout / 2 (docs/broker.md #1): benchmark workers use short
# group timeouts unless a benchmark says otherwise.
EMBEDDED_BROKER: dict[str, Any] = {"kafka_session_timeout": 6.0, "kafka_heartbeat_interval": 1.0}


def worker_env(settings: Settings, **changes: Any) -> dict[str, str]:
    """The environment of a worker process that sees ``settings`` with ``changes``."""
    tuned = settings.with_(**{**EMBEDDED_BROKER, **changes})
    return {**os.environ, **tuned.to_env(), "PYTHONPATH": str(ROOT)}


@contextlib.contextmanager
def bench_stack(name: str) -> Iterator[Settings]:
    """Settings on a fresh embedded broker + PostgreSQL (stopped afterwards), or on
    KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL when set. A unique topic prefix per run."""
    state = ROOT / ".streams" / f"bench-{name}-{os.getpid()}"
    info = stack.start(state, detach=False, env=dict(os.environ))
    try:
        assert info.kafka_bootstrap_servers and info.database_url
        tag = uuid.uuid4().hex[:6]
        yield Settings(
            kafka_bootstrap_servers=info.kafka_bootstrap_servers,
            database_url=Secret(info.database_url),
            topic_prefix=f"bench{tag}.",
            app_id=f"bench-{name}-{tag}",
            kafka_session_timeout=6.0,
            kafka_heartbeat_interval=1.0,
            web_port=stack.free_port(),
            state_dir=state,
        )
    finally:
        stack.stop(state)
