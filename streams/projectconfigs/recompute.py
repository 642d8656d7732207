"""Recompute: due work in, ``project-configs`` publications out.

One statement per scope kind for a whole batch of due work (the timer hands over
everything that is due at once), each key row with its project's and organization's
options, so a thousand due projects cost one statement, not three thousand. A batch of
one scope kind (the usual case) is one round trip to PostgreSQL; a batch of several
runs in one read-only repeatable-read transaction, so they read one snapshot. Six
round trips per batch (begin, isolation level, key rows, each owner's options,
commit) were a fixed cost of every timer pass (bench/README.md).

- organization scope: a tombstone for every key of the organization (configs are
  rebuilt lazily by the next project or key invalidation);
- project scope: the config of every key of the project;
- key scope: the config of that key; a key that no longer exists is disabled.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, NamedTuple

from psycopg import AsyncConnection, IsolationLevel
from psycopg.pq import TransactionStatus

from streams.projectconfigs.debounce import DueWork
from streams.projectconfigs.documents import KeyRow, config_record, disabled_record
from streams.projectconfigs.scopes import ScopeKind

_KEYS_SQL = """
SELECT k.public_key, k.status, k.rate_limit_count, k.rate_limit_window,
       p.id, p.slug, p.platform, p.status, o.id, o.slug, o.status,
       (SELECT jsonb_object_agg(po.key, po.value) FROM project_option po
        WHERE po.project_id = p.id),
       (SELECT jsonb_object_agg(oo.key, oo.value) FROM organization_option oo
        WHERE oo.organization_id = o.id)
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
_NO_OPTIONS: dict[str, Any] = {}


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


def int_array(ids: Iterable[int]) -> str:
    """A bigint[] literal for ``= ANY(%s::bigint[])``: psycopg's list dumper costs a
    Python call per element (a thousand ids per recompute batch), the text one join."""
    return "{" + ",".join(map(str, sorted(map(int, ids)))) + "}"


async def _configs(
    conn: AsyncConnection[Any], sql: str, values: list[Any] | str, now: dt.datetime
) -> list[tuple[KeyRow, dict[str, Any]]]:
    """Each key row of ``sql`` with its ``project-configs`` record."""
    if not values:
        return []
    cur = await conn.execute(sql, (values,))
    out = []
    for *fields, project_options, org_options in await cur.fetchall():
        row = KeyRow(*fields)
        record = config_record(row, project_options or _NO_OPTIONS, org_options or _NO_OPTIONS, now)
        out.append((row, record))
    return out


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
    several = len(by_kind) > 1
    organizations = by_kind[ScopeKind.ORGANIZATION.value]
    projects = by_kind[ScopeKind.PROJECT.value]
    keys = by_kind[ScopeKind.PUBLIC_KEY.value]
    async with _snapshot(conn, several):
        out = await _organizations(conn, organizations)
        out += await _projects(conn, projects, now)
        out += await _keys(conn, keys, now)
    return out


@contextlib.asynccontextmanager
async def _snapshot(conn: AsyncConnection[Any], several: bool) -> AsyncIterator[None]:
    """One snapshot for the batch's statements: a single statement is its own (run in
    autocommit: no begin or commit round trip); several share a read-only repeatable-read
    transaction (a key moved between projects mid-batch is not published twice), begun
    with its isolation level in one statement. The connection's settings come back as
    they were (client-side only: the connection is idle)."""
    if conn.info.transaction_status != TransactionStatus.IDLE:  # the caller's transaction
        async with conn.transaction():
            yield
        return
    autocommit, isolation, read_only = conn.autocommit, conn.isolation_level, conn.read_only
    try:
        if not several:
            if not autocommit:
                await conn.set_autocommit(True)
            yield
            return
        await conn.set_isolation_level(IsolationLevel.REPEATABLE_READ)
        await conn.set_read_only(True)
        async with conn.transaction():
            yield
    finally:
        if conn.info.transaction_status == TransactionStatus.IDLE:
            await conn.set_autocommit(autocommit)
            await conn.set_isolation_level(isolation)
            await conn.set_read_only(read_only)


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
    configs = await _configs(conn, _BY_PROJECT, int_array(ids) if ids else "", now)
    return [Publication(r.public_key, record, by_project[r.project_id]) for r, record in configs]


async def _keys(
    conn: AsyncConnection[Any], works: list[DueWork], now: dt.datetime
) -> list[Publication]:
    by_key = {w.public_key: w for w in works if w.public_key}
    configs = {
        r.public_key: record for r, record in await _configs(conn, _BY_KEY, sorted(by_key), now)
    }
    out = []
    for key, work in by_key.items():
        # A key that no longer exists is published as disabled, so a cached config
        # for it stops being served.
        value = configs.get(key) or disabled_record(key, now, work.project_id, work.organization_id)
        out.append(Publication(key, value, work))
    return out
