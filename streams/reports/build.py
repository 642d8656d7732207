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
class Recipient:
    user_id: int
    email: str
    name: str


@dataclass(frozen=True)
class Report:
    organization_id: int
    organization: str
    week: Week
    projects: list[ProjectLine]
    top_issues: list[TopIssue]
    recipients: list[Recipient]


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

# One round trip per report: the organization, its project lines, its top issues and its
# recipients (active members with an email who have not opted out), as JSON arrays.
REPORT_SQL = """
SELECT o.slug,
  (SELECT coalesce(json_agg(json_build_array(slug, new, resolved, open, events) ORDER BY slug),
                   '[]')
   FROM (SELECT p.slug,
           (SELECT count(*) FROM issue_group g WHERE g.project_id = p.id
              AND g.first_seen >= %(start)s AND g.first_seen < %(end)s) AS new,
           (SELECT count(DISTINCT a.group_id) FROM issue_activity a WHERE a.project_id = p.id
              AND a.type = 'set_resolved'
              AND a.date_added >= %(start)s AND a.date_added < %(end)s) AS resolved,
           (SELECT count(*) FROM issue_group g WHERE g.project_id = p.id
              AND g.status = 0 AND g.first_seen < %(end)s) AS open,
           (SELECT count(*) FROM error_event e WHERE e.project_id = p.id
              AND e.date_added >= %(start)s AND e.date_added < %(end)s) AS events
         FROM project p WHERE p.organization_id = o.id AND p.status = 0) lines),
  (SELECT coalesce(json_agg(json_build_array(id, slug, title, events)
                            ORDER BY events DESC, id), '[]')
   FROM (SELECT g.id, p.slug, g.title, count(*) AS events
         -- From the organization's projects to their events of the week (index on
         -- error_event (project_id, date_added)), never a scan of every event.
         FROM project p
         JOIN error_event e ON e.project_id = p.id
         JOIN issue_group g ON g.id = e.group_id
         WHERE p.organization_id = o.id AND p.status = 0
           AND e.date_added >= %(start)s AND e.date_added < %(end)s
         GROUP BY g.id, p.slug, g.title
         ORDER BY events DESC, g.id
         LIMIT %(limit)s) top),
  (SELECT coalesce(json_agg(json_build_array(u.id, u.email, u.username) ORDER BY u.id), '[]')
   FROM organization_member m JOIN auth_user u ON u.id = m.user_id
   WHERE m.organization_id = o.id AND u.is_active AND u.email <> ''
     AND NOT EXISTS (SELECT 1 FROM user_mail_opt_out x
                     WHERE x.user_id = u.id AND x.kind = 'weekly_report'))
FROM organization o WHERE o.id = %(org)s AND o.status = 0
"""


async def active_organizations(conn: AsyncConn, week: Week) -> list[int]:
    """Ids of active organizations (status 0) with a new or changed issue in ``week``."""
    cur = await conn.execute(ACTIVE_SQL, {"start": week.start, "end": week.end})
    return [int(r[0]) for r in await cur.fetchall()]


async def build_report(conn: AsyncConn, organization_id: int, week: Week) -> Report | None:
    """The report of one organization for ``week``, with its recipients (active members
    with an email who have not opted out); None if the organization no longer exists or
    is inactive (status other than 0)."""
    params = {"org": organization_id, "start": week.start, "end": week.end, "limit": TOP_ISSUES}
    cur = await conn.execute(REPORT_SQL, params)
    row = await cur.fetchone()
    if row is None:
        return None
    slug, lines, top, people = row
    return Report(
        organization_id,
        str(slug),
        week,
        [ProjectLine(*line) for line in lines],
        [TopIssue(*issue) for issue in top],
        [Recipient(*person) for person in people],
    )
