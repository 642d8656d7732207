"""What a weekly report says, built from the domain tables (real PostgreSQL, no broker)."""

from __future__ import annotations

import asyncio
import datetime as dt

import psycopg

from streams.reports.build import (
    Recipient,
    Report,
    Week,
    active_organizations,
    build_report,
)
from streams.reports.render import render
from tests.reports.seed import seed_organizations

END = dt.datetime(2026, 11, 30, 9, tzinfo=dt.UTC)


def test_report_counts_new_resolved_open_and_top_issues(database: str) -> None:
    with psycopg.connect(database) as conn:
        seed_organizations(conn, active=2, inactive=1, week_end=END, opted_out_extra=1)
        # org-1: one more issue, resolved this week, with 5 events (the top issue).
        row = conn.execute(
            "INSERT INTO issue_group (project_id, title, status, first_seen, last_seen)"
            " SELECT p.id, 'KeyError: user', 1, %s, %s FROM project p"
            " JOIN organization o ON o.id = p.organization_id WHERE o.slug = 'org-1'"
            " RETURNING id, project_id",
            (END - dt.timedelta(days=2), END - dt.timedelta(hours=1)),
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO issue_activity (group_id, project_id, type, date_added)"
            " VALUES (%s, %s, 'set_resolved', %s)",
            (row[0], row[1], END - dt.timedelta(hours=1)),
        )
        conn.execute(
            "INSERT INTO error_event (event_id, project_id, group_id, date_added)"
            " SELECT gen_random_uuid(), %s, %s, %s FROM generate_series(1, 5)",
            (row[1], row[0], END - dt.timedelta(hours=2)),
        )
        org1 = conn.execute("SELECT id FROM organization WHERE slug = 'org-1'").fetchone()
        assert org1 is not None

    async def build() -> tuple[list[int], Report | None, list[str]]:
        async with await psycopg.AsyncConnection.connect(database) as aconn:
            week = Week.ending(END)
            active = await active_organizations(aconn, week)
            report = await build_report(aconn, org1[0], week)
            people = [r.email for r in report.recipients] if report else []
            return active, report, people

    active, report, people = asyncio.run(build())
    assert len(active) == 2  # org-3 saw nothing this week
    assert people == ["u1@example.com"]  # x1 opted out
    assert report is not None
    (line,) = report.projects
    assert (line.new, line.resolved, line.still_open, line.events) == (2, 1, 2, 7)
    assert [(i.title, i.events) for i in report.top_issues] == [
        ("KeyError: user", 5),
        ("new this week", 2),
    ]
    mail = render(report, Recipient(1, "u1@example.com", "u1"), sender="r@x", message_id="<m@x>")
    text = mail.get_payload(decode=True)
    assert isinstance(text, bytes) and b"KeyError: user" in text and b"org-1" in text
