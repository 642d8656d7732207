"""Build a weekly report from the domain tables.

A week is ``[end - 7 days, end)``; the weekly schedule's slot is its end. An
organization is active in a week when one of its issues was new or seen (``first_seen``
/ ``last_seen``) or had activity (a note, an assignment, a resolution) during it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg

AsyncConn = psycopg.AsyncConnection[Any]
TOP_ISSUES = 5


@dataclass(frozen=True)
class Week:
    start: dt.datetime
    end: dt.datetime

    @classmethod
    def ending(cls, end: dt.datetime) -> Week:
        return cls(end - dt.timedelta(days=7), end)

    @property
    def key(self) -> str:
        """Identifies the week in sent-mail records: its start, to the second, UTC."""
        return self.start.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ProjectLine:
    slug: str
    new: int
    resolved: int
    still_open: int
    events: int


@dataclass(frozen=True)
class TopIssue:
    group_id: int
    project: str
    title: str
    events: int


@dataclass(frozen=True)
class Report:
    organization_id: int
    organization: str
    week: Week
    projects: list[ProjectLine]
    top_issues: list[TopIssue]


@dataclass(frozen=True)
class Recipient:
    user_id: int
    email: str
    name: str


ACTIVE_SQL = """
SELECT o.id FROM organization o
WHERE o.status = 0 AND o.id IN (
    SELECT p.organization_id FROM issue_group g JOIN project p ON p.id = g.project_id
    WHERE g.last_seen >= %(start)s AND g.first_seen < %(end)s
    UNION
    SELECT p.organization_id FROM issue_activity a JOIN project p ON p.id = a.project_id
    WHERE a.date_added >= %(start)s AND a.date_added < %(end)s
)
ORDER BY o.id
"""

PROJECTS_SQL = """
SELECT p.slug,
    (SELECT count(*) FROM issue_group g WHERE g.project_id = p.id
        AND g.first_seen >= %(start)s AND g.first_seen < %(end)s),
    (SELECT count(DISTINCT a.group_id) FROM issue_activity a WHERE a.project_id = p.id
        AND a.type = 'set_resolved' AND a.date_added >= %(start)s AND a.date_added < %(end)s),
    (SELECT count(*) FROM issue_group g WHERE g.project_id = p.id
        AND g.status = 0 AND g.first_seen < %(end)s),
    (SELECT count(*) FROM error_event e WHERE e.project_id = p.id
        AND e.date_added >= %(start)s AND e.date_added < %(end)s)
FROM project p WHERE p.organization_id = %(org)s AND p.status = 0
ORDER BY p.slug
"""

TOP_SQL = """
SELECT g.id, p.slug, g.title, count(*) AS events
FROM error_event e
JOIN issue_group g ON g.id = e.group_id
JOIN project p ON p.id = g.project_id
WHERE p.organization_id = %(org)s AND p.status = 0
    AND e.date_added >= %(start)s AND e.date_added < %(end)s
GROUP BY g.id, p.slug, g.title
ORDER BY events DESC, g.id
LIMIT %(limit)s
"""

RECIPIENTS_SQL = """
SELECT u.id, u.email, u.username FROM organization_member m
JOIN auth_user u ON u.id = m.user_id
WHERE m.organization_id = %(org)s AND u.is_active AND u.email <> ''
    AND NOT EXISTS (SELECT 1 FROM user_mail_opt_out x
                    WHERE x.user_id = u.id AND x.kind = 'weekly_report')
ORDER BY u.id
"""


async def active_organizations(conn: AsyncConn, week: Week) -> list[int]:
    """Ids of active organizations (status 0) with a new or changed issue in ``week``."""
    cur = await conn.execute(ACTIVE_SQL, {"start": week.start, "end": week.end})
    return [int(r[0]) for r in await cur.fetchall()]


async def build_report(conn: AsyncConn, organization_id: int, week: Week) -> Report | None:
    """The report of one organization for ``week``; None if it no longer exists or is
    inactive (status other than 0)."""
    cur = await conn.execute(
        "SELECT slug FROM organization WHERE id = %s AND status = 0", (organization_id,)
    )
    org = await cur.fetchone()
    if org is None:
        return None
    params = {"org": organization_id, "start": week.start, "end": week.end, "limit": TOP_ISSUES}
    cur = await conn.execute(PROJECTS_SQL, params)
    projects = [ProjectLine(*r) for r in await cur.fetchall()]
    cur = await conn.execute(TOP_SQL, params)
    top = [TopIssue(*r) for r in await cur.fetchall()]
    return Report(organization_id, str(org[0]), week, projects, top)


async def recipients(conn: AsyncConn, organization_id: int) -> list[Recipient]:
    """Active members with an email who have not opted out of weekly reports."""
    cur = await conn.execute(RECIPIENTS_SQL, {"org": organization_id})
    return [Recipient(int(r[0]), str(r[1]), str(r[2])) for r in await cur.fetchall()]
