"""Send an activity's notifications: one mail per participant but the actor, once each."""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections import Counter
from dataclasses import dataclass
from email.message import Message
from typing import Any

import psycopg

from streams import metrics
from streams.mail.ledger import send_once
from streams.mail.smtp import Mailer
from streams.notifications.render import render

log = logging.getLogger(__name__)

KIND = "activity"
NOTIFICATIONS = metrics.counter(
    "streams_notifications_total",
    "Activity notification mails by outcome (sent, already_sent, refused, gone).",
    ("outcome",),
)


@dataclass(frozen=True)
class Activity:
    id: int
    group_id: int
    type: str
    actor_id: int | None
    actor: str
    data: dict[str, Any]
    date_added: dt.datetime
    issue_title: str
    project: str


@dataclass(frozen=True)
class Participant:
    user_id: int
    email: str
    name: str


_ACTIVITY = """
SELECT a.id, a.group_id, a.type, a.user_id, coalesce(u.username, 'streams'), a.data,
       a.date_added, g.title, p.slug
FROM issue_activity a
JOIN issue_group g ON g.id = a.group_id
JOIN project p ON p.id = a.project_id
LEFT JOIN auth_user u ON u.id = a.user_id
WHERE a.id = %s
"""

# Participants: active subscribers but the actor, active users with an email, not opted out.
_PARTICIPANTS = """
SELECT u.id, u.email, u.username FROM group_subscription s
JOIN auth_user u ON u.id = s.user_id
WHERE s.group_id = %(group)s AND s.is_active AND u.is_active AND u.email <> ''
    AND u.id IS DISTINCT FROM %(actor)s
    AND NOT EXISTS (SELECT 1 FROM user_mail_opt_out x
                    WHERE x.user_id = u.id AND x.kind = 'activity')
ORDER BY u.id
"""


async def load_activity(conn: psycopg.AsyncConnection[Any], activity_id: int) -> Activity | None:
    cur = await conn.execute(_ACTIVITY, (activity_id,))
    row = await cur.fetchone()
    return None if row is None else Activity(*row)


async def participants(conn: psycopg.AsyncConnection[Any], activity: Activity) -> list[Participant]:
    """Who is told about ``activity``: its issue's participants except the actor."""
    cur = await conn.execute(
        _PARTICIPANTS, {"group": activity.group_id, "actor": activity.actor_id}
    )
    return [Participant(int(r[0]), str(r[1]), str(r[2])) for r in await cur.fetchall()]


async def send_notifications(
    conn: psycopg.AsyncConnection[Any], mailer: Mailer, activity_id: int, *, sender: str
) -> Counter[str]:
    """Mail each participant of the activity's issue but the actor, each (activity, user)
    once. ``conn`` must be in autocommit mode. An activity deleted since (its issue was
    deleted) sends nothing."""
    outcomes: Counter[str] = Counter()
    activity = await load_activity(conn, activity_id)
    if activity is None:
        outcomes["gone"] += 1
    else:
        for person in await participants(conn, activity):
            outcomes[
                await send_once(
                    conn,
                    mailer,
                    kind=KIND,
                    key=str(activity_id),
                    user_id=person.user_id,
                    build=functools.partial(_render, activity, person, sender),
                )
            ] += 1
    for name, n in outcomes.items():
        NOTIFICATIONS.labels(name).inc(n)
    log.info("notifications.activity.sent", extra={"activity_id": activity_id, **outcomes})
    return outcomes


def _render(activity: Activity, person: Participant, sender: str, message_id: str) -> Message:
    return render(activity, person.email, sender=sender, message_id=message_id)
