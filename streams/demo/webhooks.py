"""``streams up`` demo: a local receiver and one resource change per second.

The demo seeds an organization with a sentry app installed (subscribed to
``issue.created``) and a service hook (``event.created``), both pointing at a small
HTTP receiver on 127.0.0.1 that checks every signature. Each second it commits a
new issue and publishes its change (and every fifth second an error event). The
status line shows what the receiver got.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from typing import Any, cast

from streams.settings import Settings
from streams.webhooks import signing

APP_SECRET = "demo-app-secret"
HOOK_SECRET = "demo-hook-secret"

_lock = threading.Lock()
_counts = {"ok": 0, "bad_signature": 0}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        app_sig = self.headers.get(signing.H_SIGNATURE)
        ok = (
            signing.verify(body, APP_SECRET, app_sig)
            if app_sig
            else signing.verify(body, HOOK_SECRET, self.headers.get(signing.H_HOOK_SIGNATURE, ""))
        )
        with _lock:
            _counts["ok" if ok else "bad_signature"] += 1
        self.send_response(200 if ok else 401)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


def _id(row: tuple[object, ...] | None) -> int:
    assert row is not None
    return int(cast(int, row[0]))


def _seed(settings: Settings, url: str) -> tuple[int, int]:
    """Idempotent demo rows; returns (organization id, project id)."""
    from streams.db.pool import connect

    with connect(settings, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO organization (slug, name) VALUES ('demo-webhooks', 'Demo') "
            "ON CONFLICT (slug) DO NOTHING"
        )
        org = _id(
            conn.execute("SELECT id FROM organization WHERE slug = 'demo-webhooks'").fetchone()
        )
        conn.execute(
            "INSERT INTO project (organization_id, slug, name) VALUES (%s, 'web', 'Web') "
            "ON CONFLICT (organization_id, slug) DO NOTHING",
            (org,),
        )
        project = _id(
            conn.execute(
                "SELECT id FROM project WHERE organization_id = %s AND slug = 'web'", (org,)
            ).fetchone()
        )
        app = conn.execute(
            "INSERT INTO sentry_app (slug, name, webhook_url, events, client_secret) "
            "VALUES ('demo-app', 'Demo app', %s, '{issue.created}', %s) "
            "ON CONFLICT (slug) DO UPDATE SET webhook_url = EXCLUDED.webhook_url RETURNING id",
            (f"{url}/sentry-app", APP_SECRET),
        ).fetchone()
        conn.execute(
            "INSERT INTO sentry_app_installation (sentry_app_id, organization_id) "
            "VALUES (%s, %s) ON CONFLICT (sentry_app_id, organization_id) DO NOTHING",
            (_id(app), org),
        )
        conn.execute("DELETE FROM service_hook WHERE project_id = %s", (project,))
        conn.execute(
            "INSERT INTO service_hook (project_id, url, events, secret) "
            "VALUES (%s, %s, '{event.created}', %s)",
            (project, f"{url}/service-hook", HOOK_SECRET),
        )
        return org, project


def _change(sender: str, instance_id: int, org: int, project: int) -> dict[str, Any]:
    return {
        "action": "created",
        "sender": sender,
        "instance_id": instance_id,
        "organization_id": org,
        "project_id": project,
        "occurred_at": int(time.time() * 1000),
        "data": None,
        "actor_id": None,
    }


def run_demo(settings: Settings, stop: threading.Event) -> None:
    """Receiver + one change per second until ``stop`` is set."""
    from streams.db.pool import connect
    from streams.publisher import Publisher

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    org, project = _seed(settings, url)
    publisher = Publisher(settings)
    n = 0
    try:
        with connect(settings, autocommit=True) as conn:
            while not stop.wait(1.0):
                n += 1
                issue = _id(
                    conn.execute(
                        "INSERT INTO issue_group (project_id, title) VALUES (%s, %s) RETURNING id",
                        (project, f"Demo issue {n}"),
                    ).fetchone()
                )
                changes = [_change("Group", issue, org, project)]
                if n % 5 == 0:
                    event = conn.execute(
                        "INSERT INTO error_event (event_id, project_id, group_id, message, data) "
                        "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                        (uuid.uuid4(), project, issue, f"Demo error {n}", json.dumps({})),
                    ).fetchone()
                    changes.append(_change("Event", _id(event), org, project))
                for value in changes:
                    publisher.send("resource-changes", value, key=org)
    finally:
        publisher.close()
        server.shutdown()


def status(settings: Settings) -> str:
    with _lock:
        return f"webhooks=received:{_counts['ok']} bad_sig:{_counts['bad_signature']}"
