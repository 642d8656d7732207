"""Coalescing, routing and range splitting: pure logic, no broker."""

from __future__ import annotations

import datetime as dt

import pytest

from streams.outbox.categories import CONTROL_OUTBOX, REGION_OUTBOX, OutboxError
from streams.relay.claim import next_backoff, split
from streams.relay.messages import Row, coalesce, outbound

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def row(i: int, obj: int, category: str = "organization_update", shard: int = 1) -> Row:
    return Row(i, "organization_scope", shard, category, obj, None, None, False, T0, T0)


def test_only_the_newest_row_of_an_object_is_kept_at_its_own_place() -> None:
    rows = [row(1, 10), row(2, 11), row(3, 10), row(4, 12), row(5, 10)]
    groups = coalesce(rows)
    assert [g.row.id for g in groups] == [2, 4, 5]
    assert [g.covers for g in groups] == [[2], [4], [1, 3, 5]]
    assert sum(g.coalesced for g in groups) == 2


def test_same_object_in_other_shards_or_categories_does_not_coalesce() -> None:
    rows = [row(1, 10), row(2, 10, shard=2), row(3, 10, "project_update")]
    assert [g.row.id for g in coalesce(rows)] == [1, 2, 3]


def test_event_categories_are_never_coalesced() -> None:
    rows = [row(1, 5, "issue_change"), row(2, 5, "issue_change")]
    assert [g.covers for g in coalesce(rows)] == [[1], [2]]


def test_rows_route_by_category() -> None:
    assert outbound(row(1, 1), REGION_OUTBOX).topic == "outbox.region"
    assert outbound(row(1, 1), CONTROL_OUTBOX).topic == "outbox.control"
    assert outbound(row(1, 1), REGION_OUTBOX).key == "organization_scope:1"
    change = Row(
        1, "organization_scope", 8, "issue_change", 5, '{"action": "created"}', None, False, T0, T0
    )
    out = outbound(change, REGION_OUTBOX)
    assert (out.topic, out.key, out.value["sender"]) == ("resource-changes", "8", "Group")
    with pytest.raises(OutboxError):
        outbound(row(1, 1, "mystery"), REGION_OUTBOX)
    with pytest.raises(OutboxError, match="scope"):
        outbound(
            Row(1, "user_scope", 1, "project_update", 1, None, None, False, T0, T0), REGION_OUTBOX
        )


def test_id_ranges_cover_every_id_once() -> None:
    assert split(1, 10, 4) == [(1, 3), (4, 6), (7, 9), (10, 10)]
    assert split(5, 5, 4) == [(5, 5)]
    assert split(1, 2, 4) == [(1, 1), (2, 2)]
    assert split(1, 2_500, 4, min_size=1_000) == [(1, 1_250), (1_251, 2_500)]
    assert split(1, 10, 4, min_size=1_000) == [(1, 10)]
    ranges = split(17, 1_003, 4)
    covered = [i for lo, hi in ranges for i in range(lo, hi + 1)]
    assert covered == list(range(17, 1_004))


def test_backoff_doubles_from_one_second_and_caps_at_an_hour() -> None:
    steps = [dt.timedelta(0)]
    for _ in range(14):
        steps.append(next_backoff(steps[-1]))
    seconds = [s.total_seconds() for s in steps[1:]]
    assert seconds[:5] == [1, 2, 4, 8, 16]
    assert seconds[-1] == 3600
