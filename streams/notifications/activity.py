"""Record an activity on an issue; its notifications are sent after the commit.

``record_activity(conn, ...)`` writes the ``issue_activity`` row, makes the actor a
participant, and schedules the notification job with the ``conn=`` form, all in the
caller's transaction. So a rolled-back activity notifies nobody, a committed one is
never forgotten (the job is in ``scheduled_messages`` with the row), and the job always
finds the row it was scheduled for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from streams.notifications.jobs import notify_activity

ACTIVITY_TYPES = frozenset({"note", "assigned", "unassigned", "set_resolved", "set_unresolved"})

_INSERT = (
    "INSERT INTO issue_activity (group_id, project_id, type, user_id, data)"
    " SELECT id, project_id, %s, %s, %s FROM issue_group WHERE id = %s RETURNING id"
)
# Acting on an issue makes you a participant; an explicit unsubscribe (is_active false)
# stays as it is.
_SUBSCRIBE = (
    "INSERT INTO group_subscription (group_id, user_id, reason) VALUES (%s, %s, %s)"
    " ON CONFLICT (group_id, user_id) DO NOTHING"
)


def _check(kind: str, user_id: int | None, data: Mapping[str, Any] | None) -> None:
    if kind not in ACTIVITY_TYPES:
        raise ValueError(f"activity type {kind!r}: expected one of {sorted(ACTIVITY_TYPES)}")
    if user_id is not None and type(user_id) is not int:
        raise TypeError(f"user_id must be an int or None, got {type(user_id).__name__}")
    if data is not None and not isinstance(data, Mapping):
        raise TypeError(f"data must be a mapping, got {type(data).__name__}")


def job_id(activity_id: int) -> str:
    """The notification job's id: one job per activity, however often it is scheduled."""
    return f"activity-notify.{activity_id}"


def record_activity(
    conn: psycopg.Connection[Any],
    *,
    group_id: int,
    type: str,
    user_id: int | None,
    data: Mapping[str, Any] | None = None,
) -> int:
    """Record an activity in the caller's transaction; returns its id.

    Notifications (one mail per participant but the actor, opt-outs honoured) are sent
    if, and only if, this transaction commits. ``ValueError`` for an unknown type or an
    issue that does not exist.
    """
    _check(type, user_id, data)
    row = conn.execute(_INSERT, (type, user_id, Jsonb(dict(data or {})), group_id)).fetchone()
    if row is None:
        raise ValueError(f"issue {group_id} does not exist")
    activity_id = int(row[0])
    if user_id is not None:
        conn.execute(_SUBSCRIBE, (group_id, user_id, type))
    notify_activity.apply_async({"activity_id": activity_id}, conn=conn, job_id=job_id(activity_id))
    return activity_id


async def arecord_activity(
    conn: psycopg.AsyncConnection[Any],
    *,
    group_id: int,
    type: str,
    user_id: int | None,
    data: Mapping[str, Any] | None = None,
) -> int:
    """``record_activity`` for asyncio code (``conn`` is an ``AsyncConnection``)."""
    _check(type, user_id, data)
    cur = await conn.execute(_INSERT, (type, user_id, Jsonb(dict(data or {})), group_id))
    row = await cur.fetchone()
    if row is None:
        raise ValueError(f"issue {group_id} does not exist")
    activity_id = int(row[0])
    if user_id is not None:
        await conn.execute(_SUBSCRIBE, (group_id, user_id, type))
    await notify_activity.aapply_async(
        {"activity_id": activity_id}, conn=conn, job_id=job_id(activity_id)
    )
    return activity_id
