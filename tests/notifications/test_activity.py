"""Activity notifications end to end: ``record_activity`` in a transaction -> job after
the commit -> one mail per participant but the actor (real broker, PostgreSQL, worker,
relay and an aiosmtpd server on loopback)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from streams import client
from streams.notifications.activity import record_activity
from streams.publisher import Publisher
from streams.settings import Settings
from tests.relay.support import start_relay
from tests.reports.support import metric, smtp_sink
from tests.support import harness


def _issue_with_participants(conn: psycopg.Connection[Any]) -> tuple[int, dict[str, int]]:
    org = conn.execute("INSERT INTO organization (slug) VALUES ('acme') RETURNING id").fetchone()
    assert org is not None
    project = conn.execute(
        "INSERT INTO project (organization_id, slug) VALUES (%s, 'web') RETURNING id", (org[0],)
    ).fetchone()
    assert project is not None
    issue = conn.execute(
        "INSERT INTO issue_group (project_id, title) VALUES (%s, 'TypeError: x is None')"
        " RETURNING id",
        (project[0],),
    ).fetchone()
    assert issue is not None
    users: dict[str, int] = {}
    for name in ("actor", "watcher", "quiet"):
        row = conn.execute(
            "INSERT INTO auth_user (username, email) VALUES (%s, %s) RETURNING id",
            (name, f"{name}@example.com"),
        ).fetchone()
        assert row is not None
        users[name] = row[0]
        conn.execute(
            "INSERT INTO group_subscription (group_id, user_id) VALUES (%s, %s)",
            (issue[0], row[0]),
        )
    conn.execute(
        "INSERT INTO user_mail_opt_out (user_id, kind) VALUES (%s, 'activity')",
        (users["quiet"],),
    )
    return issue[0], users


def test_activity_mails_each_participant_but_the_actor_once(
    settings: Settings, publisher: Publisher, processes: list[harness.Proc], tmp_path: Path
) -> None:
    dsn = settings.database_url.get()
    with psycopg.connect(dsn) as conn:
        issue, users = _issue_with_participants(conn)
    client.set_publisher(publisher)
    try:
        with smtp_sink() as sink:
            start_relay(settings, processes, tmp_path / "relay.log")
            worker = harness.start_worker(
                settings, tmp_path / "worker.log", STREAMS_AGENTS="jobs", STREAMS_SMTP_URL=sink.url
            )
            processes.append(worker)
            # A rolled-back activity notifies nobody.
            with (
                psycopg.connect(dsn) as conn,
                pytest.raises(RuntimeError),
                conn.transaction(),
            ):
                record_activity(conn, group_id=issue, type="note", user_id=users["actor"])
                raise RuntimeError("the request failed after writing the activity")
            with psycopg.connect(dsn) as conn:
                activity = record_activity(
                    conn,
                    group_id=issue,
                    type="note",
                    user_id=users["actor"],
                    data={"text": "Looks like the cache returns None."},
                )
            harness.wait_for(lambda: sink.count() >= 1, 60, 0.2, "the notification")
            harness.wait_for(
                lambda: metric(worker, "streams_notifications_total", outcome="sent") >= 1,
                30,
                0.2,
                "the job finished",
            )
            (mail,) = sink.snapshot()
            assert mail.envelope_to == ["watcher@example.com"]
            assert "actor commented on TypeError: x is None" in mail.message["Subject"]
            body = mail.message.get_payload(decode=True)
            assert isinstance(body, bytes) and b"cache returns None" in body
            assert (
                mail.message["Message-ID"]
                == f"<activity.{activity}.{users['watcher']}@streams.local>"
            )
            with psycopg.connect(dsn) as conn:
                sent = conn.execute(
                    "SELECT key, user_id, status FROM mail_sent WHERE kind = 'activity'"
                ).fetchall()
            assert sent == [(str(activity), users["watcher"], "sent")]
    finally:
        client.set_publisher(None)
