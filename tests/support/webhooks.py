"""Webhook test support: a real aiohttp receiver on 127.0.0.1, and domain rows to seed.

The receiver runs its own event loop in a thread, records every request (path,
headers, body, arrival time) and answers each path from a programmable list of
status codes (the last one repeats), so tests can script "500, 500, then 200".
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from aiohttp import web

from streams.dev.stack import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() on arrival
    status: int  # what the receiver answered

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)
    plans: dict[str, list[int]] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def plan(self, path: str, statuses: Sequence[int]) -> None:
        with self._lock:
            self.plans[path] = list(statuses)

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            plan = self.plans.get(request.path, [200])
            status = plan.pop(0) if len(plan) > 1 else plan[0]
            self.requests.append(
                Received(request.path, dict(request.headers), body, time.time(), status)
            )
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=status, text="ok" if status < 300 else "nope")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def __enter__(self) -> Receiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@dataclass
class Rows:
    """Domain rows for webhook tests, written with plain SQL."""

    dsn: str
    organization_id: int = 0
    project_id: int = 0

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "INSERT INTO organization (slug, name) VALUES (%s, %s) RETURNING id",
                (f"org-{tag}", "Acme"),
            ).fetchone()
            assert row is not None
            self.organization_id = int(row[0])
            row = conn.execute(
                "INSERT INTO project (organization_id, slug, name) VALUES (%s, %s, %s) "
                "RETURNING id",
                (self.organization_id, f"proj-{tag}", "Backend"),
            ).fetchone()
            assert row is not None
            self.project_id = int(row[0])

    def _one(self, sql: str, params: Sequence[Any]) -> Any:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(sql, params).fetchone()
            assert row is not None
            return row[0] if len(row) == 1 else row

    def app(self, url: str, events: Sequence[str], *, secret: str = "", status: int = 0) -> int:
        slug = f"app-{uuid.uuid4().hex[:8]}"
        return int(
            self._one(
                "INSERT INTO sentry_app (slug, name, webhook_url, events, client_secret, status) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (slug, slug, url, list(events), secret or f"secret-{slug}", status),
            )
        )

    def install(self, app_id: int, *, status: int = 0, org: int | None = None) -> tuple[int, str]:
        iid, iuuid = self._one(
            "INSERT INTO sentry_app_installation (sentry_app_id, organization_id, status) "
            "VALUES (%s, %s, %s) RETURNING id, uuid",
            (app_id, org or self.organization_id, status),
        )
        return int(iid), str(iuuid)

    def hook(
        self,
        url: str,
        events: Sequence[str],
        *,
        secret: str = "",
        version: int = 0,
        status: int = 0,
        project: int | None = None,
    ) -> int:
        return int(
            self._one(
                "INSERT INTO service_hook (project_id, url, events, secret, version, status) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    project or self.project_id,
                    url,
                    list(events),
                    secret or f"hook-{uuid.uuid4().hex[:8]}",
                    version,
                    status,
                ),
            )
        )

    def user(self, username: str = "jane") -> int:
        name = f"{username}-{uuid.uuid4().hex[:6]}"
        return int(self._one("INSERT INTO auth_user (username) VALUES (%s) RETURNING id", (name,)))

    def secret_of_app(self, app_id: int) -> str:
        return str(self._one("SELECT client_secret FROM sentry_app WHERE id = %s", (app_id,)))

    def secret_of_hook(self, hook_id: int) -> str:
        return str(self._one("SELECT secret FROM service_hook WHERE id = %s", (hook_id,)))

    def issue(self, title: str = "ZeroDivisionError") -> int:
        return int(
            self._one(
                "INSERT INTO issue_group (project_id, title, culprit) VALUES (%s, %s, %s) "
                "RETURNING id",
                (self.project_id, title, "app.views.divide"),
            )
        )

    def error(self, group_id: int | None = None, message: str = "division by zero") -> int:
        return int(
            self._one(
                "INSERT INTO error_event (event_id, project_id, group_id, message, platform, data) "
                "VALUES (%s, %s, %s, %s, 'python', %s) RETURNING id",
                (
                    uuid.uuid4(),
                    self.project_id,
                    group_id,
                    message,
                    json.dumps({"tags": [["level", "error"]]}),
                ),
            )
        )

    def change(
        self, sender: str, instance_id: int, action: str = "created", actor_id: int | None = None
    ) -> dict[str, Any]:
        """A ``resource-changes`` value for this organization and project."""
        return {
            "action": action,
            "sender": sender,
            "instance_id": instance_id,
            "organization_id": self.organization_id,
            "project_id": self.project_id,
            "occurred_at": int(time.time() * 1000),
            "data": None,
            "actor_id": actor_id,
        }
