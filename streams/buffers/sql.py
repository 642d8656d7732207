"""SQL for buffered increments, built only from allow-list entries.

Identifiers come from ``ModelSpec`` (code), quoted by ``psycopg.sql.Identifier``;
a row's summed values, ``extra`` values and filter values are always parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from psycopg import sql

from streams.buffers.models import Kind, ModelSpec, sql_value
from streams.buffers.window import RowSums

# (counter columns, extra columns) present in a row, in allow-list order.
Shape = tuple[tuple[str, ...], tuple[str, ...]]


@functools.lru_cache(maxsize=64)
def _counters(spec: ModelSpec) -> tuple[str, ...]:
    return tuple(sorted(spec.counters))


def shape_of(row: RowSums) -> Shape:
    # Iterate the spec, not the row: only allow-listed names can ever reach SQL.
    spec = row.model
    counters = tuple(c for c in _counters(spec) if c in row.columns)
    extras = tuple(e for e in spec.extra if e in row.extra)
    return counters, extras


@functools.lru_cache(maxsize=256)
def update_statement(spec: ModelSpec, shape: Shape) -> sql.Composed:
    """``UPDATE <table> SET c = c + %s, ... WHERE <filters> RETURNING 1`` for one shape."""
    counters, extras = shape
    sets: list[sql.Composable] = [
        sql.SQL("{c} = {c} + %s").format(c=sql.Identifier(c)) for c in counters
    ]
    for name in extras:
        col = sql.Identifier(name)
        if spec.extra[name].monotonic:
            sets.append(sql.SQL("{c} = GREATEST({c}, %s)").format(c=col))
        else:
            sets.append(sql.SQL("{c} = %s").format(c=col))
    where = sql.SQL(" AND ").join(
        sql.SQL("{f} = %s").format(f=sql.Identifier(f)) for f in spec.filters
    )
    return sql.SQL("UPDATE {table} SET {sets} WHERE {where} RETURNING 1").format(
        table=sql.Identifier(spec.table), sets=sql.SQL(", ").join(sets), where=where
    )


def _array_type(kind: Kind) -> sql.SQL:
    # Kind values are fixed SQL type names from code (models.Kind), never from a message.
    return sql.SQL(kind.value + "[]")


@functools.lru_cache(maxsize=256)
def bulk_update_statement(spec: ModelSpec, shape: Shape) -> sql.Composed:
    """One ``UPDATE <table> ... FROM unnest(<one array per column>)`` for every row of a
    shape: counters added, extras set (monotonic ones by GREATEST), matched on all the
    filters; returns the filter values of the rows it found (the others are missing).

    The arrays must not hold the same filter values twice: PostgreSQL would apply only
    one of the two (``bulk_batches`` splits them)."""
    counters, extras = shape
    filters = list(spec.filters.items())
    cols: list[tuple[str, Kind]] = [(c, Kind.BIGINT) for c in counters]
    cols += [(e, spec.extra[e].kind) for e in extras]
    aliases = [sql.Identifier(f"c{i}") for i in range(len(counters))]
    aliases += [sql.Identifier(f"e{i}") for i in range(len(extras))]
    faliases = [sql.Identifier(f"f{i}") for i in range(len(filters))]
    sets: list[sql.Composable] = [
        sql.SQL("{c} = t.{c} + v.{a}").format(c=sql.Identifier(c), a=a)
        for c, a in zip(counters, aliases, strict=False)
    ]
    for name, alias in zip(extras, aliases[len(counters) :], strict=True):
        col = sql.Identifier(name)
        if spec.extra[name].monotonic:
            sets.append(sql.SQL("{c} = GREATEST(t.{c}, v.{a})").format(c=col, a=alias))
        else:
            sets.append(sql.SQL("{c} = v.{a}").format(c=col, a=alias))
    arrays = [
        sql.SQL("%s::{t}").format(t=_array_type(kind))
        for kind in [k for _, k in cols] + [k for _, k in filters]
    ]
    where = sql.SQL(" AND ").join(
        sql.SQL("t.{f} = v.{a}").format(f=sql.Identifier(f), a=a)
        for (f, _), a in zip(filters, faliases, strict=True)
    )
    return sql.SQL(
        "UPDATE {table} AS t SET {sets} FROM unnest({arrays}) AS v({aliases}) "
        "WHERE {where} RETURNING {returning}"
    ).format(
        table=sql.Identifier(spec.table),
        sets=sql.SQL(", ").join(sets),
        arrays=sql.SQL(", ").join(arrays),
        aliases=sql.SQL(", ").join(aliases + faliases),
        where=where,
        returning=sql.SQL(", ").join(sql.SQL("v.{a}").format(a=a) for a in faliases),
    )


def bulk_params(rows: Sequence[RowSums], shape: Shape) -> tuple[list[Any], ...]:
    """The column arrays of ``bulk_update_statement`` for ``rows`` (all of ``shape``)."""
    counters, extras = shape
    arrays: list[list[Any]] = [[r.columns[c] for r in rows] for c in counters]
    arrays += [[sql_value(r.model, e, r.extra[e][1]) for r in rows] for e in extras]
    width = len(rows[0].filters) if rows else 0
    arrays += [[r.filters[i][1] for r in rows] for i in range(width)]
    return tuple(arrays)


def bulk_batches(rows: Sequence[RowSums]) -> list[list[RowSums]]:
    """``rows`` in as few batches as keep each batch's filter values distinct (a row
    can reach one flush from two partitions when a producer wrote the topic with its
    own keys); in the normal case, one batch."""
    batches: list[list[RowSums]] = []
    seen: list[set[tuple[Any, ...]]] = []
    for row in rows:
        values = tuple(v for _, v in row.filters)
        i = next((i for i, keys in enumerate(seen) if values not in keys), len(batches))
        if i == len(batches):
            batches.append([])
            seen.append(set())
        batches[i].append(row)
        seen[i].add(values)
    return batches


def update_params(row: RowSums, shape: Shape) -> tuple[Any, ...]:
    counters, extras = shape
    values: list[Any] = [row.columns[c] for c in counters]
    values += [sql_value(row.model, e, row.extra[e][1]) for e in extras]
    values += [v for _, v in row.filters]
    return tuple(values)


MARKS_LOAD = sql.SQL(
    "SELECT partition, next_offset, last_timestamp_ms FROM buffer_flush_marks "
    "WHERE consumer_group = %s AND topic = %s AND partition = ANY(%s)"
)

# A mark found beyond its partition's end (a new log) goes back to 0, once: the
# compare-and-set on the voided value keeps a second worker from voiding a new mark.
MARK_VOID = sql.SQL(
    """UPDATE buffer_flush_marks
          SET prev_offset = 0, next_offset = 0, last_timestamp_ms = NULL, resets = resets + 1,
              reset_from = next_offset, reset_log_end = %s, reset_at = now(),
              updated_at = now()
        WHERE consumer_group = %s AND topic = %s AND partition = %s AND next_offset = %s"""
)

# Compare-and-set of every partition's mark in one statement: a partition is returned
# only if its stored mark is still the one its window started from (or it has none
# and the window starts at 0). The row lock it takes is held until commit, so two
# workers can never both apply the same offsets.
MARKS_ADVANCE = sql.SQL(
    """INSERT INTO buffer_flush_marks AS m
           (consumer_group, topic, partition, prev_offset, next_offset, flushes, increments,
            last_timestamp_ms)
       SELECT %s, %s, t.p, t.prev, t.next, 1, t.n, t.ts
         FROM unnest(%s::int[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
              AS t(p, prev, next, n, ts)
        WHERE t.prev = 0 OR EXISTS (
              SELECT 1 FROM buffer_flush_marks x
               WHERE x.consumer_group = %s AND x.topic = %s AND x.partition = t.p)
       ON CONFLICT (consumer_group, topic, partition) DO UPDATE
          SET prev_offset = EXCLUDED.prev_offset,
              next_offset = EXCLUDED.next_offset,
              flushes = m.flushes + 1,
              increments = m.increments + EXCLUDED.increments,
              last_timestamp_ms = EXCLUDED.last_timestamp_ms,
              updated_at = now()
        WHERE m.next_offset = EXCLUDED.prev_offset
       RETURNING partition"""
)

PARK = sql.SQL(
    """INSERT INTO buffer_parked
           (model, filters, columns, extra, increments, reason, source_topic,
            source_partition, first_offset, last_offset)
       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"""
)
