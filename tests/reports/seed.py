"""Seed organizations for weekly-report tests and benchmarks (one statement per table)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg


def seed_organizations(
    conn: psycopg.Connection[Any],
    *,
    active: int,
    inactive: int,
    week_end: dt.datetime,
    opted_out_extra: int = 0,
) -> None:
    """``active + inactive`` organizations ``org-1..``, each with one project, one member
    ``u<n>@example.com`` and two issues; the first ``active`` have an issue seen during
    the week before ``week_end`` (and events), the others only a month before. The first
    ``opted_out_extra`` also have a second member who opted out of weekly reports."""
    total = active + inactive
    params = {"n": total, "active": active, "end": week_end, "extra": opted_out_extra}
    conn.execute(
        "INSERT INTO organization (slug, name) SELECT 'org-' || g, 'Org ' || g"
        " FROM generate_series(1, %(n)s) g",
        params,
    )
    conn.execute(
        "INSERT INTO project (organization_id, slug, platform)"
        " SELECT id, 'app', 'python' FROM organization WHERE slug LIKE 'org-%%'"
    )
    conn.execute(
        "INSERT INTO auth_user (username, email) SELECT 'u' || g, 'u' || g || '@example.com'"
        " FROM generate_series(1, %(n)s) g",
        params,
    )
    conn.execute(
        "INSERT INTO organization_member (organization_id, user_id)"
        " SELECT o.id, u.id FROM organization o JOIN auth_user u"
        " ON u.username = 'u' || substr(o.slug, 5) WHERE o.slug LIKE 'org-%%'"
    )
    conn.execute(
        "WITH x AS (INSERT INTO auth_user (username, email)"
        " SELECT 'x' || g, 'x' || g || '@example.com' FROM generate_series(1, %(extra)s) g"
        " RETURNING id, username)"
        " , m AS (INSERT INTO organization_member (organization_id, user_id)"
        " SELECT o.id, x.id FROM x JOIN organization o ON o.slug = 'org-' || substr(x.username, 2))"
        " INSERT INTO user_mail_opt_out (user_id, kind) SELECT id, 'weekly_report' FROM x",
        params,
    )
    # Per organization: one issue per timing; active ones seen 1 day before the end.
    conn.execute(
        "INSERT INTO issue_group (project_id, title, status, times_seen, first_seen, last_seen)"
        " SELECT p.id, t.title, t.status, 3,"
        "  %(end)s - make_interval(days => t.first_days),"
        "  %(end)s - make_interval(days => t.last_days)"
        " FROM project p JOIN organization o ON o.id = p.organization_id"
        " CROSS JOIN (VALUES ('old and quiet', 0, 60, 30), ('new this week', 0, 3, 1))"
        "  AS t(title, status, first_days, last_days)"
        " WHERE o.slug LIKE 'org-%%'"
        "  AND (t.title = 'old and quiet' OR substr(o.slug, 5)::int <= %(active)s)",
        params,
    )
    conn.execute(
        "INSERT INTO error_event (event_id, project_id, group_id, message, date_added)"
        " SELECT gen_random_uuid(), g.project_id, g.id, 'boom', %(end)s - interval '1 day'"
        " FROM issue_group g CROSS JOIN generate_series(1, 2)"
        " WHERE g.title = 'new this week'",
        params,
    )
