"""A real worker: it listens on loopback only, and /health says not-ready (with the cause,
also logged) while its database refuses connections, then ready again."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psutil
import psycopg

from streams.settings import Settings
from tests.support import harness


def _listening(pid: int) -> set[tuple[str, int]]:
    conns = psutil.Process(pid).net_connections(kind="inet")
    return {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}


def _allow_connections(settings: Settings, admin_dsn: str, allow: bool) -> None:
    name = psycopg.conninfo.conninfo_to_dict(settings.database_url.get())["dbname"]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:  # and drop the worker's pooled connections: the database is "gone"
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


def test_worker_binds_loopback_and_reports_lost_database(
    settings: Settings, worker: Callable[..., harness.Proc], real_stack: harness.Stack
) -> None:
    proc = worker(STREAMS_AGENTS="resource_changes")
    listening = _listening(proc.pid)
    assert ("127.0.0.1", settings.web_port) in listening
    assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening

    _allow_connections(settings, real_stack.admin_dsn, False)
    try:

        def not_ready() -> dict[str, Any] | None:
            status, body = proc.get("/health", timeout=15)
            return json.loads(body) if status == 503 else None

        health = harness.wait_for(not_ready, 30, 0.5, "health 503")
        assert health["status"] == "not_ready"
        assert "not currently accepting connections" in health["database"], health
        harness.wait_for(
            lambda: "worker.database.unreachable" in proc.output(), 10, 0.2, "cause logged"
        )
    finally:
        _allow_connections(settings, real_stack.admin_dsn, True)
    harness.wait_for(lambda: proc.health().get("status") == "ready", 30, 0.5, "ready again")
