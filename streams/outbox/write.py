"""The outbox write API: one row in the caller's transaction, and a NOTIFY for the relay.

Nothing is published unless the caller's transaction commits: the row and the NOTIFY
(PostgreSQL delivers notifications at commit, and drops them on rollback) are part of
it. The relay wakes on the NOTIFY and falls back to polling, so a lost notification only
delays a row by the poll interval.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from streams import catalogue
from streams.delayed.due import delay_seconds
from streams.delayed.store import Prepared, insert
from streams.errors import MessageTooLarge
from streams.outbox.categories import (
    CategoryInfo,
    OutboxCategory,
    OutboxError,
    OutboxScope,
    OutboxTable,
    resolve,
)

NOTIFY_CHANNEL = "streams_outbox"
INT64 = (-(2**63), 2**63 - 1)
# Keys a resource-change payload may carry (the rest of the ResourceChange comes from
# the row: sender from the category, instance id = object, organization = shard).
RESOURCE_CHANGE_KEYS = frozenset({"action", "project_id", "data", "actor_id"})


@dataclass(frozen=True)
class _Insert:
    sql: str
    params: tuple[Any, ...]


def _check_id(name: str, value: object) -> int:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not INT64[0] <= value <= INT64[1]:
        raise OutboxError(f"{name}={value} does not fit in a bigint")
    return value


def _check_resource_change(cat: OutboxCategory, payload: Mapping[str, Any] | None) -> None:
    if payload is None or not isinstance(payload.get("action"), str) or not payload["action"]:
        raise OutboxError(f"category {cat.value!r} needs a payload with a non-empty 'action'")
    unknown = set(payload) - RESOURCE_CHANGE_KEYS
    if unknown:
        raise OutboxError(f"category {cat.value!r}: unknown payload keys {sorted(unknown)}")
    for key in ("project_id", "actor_id"):
        if payload.get(key) is not None:
            _check_id(f"payload[{key!r}]", payload[key])


def _payload_text(payload: Mapping[str, Any] | None) -> str | None:
    if payload is None:
        return None
    if not isinstance(payload, Mapping):
        raise TypeError(f"payload must be a mapping or None, got {type(payload).__name__}")
    try:
        return json.dumps(payload, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"outbox payload is not plain JSON data: {exc}") from exc


# The relay's envelope around a payload (ids, scope, category, dates, Avro framing,
# headers) stays well under this; a payload that leaves less room cannot be published.
ENVELOPE_BYTES = 4096


def _check_size(table: OutboxTable, text: str | None) -> None:
    """Refuse, in the caller's transaction, a row its topic could never take."""
    if text is None:
        return
    size = len(text.encode()) + ENVELOPE_BYTES
    spec = catalogue.lookup(table.topic)
    if not spec.fits(size):
        raise MessageTooLarge(
            f"outbox payload of {size - ENVELOPE_BYTES} bytes cannot be published to "
            f"{table.topic} (limit {spec.max_message_bytes} bytes with its envelope); "
            "nothing was written"
        )


def build_insert(
    *,
    scope: OutboxScope | str,
    shard_identifier: int,
    category: OutboxCategory | str,
    object_identifier: int,
    payload: Mapping[str, Any] | None,
    region: str | None,
    backfill: bool,
) -> tuple[OutboxTable, _Insert]:
    """Validate one row and build its INSERT (+ NOTIFY, in the same statement)."""
    table, sc, cat, info = resolve(scope, category, region)
    _check_id("shard_identifier", shard_identifier)
    _check_id("object_identifier", object_identifier)
    _check_payload(cat, info, payload)
    text = _payload_text(payload)
    _check_size(table, text)
    columns = ["shard_scope", "shard_identifier", "category", "object_identifier", "payload"]
    params: list[Any] = [sc.value, shard_identifier, cat.value, object_identifier, text]
    if table.has_region:
        columns.append("region_name")
        params.append(region)
    columns.append("backfill")
    params.append(backfill)
    placeholders = ", ".join("%s::jsonb" if c == "payload" else "%s" for c in columns)
    sql = (
        f"WITH ins AS (INSERT INTO {table.name} ({', '.join(columns)}) "
        f"VALUES ({placeholders}) RETURNING id) "
        f"SELECT id, pg_notify('{NOTIFY_CHANNEL}', '{table.name}') FROM ins"
    )
    return table, _Insert(sql, tuple(params))


