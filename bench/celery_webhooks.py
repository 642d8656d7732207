"""The user's alternative for bench_webhooks: the same flow as Celery tasks on Redis.

What the Celery system this project replaces did per resource change, on the same
PostgreSQL tables the benchmark seeds: a ``process_resource_change`` task reads the
instance (issue + project) and the organization's installed sentry-app installations,
builds each payload with streams' own payload helpers, and queues one
``send_resource_change_webhook`` task per subscribed installation; that task reads its
installation's URL and secret, signs the body (``streams.webhooks.signing``, the same
headers as our worker), POSTs it with a keep-alive ``requests`` session and appends a
row to ``webhook_delivery_log``, as our worker does.

The worker runs as ``celery worker --pool=prefork --concurrency=2`` (Redis broker, no
result backend: the old tasks did not collect results) in a subprocess, next to a
private ``redis-server`` on a free loopback port without persistence; both are stopped
by PID. Bench code only: streams does not ship or import it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from streams.webhooks import payloads, resources, signing

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
BROKER_ENV = "BENCH_CELERY_BROKER"
DATABASE_ENV = "BENCH_CELERY_DATABASE_URL"
CONCURRENCY = 2
PROCESS_TASK = "bench.celery_webhooks.process_resource_change"
SEND_TASK = "bench.celery_webhooks.send_resource_change_webhook"
HTTP_TIMEOUT = 10.0

# The columns streams.webhooks.resources serializes an issue from (serialize_issue).
_ISSUE = (
    "SELECT p.id, p.organization_id, p.slug, p.name, g.id, g.title, g.culprit, g.level, "
    "g.status, g.times_seen, g.num_comments, g.first_seen, g.last_seen "
    "FROM issue_group g JOIN project p ON p.id = g.project_id WHERE g.id = %s"
)
_INSTALLATIONS = (
    "SELECT i.id, i.uuid, a.events FROM sentry_app_installation i "
    "JOIN sentry_app a ON a.id = i.sentry_app_id "
    "WHERE i.organization_id = %s AND i.status = 0 AND a.status = 0 ORDER BY i.id"
)
_TARGET = (
    "SELECT a.webhook_url, a.client_secret FROM sentry_app_installation i "
    "JOIN sentry_app a ON a.id = i.sentry_app_id "
    "WHERE i.id = %s AND i.status = 0 AND a.status = 0"
)
_LOG = (
    "INSERT INTO webhook_delivery_log (target_kind, target_id, delivery_id, attempt, "
    "event_type, sent_at, status_code, duration_ms, error) "
    "VALUES ('sentry_app', %s, %s, %s, %s, now(), %s, %s, %s)"
)


def missing() -> str | None:
    """Why the Celery baseline cannot run here (None when it can)."""
    if shutil.which("redis-server") is None:
        return "redis-server not found (make bench-tools installs it)"
    for module in ("celery", "redis", "requests"):
        if importlib.util.find_spec(module) is None:
            return f"python package {module!r} not installed (make bench-tools: the bench extras)"
    return None


def make_app(broker: str) -> Any:
    """A Celery app on ``broker``: JSON tasks, no result backend (results were ignored)."""
    from celery import Celery

    app = Celery("bench_webhooks", broker=broker)
    app.conf.update(
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


# Per worker process (prefork children each open their own after the fork).
_state: dict[str, Any] = {}


def _db() -> psycopg.Connection[Any]:
    conn = _state.get("db")
    if conn is None or conn.closed or _state.get("pid") != os.getpid():
        conn = _state["db"] = psycopg.connect(os.environ[DATABASE_ENV], autocommit=True)
        _state["pid"] = os.getpid()
    return conn


def _http() -> Any:
    if _state.get("http_pid") != os.getpid():
        import requests

        _state["http"], _state["http_pid"] = requests.Session(), os.getpid()
    return _state["http"]


def process_resource_change(
    task: Any, action: str, sender: str, instance_id: int, actor_id: int | None = None
) -> None:
    """The instance and its subscribed installations; one send task per installation."""
    resource = resources.resource_for(sender)
    if resource is not resources.ISSUE:
        log.error("celery.resource_change.unsupported", extra={"sender": sender})
        return
    conn = _db()
    row = conn.execute(_ISSUE, (instance_id,)).fetchone()
    if row is None:
        # Published before its transaction committed: look again later, as the old task did.
        raise task.retry(countdown=1, max_retries=5)
    project = resources.Project(int(row[0]), int(row[1]), row[2], row[3])
    data = resources.serialize_issue(row[4:], project)
    actor = payloads.actor(actor_id, {})
    for iid, install_uuid, events in conn.execute(_INSTALLATIONS, (project.organization_id,)):
        if not resources.subscribed(events, resource.name, action):
            continue
        body = payloads.sentry_app(
            action=action,
            installation_uuid=str(install_uuid),
            resource=resource.name,
            data=data,
            actor=actor,
        )
        send_webhook.delay(
            installation_id=int(iid),
            event=f"{resource.name}.{action}",
            resource=resource.name,
            payload=payloads.dumps(body),
        )


def send_resource_change_webhook(
    task: Any, installation_id: int, event: str, resource: str, payload: str
) -> None:
    """One signed POST to an installation's webhook URL, logged in PostgreSQL."""
    conn = _db()
    target = conn.execute(_TARGET, (installation_id,)).fetchone()
    if target is None:
        log.info("celery.webhook.target_gone", extra={"installation": installation_id})
        return
    url, secret = target
    body = payload.encode()
    delivery_id = str(uuid.uuid4())
    headers = signing.headers(
        kind="sentry_app", body=body, secret=secret, request_id=delivery_id, resource=resource
    )
    started = time.perf_counter()
    status: int | None = None
    error: str | None = None
    try:
        resp = _http().post(url, data=body, headers=headers, timeout=HTTP_TIMEOUT)
        status = int(resp.status_code)
    except Exception as exc:  # logged below and retried: never dropped silently
        error = repr(exc)
    duration = (time.perf_counter() - started) * 1000
    attempt = int(task.request.retries) + 1
    conn.execute(_LOG, (installation_id, delivery_id, attempt, event, status, duration, error))
    if error is not None or status is None or status >= 500:
        log.warning(
            "celery.webhook.failed",
            extra={"installation": installation_id, "status": status, "error": error},
        )
        raise task.retry(countdown=5, max_retries=3)


