"""Held windows (the direct consumer): where a partition's requests are needed from is
in the holds topic, and a next owner starts there. Unit level: the request handler
and the timer's removal against an in-memory changelog; the kill -9 and handover tests
in test_invalidation.py run it on the real broker."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from streams.agents.base import Message
from streams.agents.invalidation import Invalidation, hold_key, split_holds
from streams.projectconfigs.debounce import DueWork
from streams.projectconfigs.duetable import DueTable
from streams.projectconfigs.scopes import Scope, ScopeKind, request_value

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


class Table:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}


class Changelog:
    """The due changelog as a list of records; ``flush`` counts the waits."""

    topic = "due-changelog"

    def __init__(self) -> None:
        self.records: list[tuple[int, Any, Any]] = []
        self.flushes = 0

    def send(self, partition: int, key: str, value: Any) -> None:
        self.records.append((partition, key, value))

    async def flush(self) -> None:
        self.flushes += 1


class Runtime:
    def topic(self, name: str) -> str:
        return name


def request(partition: int, offset: int, project: int, at: float) -> Message:
    scope = Scope(ScopeKind.PROJECT, 1, project)
    value = request_value(
        scope, trigger="test", countdown=5.0, requested_at=T0 + dt.timedelta(seconds=at)
    )
    return Message("project-config-invalidations", partition, offset, b"1", value, b"", {}, 0.0)


def invalidation() -> tuple[Invalidation, Changelog]:
    """The agent, and its holds topic (its due changelog must get nothing)."""
    changelog, held = Changelog(), Changelog()
    state = DueTable(Table(), changelog, entries=False)
    inv = Invalidation(None, Runtime(), state, changelog, None, holds=held)  # type: ignore[arg-type]
    return inv, held


def holds(changelog: Changelog) -> dict[int, int]:
    return split_holds(changelog.records)[0]


def test_a_partitions_first_hold_is_waited_for_and_later_ones_only_move_it_forward() -> None:
    inv, changelog = invalidation()
    # Offsets 0-3 of partition 2: two windows (projects 7 and 8), two skipped requests.
    batch = [request(2, 0, 7, 0.0), request(2, 1, 7, 1.0), request(2, 2, 8, 1.5)]
    asyncio.run(inv.handle_batch(batch))
    assert holds(changelog) == {2: 0} and changelog.flushes == 1
    assert all(key == hold_key(2) for _, key, _ in changelog.records)  # nothing per window
    assert inv.changelog.records == []  # type: ignore[attr-defined]
    asyncio.run(inv.handle_batch([request(2, 3, 7, 2.0)]))
    assert changelog.flushes == 1  # a record exists: a new one would only be later
    first, second = sorted(inv.state.take({2: float("inf")}), key=lambda w: w.project_id or 0)
    inv.state.start([first])
    inv.state.remove([first])
    inv._write_holds()  # as the timer does once a batch is published
    assert holds(changelog) == {2: 2}  # project 8's request is the oldest still needed
    inv.state.start([second])
    inv.state.remove([second])
    inv._write_holds()
    # Nothing pending: needed from after the last decided request (never a tombstone,
    # so a record that lands late can only make a next owner read more).
    assert holds(changelog) == {2: 4}
    assert None not in [value for _, _, value in changelog.records]


def test_a_next_owner_starts_at_the_hold_it_reads_and_drops_no_window_entry() -> None:
    old = DueWork("project", 1, 9, None, "test", 0.0, 5.0, 3)
    records: list[tuple[int, Any, Any]] = [
        (3, hold_key(3), 10),
        (3, "windows:3:ab", [list(old)]),  # an entry an older version wrote
        (3, hold_key(3), 12),
        (1, hold_key(1), 4),
    ]
    inv, _ = invalidation()
    needed = asyncio.run(inv.adopt([1, 3], records))
    assert needed == {1: 4, 3: 12}
    assert [w.project_id for w in inv.state.take({3: float("inf")})] == [9]
    assert hold_key(3) not in inv.state.table.data