def _check_payload(
    cat: OutboxCategory, info: CategoryInfo, payload: Mapping[str, Any] | None
) -> None:
    if info.sender is not None:
        _check_resource_change(cat, payload)


def enqueue_outbox(
    conn: psycopg.Connection[Any],
    *,
    scope: OutboxScope | str,
    shard_identifier: int,
    category: OutboxCategory | str,
    object_identifier: int,
    payload: Mapping[str, Any] | None = None,
    region: str | None = None,
    backfill: bool = False,
    countdown: float | None = None,
    eta: dt.datetime | None = None,
) -> int:
    """Write one outbox row in ``conn``'s current transaction; returns its id.

    ``region`` given: a control-silo row for that region (``control_outbox``); else a
    region-silo row (``region_outbox``). Raises ``OutboxError`` (a ValueError) when the
    category does not belong to the scope or to that outbox, ``TypeError`` for values
    that are not plain data. The row is published only if the transaction commits.

    With ``countdown``/``eta`` the row is checked now but kept in ``scheduled_messages``
    and written to the outbox when due (by ``streams relay``), so it never holds up its
    shard meanwhile; the id returned is then that of the scheduled row.
    """
    if countdown is not None or eta is not None:
        return _defer(conn, locals(), delay_seconds(countdown, eta))
    _, ins = build_insert(
        scope=scope,
        shard_identifier=shard_identifier,
        category=category,
        object_identifier=object_identifier,
        payload=payload,
        region=region,
        backfill=backfill,
    )
    row = conn.execute(ins.sql.encode(), ins.params).fetchone()
    assert row is not None
    return int(row[0])


async def enqueue_outbox_async(
    conn: psycopg.AsyncConnection[Any],
    *,
    scope: OutboxScope | str,
    shard_identifier: int,
    category: OutboxCategory | str,
    object_identifier: int,
    payload: Mapping[str, Any] | None = None,
    region: str | None = None,
    backfill: bool = False,
) -> int:
    """``enqueue_outbox`` for an asyncio connection (Faust agents)."""
    _, ins = build_insert(
        scope=scope,
        shard_identifier=shard_identifier,
        category=category,
        object_identifier=object_identifier,
        payload=payload,
        region=region,
        backfill=backfill,
    )
    cur = await conn.execute(ins.sql.encode(), ins.params)
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


# The scheduled_messages "topic" of deferred outbox rows (see streams.delayed.pump).
DEFERRED_TARGET = "local:outbox"
_ROW_ARGS = (
    "scope",
    "shard_identifier",
    "category",
    "object_identifier",
    "payload",
    "region",
    "backfill",
)


def _defer(conn: psycopg.Connection[Any], call: dict[str, Any], delay: float) -> int:
    args = {k: call[k] for k in _ROW_ARGS}
    for k in ("scope", "category"):
        args[k] = getattr(args[k], "value", args[k])  # enums as their names
    build_insert(**args)  # every check now: a bad row fails the caller, not the relay
    text = json.dumps(args, allow_nan=False, separators=(",", ":")).encode()
    scheduled = insert(conn, Prepared(DEFERRED_TARGET, text, None, []), delay)
    assert scheduled.id is not None
    return scheduled.id


def write_deferred(conn: psycopg.Connection[Any], data: bytes) -> None:
    """Write a deferred outbox row (the relay's pump calls this when it is due)."""
    enqueue_outbox(conn, **json.loads(data))
