"""Recompute: due work in, ``project-configs`` publications out.

One query per scope kind for a whole batch of due work (the timer hands over
everything that is due at once), so a thousand due projects cost three queries,
not three thousand.

- organization scope: a tombstone for every key of the organization (configs are
  rebuilt lazily by the next project or key invalidation);
- project scope: the config of every key of the project;
- key scope: the config of that key; a key that no longer exists is disabled.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from psycopg import AsyncConnection

from streams.projectconfigs.debounce import DueWork
from streams.projectconfigs.documents import KeyRow, config_record, disabled_record
from streams.projectconfigs.scopes import ScopeKind

_KEYS_SQL = """
SELECT k.public_key, k.status, k.rate_limit_count, k.rate_limit_window,
       p.id, p.slug, p.platform, p.status, o.id, o.slug, o.status
FROM project_key k
JOIN project p ON p.id = k.project_id
JOIN organization o ON o.id = p.organization_id
WHERE {where}
ORDER BY k.id
"""
_BY_PROJECT = _KEYS_SQL.format(where="p.id = ANY(%s::bigint[])")
_BY_KEY = _KEYS_SQL.format(where="k.public_key = ANY(%s)")
_ORG_KEYS = """
SELECT k.public_key, p.organization_id, p.id FROM project_key k
JOIN project p ON p.id = k.project_id
WHERE p.organization_id = ANY(%s::bigint[])
ORDER BY k.id
"""
_PROJECT_OPTIONS = (
    "SELECT project_id, key, value FROM project_option WHERE project_id = ANY(%s::bigint[])"
)
_ORG_OPTIONS = (
    "SELECT organization_id, key, value FROM organization_option"
    " WHERE organization_id = ANY(%s::bigint[])"
)


_KINDS = frozenset(kind.value for kind in ScopeKind)


class Publication(NamedTuple):
    """One message for ``project-configs``: a record, or None for a tombstone (a named
    tuple: one is built per published config, three times faster than a frozen
    dataclass)."""

    public_key: str
    value: dict[str, Any] | None
    work: DueWork  # the due work it satisfies (headers, latency)

    @property
    def kind(self) -> str:
        if self.value is None:
            return "tombstone"
        return "disabled" if self.value["disabled"] else "config"


async def _options(
    conn: AsyncConnection[Any], sql: str, ids: set[int] | str
) -> dict[int, dict[str, Any]]:
    """Options by owner; ``ids`` a set, or its ``int_array`` literal already made."""
    out: dict[int, dict[str, Any]] = defaultdict(dict)
    if ids:
        cur = await conn.execute(sql, (ids if isinstance(ids, str) else int_array(ids),))
        for owner, key, value in await cur.fetchall():
            out[owner][key] = value
    return out


def int_array(ids: Iterable[int]) -> str:
    """A bigint[] literal for ``= ANY(%s::bigint[])``: psycopg's list dumper costs a
    Python call per element (a thousand ids per recompute batch), the text one join."""
    return "{" + ",".join(map(str, sorted(map(int, ids)))) + "}"


async def _key_rows(conn: AsyncConnection[Any], sql: str, values: list[Any] | str) -> list[KeyRow]:
    if not values:
        return []
    cur = await conn.execute(sql, (values,))
    return [KeyRow(*row) for row in await cur.fetchall()]


async def _configs(
    conn: AsyncConnection[Any], rows: list[KeyRow], now: dt.datetime, projects: str = ""
) -> dict[str, dict[str, Any]]:
    """The records of ``rows``; ``projects``: the literal of their project ids, if made
    (the options of projects without keys are read and not used)."""
    if not rows:
        return {}
    project_options = await _options(
        conn, _PROJECT_OPTIONS, projects or {r.project_id for r in rows}
    )
    org_options = await _options(conn, _ORG_OPTIONS, {r.organization_id for r in rows})
    return {
        r.public_key: config_record(
            r, project_options.get(r.project_id, {}), org_options.get(r.organization_id, {}), now
        )
        for r in rows
    }


async def recompute(
    conn: AsyncConnection[Any], works: Sequence[DueWork], now: dt.datetime | None = None
) -> list[Publication]:
    """Everything to publish for ``works``, read in one snapshot of the database."""
    now = now or dt.datetime.now(dt.UTC)
    # In milliseconds, as the topic carries it (timestamp-millis): a document computed on
    # a GET reads as one served from the table.
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    by_kind: dict[str, list[DueWork]] = defaultdict(list)
    for w in works:  # by the kind's text: no enum lookup per work
        by_kind[w.scope_kind].append(w)
    unknown = set(by_kind) - _KINDS
    if unknown:  # a record no version wrote: the recompute fails (retried, then dead-lettered)
        raise ValueError(f"unknown scope kinds {sorted(unknown)}")
    out: list[Publication] = []
    # One snapshot: a key moved between projects mid-batch is not published twice.
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        out += await _organizations(conn, by_kind[ScopeKind.ORGANIZATION.value])
        out += await _projects(conn, by_kind[ScopeKind.PROJECT.value], now)
        out += await _keys(conn, by_kind[ScopeKind.PUBLIC_KEY.value], now)
    return out


async def _organizations(conn: AsyncConnection[Any], works: list[DueWork]) -> list[Publication]:
    if not works:
        return []
    by_org = {w.organization_id: w for w in works}
    cur = await conn.execute(_ORG_KEYS, (int_array(k for k in by_org if k is not None),))
    return [Publication(key, None, by_org[org]) for key, org, _ in await cur.fetchall()]


async def _projects(
    conn: AsyncConnection[Any], works: list[DueWork], now: dt.datetime
) -> list[Publication]:
    by_project = {w.project_id: w for w in works}
    ids = [p for p in by_project if p is not None]
    literal = int_array(ids) if ids else ""
    rows = await _key_rows(conn, _BY_PROJECT, literal or [])
    configs = await _configs(conn, rows, now, literal)
    return [
        Publication(r.public_key, configs[r.public_key], by_project[r.project_id]) for r in rows
    ]


async def _keys(
    conn: AsyncConnection[Any], works: list[DueWork], now: dt.datetime
) -> list[Publication]:
    by_key = {w.public_key: w for w in works if w.public_key}
    rows = await _key_rows(conn, _BY_KEY, sorted(by_key))
    configs = await _configs(conn, rows, now)
    out = []
    for key, work in by_key.items():
        # A key that no longer exists is published as disabled, so a cached config
        # for it stops being served.
        value = configs.get(key) or disabled_record(key, now, work.project_id, work.organization_id)
        out.append(Publication(key, value, work))
    return out
