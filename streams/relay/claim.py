"""The relay's SQL: id bounds, shard claims, deletes, backoff, backlog statistics.

A shard is claimed by locking its head (its lowest-id row) ``FOR UPDATE SKIP LOCKED``:
whoever holds the head drains the shard, everyone else skips it, so no shard is drained
by two relays (or two ranges of one relay) at the same time. The shard's other rows are
then locked ``FOR UPDATE`` (normally free; a late-committed row with a lower id can make
two claims overlap, and then the second waits and skips what the first deleted).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import args_row

from streams.outbox.categories import OutboxTable
from streams.relay.messages import Row, ShardKey

Conn = psycopg.Connection[Any]

MIN_BACKOFF = dt.timedelta(seconds=1)
MAX_BACKOFF = dt.timedelta(hours=1)


def _q(text: str, table: OutboxTable) -> sql.Composed:
    return sql.SQL(text).format(t=sql.Identifier(table.name))


def bounds(conn: Conn, table: OutboxTable) -> tuple[int, int] | None:
    """(min id, max id) of the table right now, or None when it is empty."""
    row = conn.execute(_q("SELECT min(id), max(id) FROM {t}", table)).fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


def split(lo: int, hi: int, parts: int, min_size: int = 1) -> list[tuple[int, int]]:
    """Split [lo, hi] into at most ``parts`` contiguous ranges of at least ``min_size`` ids.

    Ranges smaller than a batch would only cut shards (and coalescing groups) into
    pieces without adding any parallel work.
    """
    total = hi - lo + 1
    parts = max(1, min(parts, total // max(1, min_size)))
    size = -(-total // parts)
    return [(start, min(hi, start + size - 1)) for start in range(lo, hi + 1, size)]


@dataclass(frozen=True)
class Scan:
    shards: dict[ShardKey, int]  # each shard with due rows -> its first id scanned
    last_id: int | None  # highest id scanned (None: nothing due in the range)


# (index, count): the shards whose identifier is ``index`` modulo ``count``. Parts are
# disjoint sets of whole shards, so parts drained at once keep each shard's order, and
# they share the work even when every shard has rows all over the id range.
Part = tuple[int, int]
WHOLE: Part = (0, 1)


def parts(lo: int, hi: int, concurrency: int, min_size: int = 1) -> list[Part]:
    """Up to ``concurrency`` parts for [lo, hi]: one per ``min_size`` ids (a batch), as
    a part smaller than a batch adds no parallel work."""
    n = len(split(lo, hi, concurrency, min_size))
    return [(k, n) for k in range(n)]


def scan(
    conn: Conn, table: OutboxTable, lo: int, hi: int, limit: int, *, part: Part = WHOLE
) -> Scan:
    """Shards of ``part`` with due rows in [lo, hi], from the lowest id on (at most
    ``limit`` rows). Grouped in the database: one row per shard crosses the wire."""
    index, count = part
    only = " AND ((shard_identifier %% %s) + %s) %% %s = %s" if count > 1 else ""
    args: tuple[int, ...] = (lo, hi, count, count, count, index) if count > 1 else (lo, hi)
    rows = conn.execute(
        _q(
            "WITH w AS (SELECT id, shard_scope, shard_identifier FROM {t}"
            f" WHERE id BETWEEN %s AND %s AND scheduled_for <= now(){only}"
            " ORDER BY id LIMIT %s)"
            " SELECT min(id), shard_scope, shard_identifier, (SELECT max(id) FROM w)"
            " FROM w GROUP BY shard_scope, shard_identifier ORDER BY 1",
            table,
        ),
        (*args, limit),
    ).fetchall()
    seen = {(str(scope), int(ident)): int(first) for first, scope, ident, _ in rows}
    return Scan(seen, int(rows[0][3]) if rows else None)


def _arrays(shards: Sequence[ShardKey]) -> tuple[list[str], list[int]]:
    return [s for s, _ in shards], [i for _, i in shards]


def lock_heads(conn: Conn, table: OutboxTable, first_ids: Sequence[int]) -> dict[ShardKey, int]:
    """Lock the head row of each due shard nobody else holds; returns shard -> head id.

    Shards are named by one of their rows (the first one the scan saw), so only bigint
    arrays cross the wire.
    """
    if not first_ids:
        return {}
    rows = conn.execute(
        _q(
            "SELECT t.id, t.shard_scope, t.shard_identifier FROM {t} t WHERE t.id IN ("
            "  SELECT h.id FROM unnest(%s::bigint[]) AS f(id) JOIN {t} s ON s.id = f.id"
            "  CROSS JOIN LATERAL (SELECT x.id FROM {t} x WHERE x.shard_scope = s.shard_scope"
            "    AND x.shard_identifier = s.shard_identifier ORDER BY x.id LIMIT 1) h"
            ") AND t.scheduled_for <= now() FOR UPDATE OF t SKIP LOCKED",
            table,
        ),
        (list(first_ids),),
    ).fetchall()
    return {(str(s), int(i)): int(head) for head, s, i in rows}


def fetch_rows(
    conn: Conn, table: OutboxTable, heads: Iterable[int], upto: int, limit: int
) -> list[Row]:
    """The claimed shards' rows up to id ``upto``, in id order (a prefix of each), locked.

    Rows above ``upto`` (the scan window) wait for the next batch, which keeps this a
    short index range per shard. Rows are built by the cursor (no tuple per row).
    """
    region = "t.region_name" if table.has_region else "NULL::text"
    with conn.cursor(binary=True, row_factory=args_row(Row)) as cur:
        # Binary: the relay's widest result, and binary rows parse faster (same values).
        return cur.execute(
            _q(
                "SELECT t.id, t.shard_scope, t.shard_identifier, t.category,"
                f" t.object_identifier, t.payload::text, {region}, t.backfill,"
                " t.scheduled_for, t.date_added"
                " FROM unnest(%s::bigint[]) AS h(id) JOIN {t} s ON s.id = h.id"
                " JOIN {t} t ON t.shard_scope = s.shard_scope"
                " AND t.shard_identifier = s.shard_identifier AND t.id <= %s"
                " ORDER BY t.id LIMIT %s FOR UPDATE OF t",
                table,
            ),
            (list(heads), upto, limit),
        ).fetchall()


def backoff_steps(
    conn: Conn, table: OutboxTable, heads: Iterable[int]
) -> dict[ShardKey, dt.timedelta]:
    """Each claimed shard's current backoff step (its head's scheduled_for -
    scheduled_from), from which a failure doubles; read only when a shard failed."""
    rows = conn.execute(
        _q(
            "SELECT shard_scope, shard_identifier, scheduled_for - scheduled_from"
            " FROM {t} WHERE id = ANY(%s::bigint[])",
            table,
        ),
        (list(heads),),
    ).fetchall()
    return {(str(s), int(i)): step for s, i, step in rows}


def id_array(ids: Iterable[int]) -> str:
    """A bigint[] literal: dumping thousands of ints as text is several times cheaper
    than psycopg's list dumper, which inspects every element."""
    return "{" + ",".join(map(str, ids)) + "}"


