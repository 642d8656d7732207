"""Relay dead letters too large for the dead-letter topic, kept whole in PostgreSQL.

The relay dead-letters an outbox row it cannot publish as the row in JSON. A row of
several megabytes does not fit the dead-letter topic either; cutting it to fit would
lose the rest of its payload. Such a row is stored whole in ``relay_dead_rows``
(migration 0040), in the transaction that deletes it from its outbox table, so it is
never both gone from the outbox and missing here. ``streams dlq list`` shows it and
``streams dlq replay --to-outbox`` puts it back, once.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from streams import catalogue
from streams.dlq.headers import Letter

# The dead-letter topic's limit (its catalogue spec): what ``fits`` checks against.
_SPEC = catalogue.spec("dead-letters")


def letter_size(letter: Letter) -> int:
    """The bytes a letter takes on the wire (value, key and headers)."""
    headers = sum(len(k) + len(v) for k, v in letter.wire_headers(0))
    return len(letter.value or b"") + len(letter.key or b"") + headers


def fits(letter: Letter) -> bool:
    """Whether ``letter`` fits the dead-letter topic (else: ``park`` its row)."""
    return _SPEC.fits(letter_size(letter))


def park(conn: psycopg.Connection[Any], letters: Sequence[Letter]) -> int:
    """Store each letter's row whole, in the caller's transaction; rows already stored
    (the same outbox table and id) are kept as they are. Returns the rows stored."""
    stored = 0
    for letter in letters:
        f = letter.failure
        stored += conn.execute(
            "INSERT INTO relay_dead_rows (outbox_table, outbox_id, row_json, reason, "
            "error_type, error_message, size_bytes) VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (
                letter.source,
                letter.offset,
                (letter.value or b"{}").decode(),
                f.reason.value,
                f.error_type,
                f.message,
                letter_size(letter),
            ),
        ).rowcount
    return stored


@dataclass(frozen=True)
class DeadRow:
    """One outbox row kept in ``relay_dead_rows``, not put back yet."""

    outbox_table: str
    outbox_id: int
    row: dict[str, Any]
    reason: str
    error_type: str
    error_message: str
    size_bytes: int
    dead_at: dt.datetime


_COLUMNS = (
    "outbox_table, outbox_id, row_json, reason, error_type, error_message, size_bytes, dead_at"
)


def pending(
    conn: psycopg.Connection[Any],
    *,
    table: str | None = None,
    since: dt.datetime | None = None,
    reason: str | None = None,
    lock: bool = False,
) -> list[DeadRow]:
    """The rows not put back yet, oldest first; ``lock`` holds them for a restore."""
    query = (
        f"SELECT {_COLUMNS} FROM relay_dead_rows WHERE restored_at IS NULL "
        "AND (%(t)s::text IS NULL OR outbox_table = %(t)s) "
        "AND (%(s)s::timestamptz IS NULL OR dead_at >= %(s)s) "
        "AND (%(r)s::text IS NULL OR reason = %(r)s) ORDER BY dead_at, outbox_id"
    )
    if lock:
        query += " FOR UPDATE SKIP LOCKED"
    rows = conn.execute(query, {"t": table, "s": since, "r": reason}).fetchall()
    return [
        DeadRow(str(t), int(i), r if isinstance(r, dict) else json.loads(r), *rest)
        for t, i, r, *rest in rows
    ]


def mark_restored(conn: psycopg.Connection[Any], row: DeadRow) -> None:
    """Record, in the caller's transaction, that ``row`` went back to its table."""
    conn.execute(
        "UPDATE relay_dead_rows SET restored_at = now() WHERE outbox_table = %s AND outbox_id = %s",
        (row.outbox_table, row.outbox_id),
    )
