"""``streams up`` demo: weekly reports every 10 s and activity notifications, received by
a local SMTP sink (aiosmtpd on 127.0.0.1).

``SETTINGS`` points the worker at the sink and runs the weekly-report schedule every
10 s (each slot reports the 7 days before it, so each run mails again). The demo seeds
two organizations with members and fresh issues, writes a note on an issue every 15 s
(``record_activity``: a mail to the other participant), and the status line shows what
the sink received.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, cast

from streams.dev.stack import free_port
from streams.settings import Secret, Settings

log = logging.getLogger(__name__)

SINK_PORT = free_port()
# Settings `streams up` gives every component when the demo runs.
SETTINGS: dict[str, Any] = {
    "smtp_url": Secret(f"smtp://127.0.0.1:{SINK_PORT}"),
    "smtp_sender": "streams@demo.local",
    "weekly_reports_schedule": "every 10s",
}
NOTE_EVERY = 15.0

_lock = threading.Lock()
_received = {"weekly_report": 0, "activity": 0, "other": 0}
_last_subject = [""]


class _Sink:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import email

        msg = email.message_from_bytes(envelope.original_content or envelope.content)
        kind = str(msg.get("X-Streams-Kind", "other"))
        with _lock:
            _received[kind if kind in _received else "other"] += 1
            _last_subject[0] = str(msg.get("Subject", ""))
        return "250 OK"


def _seed(settings: Settings) -> tuple[int, int]:
    """Two organizations, each with two members and an issue seen now; returns an issue
    of the first and the member who writes notes on it."""
    from streams.db.pool import connect

    with connect(settings) as conn:
        issue = actor = 0
        for n in (1, 2):
            org = conn.execute(
                "INSERT INTO organization (slug, name) VALUES (%s, %s) ON CONFLICT (slug)"
                " DO UPDATE SET name = EXCLUDED.name RETURNING id",
                (f"demo-reports-{n}", f"Reports demo {n}"),
            ).fetchone()
            assert org is not None
            project = conn.execute(
                "INSERT INTO project (organization_id, slug) VALUES (%s, 'shop')"
                " ON CONFLICT (organization_id, slug) DO UPDATE SET slug = EXCLUDED.slug"
                " RETURNING id",
                (org[0],),
            ).fetchone()
            assert project is not None
            # One issue per project, seen now: the organization is active this week.
            row = (
                conn.execute(
                    "UPDATE issue_group SET last_seen = now() WHERE id ="
                    " (SELECT min(id) FROM issue_group WHERE project_id = %s) RETURNING id",
                    (project[0],),
                ).fetchone()
                or conn.execute(
                    "INSERT INTO issue_group (project_id, title) VALUES"
                    " (%s, 'ZeroDivisionError: cart total') RETURNING id",
                    (project[0],),
                ).fetchone()
            )
            assert row is not None
            users: list[int] = []
            for who in ("ana", "bo"):
                user = conn.execute(
                    "INSERT INTO auth_user (username, email) VALUES (%s, %s) ON CONFLICT"
                    " (username) DO UPDATE SET email = EXCLUDED.email RETURNING id",
                    (f"{who}{n}", f"{who}{n}@demo.local"),
                ).fetchone()
                assert user is not None
                users.append(cast(int, user[0]))
                conn.execute(
                    "INSERT INTO organization_member (organization_id, user_id) VALUES (%s, %s)"
                    " ON CONFLICT DO NOTHING",
                    (org[0], user[0]),
                )
                conn.execute(
                    "INSERT INTO group_subscription (group_id, user_id) VALUES (%s, %s)"
                    " ON CONFLICT DO NOTHING",
                    (row[0], user[0]),
                )
            if n == 1:
                issue, actor = cast(int, row[0]), users[0]
        conn.commit()
    return issue, actor


def run_demo(settings: Settings, stop: threading.Event) -> None:
    """Start the SMTP sink, seed, then write a note every ``NOTE_EVERY`` seconds."""
    from aiosmtpd.controller import Controller

    from streams.db.pool import connect
    from streams.notifications.activity import record_activity

    controller = Controller(_Sink(), hostname="127.0.0.1", port=SINK_PORT)
    controller.start()
    try:
        issue, actor = _seed(settings)
        n = 0
        while not stop.wait(NOTE_EVERY):
            n += 1
            with connect(settings) as conn:
                record_activity(
                    conn, group_id=issue, type="note", user_id=actor, data={"text": f"note {n}"}
                )
                conn.commit()
    except Exception as exc:  # the demo must not take `streams up` down
        log.warning("reports.demo.failed", extra={"error": repr(exc)})
    finally:
        stop.wait()
        controller.stop()


SUBJECT_WIDTH = 64  # characters of the last subject on the status line


def status(settings: Settings) -> str:
    """``mail=<reports>r/<notifications>n`` and the last subject received."""
    with _lock:
        got = dict(_received)
        subject = _last_subject[0]
    if subject and len(subject) > SUBJECT_WIDTH:  # cut visibly, not mid-date
        subject = subject[: SUBJECT_WIDTH - 3] + "..."
    last = f" last={subject!r}" if subject else ""
    return f"mail={got['weekly_report']}r/{got['activity']}n{last}"
