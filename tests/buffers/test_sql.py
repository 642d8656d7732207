"""SQL comes from the allow-list only; values are always parameters."""

from __future__ import annotations

import datetime as dt

import psycopg

from streams.buffers import sql as q
from streams.buffers.models import MODELS, check_increment
from streams.buffers.window import RowSums

SPEC = MODELS["issue_group"]


def row(**extra: object) -> RowSums:
    sums = RowSums(SPEC, (("id", 7),), False)
    sums.add(
        check_increment("issue_group", {"times_seen": 3}, {"id": 7}, extra, event_time_ms=5), 0
    )
    return sums


def render(stmt: psycopg.sql.Composable) -> str:
    # as_string without a connection quotes identifiers the standard way
    return stmt.as_string(None)


def test_update_adds_counters_sets_extra_and_keeps_monotonic_columns_from_moving_back() -> None:
    r = row(last_seen=dt.datetime(2025, 1, 1, tzinfo=dt.UTC), level="error")
    shape = q.shape_of(r)
    assert shape == (("times_seen",), ("last_seen", "level"))
    assert render(q.update_statement(SPEC, shape)) == (
        'UPDATE "issue_group" SET "times_seen" = "times_seen" + %s, '
        '"last_seen" = GREATEST("last_seen", %s), "level" = %s WHERE "id" = %s RETURNING 1'
    )
    assert q.update_params(r, shape) == (
        3,
        dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        "error",
        7,
    )


def test_hostile_text_from_a_message_is_a_parameter_never_sql() -> None:
    hostile = "x'; DROP TABLE issue_group; --"
    r = row(culprit=hostile)
    shape = q.shape_of(r)
    assert hostile not in render(q.update_statement(SPEC, shape))
    assert hostile in q.update_params(r, shape)


def test_identifiers_come_from_the_spec_even_if_a_row_holds_other_names() -> None:
    r = row()
    r.columns["title = 'pwned', times_seen"] = 1  # cannot pass check_increment; belt and braces
    shape = q.shape_of(r)
    assert shape == (("times_seen",), ())
    assert "pwned" not in render(q.update_statement(SPEC, shape))


def test_a_bulk_update_writes_every_row_of_a_column_set_from_arrays() -> None:
    r = row(last_seen=dt.datetime(2025, 1, 1, tzinfo=dt.UTC), level="error")
    other = row(last_seen=dt.datetime(2025, 1, 2, tzinfo=dt.UTC), level="x'; DROP TABLE t; --")
    other.filters = (("id", 8),)
    shape = q.shape_of(r)
    text = render(q.bulk_update_statement(SPEC, shape))
    assert text == (
        'UPDATE "issue_group" AS t SET "times_seen" = t."times_seen" + v."c0", '
        '"last_seen" = GREATEST(t."last_seen", v."e0"), "level" = v."e1" '
        "FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::bigint[]) "
        'AS v("c0", "e0", "e1", "f0") WHERE t."id" = v."f0" RETURNING v."f0"'
    )
    assert "DROP" not in text
    assert q.bulk_params([r, other], shape) == (
        [3, 3],
        [dt.datetime(2025, 1, 1, tzinfo=dt.UTC), dt.datetime(2025, 1, 2, tzinfo=dt.UTC)],
        ["error", "x'; DROP TABLE t; --"],
        [7, 8],
    )


def test_the_same_row_twice_goes_into_two_batches_never_one() -> None:
    a, b, a_again = row(), row(), row()
    b.filters = (("id", 8),)
    assert q.bulk_batches([a, b, a_again]) == [[a, b], [a_again]]