# The Celery worker imports this module for its tasks; without Celery installed the
# benchmark still imports it (``missing()`` then says why the alternative is skipped).
if importlib.util.find_spec("celery") is not None:
    app = make_app(os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0"))
    # Registered by call rather than as decorators: celery is untyped (mypy strict).
    process_change = app.task(name=PROCESS_TASK, bind=True)(process_resource_change)
    send_webhook = app.task(name=SEND_TASK, bind=True)(send_resource_change_webhook)


@dataclass
class CeleryStack:
    """A running Redis + Celery worker, and a client app to queue changes with."""

    client: Any
    redis: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    children: list[int] = field(default_factory=list)

    def send(self, change: dict[str, Any]) -> None:
        """Queue one resource change, as the old system's model signal did."""
        self.client.send_task(
            PROCESS_TASK,
            kwargs={
                "action": change["action"],
                "sender": change["sender"],
                "instance_id": change["instance_id"],
                "actor_id": change.get("actor_id"),
            },
        )

    def pids(self) -> dict[str, int]:
        """Every process of the alternative: the worker, its prefork children, Redis."""
        out = {"celery-main": self.worker.pid, "redis": self.redis.pid}
        out.update({f"celery-child{n}": pid for n, pid in enumerate(self.children)})
        return out


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def _with_parent(args: list[str]) -> list[str]:
    """``args`` run to receive SIGTERM when the benchmark dies (a timeout's kill leaves
    no Redis or Celery behind); setpriv (util-linux) execs it, so the PID is the same."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *args] if setpriv else args


def _start_redis(port: int, state_dir: Path) -> subprocess.Popen[bytes]:
    import redis

    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "no", "--dir", str(state_dir), "--loglevel", "warning"]
    proc = subprocess.Popen(
        _with_parent(args),
        stdout=(state_dir / "redis.log").open("ab"),
        stderr=subprocess.STDOUT,
    )

    def up() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"redis-server exited; see {state_dir / 'redis.log'}")
        try:
            return bool(redis.Redis(port=port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    _wait(up, 20, "redis-server")
    return proc


def _stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def celery_stack(database_url: str, state_dir: Path, port: int) -> Iterator[CeleryStack]:
    """Redis on ``port`` and a prefork x2 Celery worker, ready; both stopped by PID."""
    import psutil

    state_dir.mkdir(parents=True, exist_ok=True)
    broker = f"redis://127.0.0.1:{port}/0"
    redis_proc = _start_redis(port, state_dir)
    env = {**os.environ, BROKER_ENV: broker, DATABASE_ENV: database_url, "PYTHONPATH": str(ROOT)}
    celery = [sys.executable, "-m", "celery", "-A", "bench.celery_webhooks", "worker"]
    celery += ["--pool=prefork", f"--concurrency={CONCURRENCY}", "--loglevel=warning"]
    worker = subprocess.Popen(
        _with_parent(celery),
        env=env,
        cwd=ROOT,
        stdout=(state_dir / "celery.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    stack = CeleryStack(make_app(broker), redis_proc, worker)
    try:

        def ready() -> bool:
            if worker.poll() is not None:
                raise SystemExit(f"celery worker exited; see {state_dir / 'celery.log'}")
            return bool(stack.client.control.ping(timeout=0.5))

        _wait(ready, 90, "celery worker")
        _wait(
            lambda: len(psutil.Process(worker.pid).children()) >= CONCURRENCY,
            30,
            "prefork children",
        )
        stack.children = [c.pid for c in psutil.Process(worker.pid).children()]
        yield stack
    finally:
        _stop(worker)
        _stop(redis_proc)