def delete(conn: Conn, table: OutboxTable, ids: Sequence[int]) -> int:
    if not ids:
        return 0
    cur = conn.execute(_q("DELETE FROM {t} WHERE id = ANY(%s::bigint[])", table), (id_array(ids),))
    return cur.rowcount


def next_backoff(step: dt.timedelta) -> dt.timedelta:
    """Doubling from 1 s, capped at 1 h."""
    return min(MAX_BACKOFF, max(MIN_BACKOFF, step * 2))


def reschedule(
    conn: Conn, table: OutboxTable, shards: dict[ShardKey, dt.timedelta]
) -> dict[ShardKey, dt.timedelta]:
    """Push every row of each failed shard back by its next backoff; returns the delays."""
    if not shards:
        return {}
    delays = {k: next_backoff(step) for k, step in shards.items()}
    keys = list(delays)
    scopes, idents = _arrays(keys)
    conn.execute(
        _q(
            "UPDATE {t} t SET scheduled_from = now(), scheduled_for = now() + c.delay"
            " FROM unnest(%s::text[], %s::bigint[], %s::interval[]) AS c(scope, ident, delay)"
            " WHERE t.shard_scope = c.scope AND t.shard_identifier = c.ident",
            table,
        ),
        (scopes, idents, [delays[k] for k in keys]),
    )
    return delays


def count_drained(conn: Conn, table: OutboxTable, slot: str, regular: int, backfilled: int) -> None:
    """Add to this minute's drained-row counts (the backfill budget reads them)."""
    conn.execute(
        "INSERT INTO outbox_drain_minutes AS m (minute, outbox_table, slot, regular_rows,"
        " backfill_rows) VALUES (date_trunc('minute', now()), %s, %s, %s, %s)"
        " ON CONFLICT (minute, outbox_table, slot) DO UPDATE SET"
        " regular_rows = m.regular_rows + EXCLUDED.regular_rows,"
        " backfill_rows = m.backfill_rows + EXCLUDED.backfill_rows",
        (table.name, slot, regular, backfilled),
    )


def forget_old_minutes(conn: Conn, keep: dt.timedelta = dt.timedelta(hours=1)) -> None:
    conn.execute("DELETE FROM outbox_drain_minutes WHERE minute < now() - %s", (keep,))


@dataclass(frozen=True)
class Backlog:
    queued: int
    oldest_seconds: float
    max_shard_depth: int


def backlog(conn: Conn, table: OutboxTable) -> Backlog:
    row = conn.execute(
        _q(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(date_added)), 0) FROM {t}",
            table,
        )
    ).fetchone()
    depth = conn.execute(
        _q(
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM {t}"
            " GROUP BY shard_scope, shard_identifier) s",
            table,
        )
    ).fetchone()
    assert row is not None and depth is not None
    return Backlog(int(row[0]), max(0.0, float(row[1])), int(depth[0]))
