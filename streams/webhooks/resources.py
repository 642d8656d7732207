"""Resources that produce webhooks: the sender allow-list and their rows in PostgreSQL.

A resource change names its *sender* (the model name on the wire). Only allow-listed
senders are processed; each maps to the resource name used in payloads and event
names (``Group`` -> ``issue``, ``Event`` -> ``error``), and, for events, to the
service-hook event prefix (``event.created``). Rows are loaded in batches with one
query per resource, serialized to plain JSON-ready dicts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, AsyncCursor

from streams.errors import PermanentFailure


class UnknownSender(PermanentFailure):
    """The change names a model that is not on the allow-list."""


@dataclass(frozen=True)
class Resource:
    name: str  # in payloads and '<resource>.<action>' event names
    table: str
    hook_event: str | None  # service hooks subscribe to '<hook_event>.<action>'


ISSUE = Resource("issue", "issue_group", None)
ERROR = Resource("error", "error_event", "event")

# Wire sender -> resource. "Error" is accepted as well: the old system derived the
# resource name of events from the sender's lower-cased name.
SENDERS: dict[str, Resource] = {"Group": ISSUE, "Event": ERROR, "Error": ERROR}

ISSUE_STATUS = {0: "unresolved", 1: "resolved", 2: "ignored"}


def resource_for(sender: str) -> Resource:
    """The resource of an allow-listed sender; ``UnknownSender`` otherwise."""
    try:
        return SENDERS[sender]
    except KeyError:
        raise UnknownSender(
            f"sender {sender!r} is not allow-listed (known: {', '.join(sorted(SENDERS))})"
        ) from None


@dataclass(frozen=True)
class Project:
    id: int
    organization_id: int
    slug: str
    name: str


@dataclass(frozen=True)
class Instance:
    """One row, serialized for payloads."""

    resource: Resource
    id: int
    project: Project
    data: dict[str, Any]
    group: dict[str, Any] | None = None  # an error event's issue (service hook v0)


@dataclass(frozen=True)
class Installation:
    id: int
    uuid: str
    organization_id: int
    events: tuple[str, ...]


@dataclass(frozen=True)
class ServiceHook:
    id: int
    guid: str
    project_id: int
    events: tuple[str, ...]
    version: int


def subscribed(events: Collection[str], resource: str, action: str) -> bool:
    """Whether a subscription list covers ``<resource>.<action>`` (a bare resource covers all)."""
    return f"{resource}.{action}" in events or resource in events


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


_ISSUE_COLUMNS = (
    "g.id, g.title, g.culprit, g.level, g.status, g.times_seen, g.num_comments, "
    "g.first_seen, g.last_seen"
)


def serialize_issue(row: Sequence[Any], project: Project) -> dict[str, Any]:
    gid, title, culprit, level, status, times_seen, comments, first_seen, last_seen = row
    return {
        "id": str(gid),
        "title": title,
        "culprit": culprit,
        "level": level,
        "status": ISSUE_STATUS.get(int(status), str(status)),
        "count": str(times_seen),
        "numComments": comments,
        "firstSeen": _iso(first_seen),
        "lastSeen": _iso(last_seen),
        "project": {"id": str(project.id), "slug": project.slug, "name": project.name},
    }


_ISSUES = (
    f"SELECT p.id, p.organization_id, p.slug, p.name, {_ISSUE_COLUMNS} "
    "FROM issue_group g JOIN project p ON p.id = g.project_id WHERE g.id = ANY(%s)"
)
_ERRORS = (
    "SELECT p.id, p.organization_id, p.slug, p.name, "
    "e.id, e.event_id, e.group_id, e.message, e.platform, e.data, e.date_added, "
    f"{_ISSUE_COLUMNS} FROM error_event e JOIN project p ON p.id = e.project_id "
    "LEFT JOIN issue_group g ON g.id = e.group_id WHERE e.id = ANY(%s)"
)


def _issues_from(rows: Sequence[Sequence[Any]]) -> dict[int, Instance]:
    out = {}
    for row in rows:
        project = Project(int(row[0]), int(row[1]), row[2], row[3])
        out[int(row[4])] = Instance(ISSUE, int(row[4]), project, serialize_issue(row[4:], project))
    return out


def _errors_from(rows: Sequence[Sequence[Any]]) -> dict[int, Instance]:
    out = {}
    for row in rows:
        project = Project(int(row[0]), int(row[1]), row[2], row[3])
        eid, event_id, group_id, message, platform, data, date_added = row[4:11]
        event = dict(data) if isinstance(data, Mapping) else {}
        event.update(
            {
                "event_id": event_id.hex,
                "id": event_id.hex,
                "issue_id": str(group_id) if group_id is not None else None,
                "project": project.id,
                "message": message,
                "platform": platform,
                "datetime": _iso(date_added),
            }
        )
        group = serialize_issue(row[11:], project) if row[11] is not None else None
        out[int(eid)] = Instance(ERROR, int(eid), project, event, group)
    return out


# Per resource: the query of its visible rows by id, and how a row becomes an Instance.
LOADERS: dict[str, tuple[str, Callable[[Sequence[Sequence[Any]]], dict[int, Instance]]]] = {
    ISSUE.name: (_ISSUES, _issues_from),
    ERROR.name: (_ERRORS, _errors_from),
}


async def load(
    conn: AsyncConnection[Any], resource: Resource, ids: Sequence[int]
) -> dict[int, Instance]:
    """The visible rows among ``ids`` (missing ones are simply absent)."""
    query, parse = LOADERS[resource.name]
    cur = await conn.execute(query, (list(ids),))
    return parse(await cur.fetchall())


@dataclass(frozen=True)
class Subscribers:
    """Who hears of a batch's changes: installations per organization, service hooks per
    project, and the acting users' names."""

    installations: dict[int, list[Installation]]
    hooks: dict[int, list[ServiceHook]]
    actors: dict[int, str]


