"""From claimed outbox rows to messages: coalescing, topic routing, values, headers.

Pure functions (no I/O), so coalescing and routing are unit-tested without a broker.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.outbox.categories import CATEGORIES, OutboxError, OutboxTable

H_OUTBOX_ID = "streams-outbox-id"
H_CATEGORY = "streams-outbox-category"
H_OBJECT_ID = "streams-outbox-object-id"
H_DATE_ADDED = "streams-outbox-date-added"
H_SHARD = "streams-outbox-shard"
OUTBOX_HEADERS = (H_OUTBOX_ID, H_CATEGORY, H_OBJECT_ID, H_DATE_ADDED, H_SHARD)

ShardKey = tuple[str, int]


@dataclass(slots=True)
class Row:
    """One claimed outbox row (``payload`` is the jsonb as text)."""

    id: int
    shard_scope: str
    shard_identifier: int
    category: str
    object_identifier: int
    payload: str | None
    region_name: str | None
    backfill: bool
    scheduled_for: dt.datetime
    date_added: dt.datetime

    @property
    def shard(self) -> ShardKey:
        return (self.shard_scope, self.shard_identifier)

    def as_json(self) -> bytes:
        """The row itself, as the dead-letter value when it cannot be published."""
        return json.dumps(
            {
                "id": self.id,
                "shard_scope": self.shard_scope,
                "shard_identifier": self.shard_identifier,
                "category": self.category,
                "object_identifier": self.object_identifier,
                "payload": json.loads(self.payload) if self.payload is not None else None,
                "region_name": self.region_name,
                "date_added": self.date_added.isoformat(),
            }
        ).encode()


@dataclass(slots=True)
class Group:
    """The row to publish and every claimed row it stands for (itself included)."""

    row: Row
    covers: list[int] = field(default_factory=list)

    @property
    def coalesced(self) -> int:
        return len(self.covers) - 1


# category name -> coalesces? Unknown names do not: they are dead-lettered one by one.
_COALESCES = {c.value: info.coalesce for c, info in CATEGORIES.items()}

_Key = tuple[str, int, str, int]


def coalesce(rows: Sequence[Row]) -> list[Group]:
    """Group rows (given in id order) so that only the newest of an object is published.

    Rows of one (shard, category, object) of a coalescing category collapse into their
    newest row, published at the newest row's place, so the messages of a shard stay
    in id order. Only the claimed rows are covered: a row inserted meanwhile survives.
    """
    newest: dict[_Key, int] = {}  # key -> index of its newest row
    repeated: set[_Key] = set()  # keys of more than one row (usually none)
    keys: list[_Key | None] = []
    coalesces = _COALESCES
    for idx, r in enumerate(rows):
        if not coalesces.get(r.category, False):
            keys.append(None)
            continue
        key = (r.shard_scope, r.shard_identifier, r.category, r.object_identifier)
        keys.append(key)
        if key in newest:
            repeated.add(key)
        newest[key] = idx
    if not repeated:  # nothing to coalesce: one message per row
        return [Group(r, [r.id]) for r in rows]
    members: dict[_Key, list[int]] = {k: [] for k in repeated}
    for r, each in zip(rows, keys, strict=True):
        if each is not None and each in repeated:
            members[each].append(r.id)
    groups = []
    for idx, r in enumerate(rows):
        found = keys[idx]
        if found is None or found not in repeated:
            groups.append(Group(r, [r.id]))
        elif newest[found] == idx:
            groups.append(Group(r, members[found]))
    return groups


@dataclass(frozen=True)
class Outbound:
    topic: str  # catalogue name
    key: str
    value: dict[str, Any]
    headers: list[tuple[str, bytes]]


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def headers_for(row: Row) -> list[tuple[str, bytes]]:
    return [
        (H_OUTBOX_ID, str(row.id).encode()),
        (H_CATEGORY, row.category.encode()),
        (H_OBJECT_ID, str(row.object_identifier).encode()),
        (H_DATE_ADDED, str(_ms(row.date_added)).encode()),
        (H_SHARD, f"{row.shard_scope}:{row.shard_identifier}".encode()),
    ]


# category name -> (category, declaration), without an enum lookup per row
_BY_NAME = {c.value: (c, info) for c, info in CATEGORIES.items()}


def route(row: Row, table: OutboxTable) -> str | None:
    """Check that ``row`` may be published from ``table``; returns its resource-change sender.

    None means the row goes to the table's outbox topic as an OutboxMessage. Raises
    OutboxError for an unknown category, or one of another scope or outbox table.
    """
    found = _BY_NAME.get(row.category)
    if found is None:
        raise OutboxError(f"unknown outbox category {row.category!r}")
    cat, info = found
    if info.scope.value != row.shard_scope:
        raise OutboxError(f"category {cat.value!r} does not belong to scope {row.shard_scope!r}")
    if table.kind not in info.outboxes:
        raise OutboxError(f"category {cat.value!r} does not belong in {table.name}")
    return info.sender


def outbound(row: Row, table: OutboxTable) -> Outbound:
    """Route and shape one row. Raises (OutboxError, ValueError, ...) if it cannot be."""
    sender = route(row, table)
    if sender is not None:
        return Outbound(
            "resource-changes",
            str(row.shard_identifier),
            _resource_change(row, sender),
            headers_for(row),
        )
    value = {
        "outbox_id": row.id,
        "shard_scope": row.shard_scope,
        "shard_identifier": row.shard_identifier,
        "category": row.category,
        "object_identifier": row.object_identifier,
        "payload": row.payload,
        "region_name": row.region_name,
        # Epoch milliseconds: what timestamp-millis holds, and cheaper to encode.
        "scheduled_for": _ms(row.scheduled_for),
        "date_added": _ms(row.date_added),
    }
    return Outbound(
        table.topic, f"{row.shard_scope}:{row.shard_identifier}", value, headers_for(row)
    )


def _resource_change(row: Row, sender: str) -> dict[str, Any]:
    payload = json.loads(row.payload) if row.payload is not None else None
    if not isinstance(payload, dict) or not isinstance(payload.get("action"), str):
        raise OutboxError(f"resource change row {row.id} has no 'action' in its payload")
    data = payload.get("data")
    return {
        "action": payload["action"],
        "sender": sender,
        "instance_id": row.object_identifier,
        "organization_id": row.shard_identifier,
        "project_id": payload.get("project_id"),
        "occurred_at": row.date_added,
        "data": None if data is None else json.dumps(data, separators=(",", ":")),
        "actor_id": payload.get("actor_id"),
    }