_INSTALLATIONS = (
    "SELECT i.id, i.uuid, i.organization_id, a.events FROM sentry_app_installation i "
    "JOIN sentry_app a ON a.id = i.sentry_app_id "
    "WHERE i.organization_id = ANY(%s) AND i.status = 0 AND a.status = 0 ORDER BY i.id"
)
_HOOKS = (
    "SELECT id, guid, project_id, events, version FROM service_hook "
    "WHERE project_id = ANY(%s) AND status = 0 ORDER BY id"
)
_ACTORS = "SELECT id, username FROM auth_user WHERE id = ANY(%s)"


_INSTALLATIONS_OF = (
    "SELECT i.id, i.uuid, i.organization_id, a.events FROM sentry_app_installation i "
    "JOIN sentry_app a ON a.id = i.sentry_app_id WHERE i.organization_id IN "
    "(SELECT organization_id FROM project WHERE id IN ({projects})) "
    "AND i.status = 0 AND a.status = 0 ORDER BY i.id"
)
_HOOKS_OF = (
    "SELECT id, guid, project_id, events, version FROM service_hook "
    "WHERE project_id IN ({projects}) AND status = 0 ORDER BY id"
)


async def subscribers(
    conn: AsyncConnection[Any],
    organization_ids: Sequence[int],
    project_ids: Sequence[int],
    user_ids: Sequence[int],
) -> Subscribers:
    """Installed installations of active apps, active service hooks and actor names, in
    one round trip (the three queries are pipelined)."""
    async with conn.pipeline():
        installs = await conn.execute(_INSTALLATIONS, (list(organization_ids),))
        hooks = await conn.execute(_HOOKS, (list(project_ids),))
        actors = await conn.execute(_ACTORS, (list(user_ids),)) if user_ids else None
        return await _subscribers_from(installs, hooks, actors)


async def load_with_subscribers(
    conn: AsyncConnection[Any],
    wanted: Mapping[Resource, Sequence[int]],
    project_ids: Sequence[int],
    user_ids: Sequence[int],
) -> tuple[dict[tuple[str, int], Instance], Subscribers]:
    """The visible rows among ``wanted`` (by resource name and id), and the subscribers
    of their projects and of ``project_ids`` (rows the caller holds already), with the
    actors' names: one round trip for what took two (the rows' projects are read by the
    subscriber queries themselves)."""
    kinds = list(wanted)
    # Table names come from code (Resource), never from a message.
    projects = "SELECT unnest(%s::bigint[])" + "".join(
        f" UNION SELECT project_id FROM {r.table} WHERE id = ANY(%s)" for r in kinds
    )
    of_projects = [list(project_ids), *(list(wanted[r]) for r in kinds)]
    async with conn.pipeline():
        loads = [(r, await conn.execute(LOADERS[r.name][0], (list(wanted[r]),))) for r in kinds]
        installs = await conn.execute(_INSTALLATIONS_OF.format(projects=projects), of_projects)
        hooks = await conn.execute(_HOOKS_OF.format(projects=projects), of_projects)
        actors = await conn.execute(_ACTORS, (list(user_ids),)) if user_ids else None
        found: dict[tuple[str, int], Instance] = {}
        for r, cur in loads:
            for iid, inst in LOADERS[r.name][1](await cur.fetchall()).items():
                found[r.name, iid] = inst
        return found, await _subscribers_from(installs, hooks, actors)


async def _subscribers_from(
    installs: AsyncCursor[Any], hooks: AsyncCursor[Any], actors: AsyncCursor[Any] | None
) -> Subscribers:
    out = Subscribers({}, {}, {})
    for iid, uuid, org, events in await installs.fetchall():
        out.installations.setdefault(int(org), []).append(
            Installation(int(iid), str(uuid), int(org), tuple(events))
        )
    for hid, guid, project, events, version in await hooks.fetchall():
        out.hooks.setdefault(int(project), []).append(
            ServiceHook(int(hid), str(guid), int(project), tuple(events), int(version))
        )
    if actors is not None:
        out.actors.update((int(uid), str(name)) for uid, name in await actors.fetchall())
    return out
