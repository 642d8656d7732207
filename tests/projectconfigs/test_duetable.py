"""The timer's view of the due windows: which windows a pass takes, and in what order."""

from __future__ import annotations

import json
from typing import Any

from streams.projectconfigs.debounce import DueWork, record_json
from streams.projectconfigs.duetable import DueTable

T0 = 1_700_000_000.0


class Table:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}


class Changelog:
    """The records a real changelog would get, in order."""

    def __init__(self) -> None:
        self.records: list[tuple[int, str, Any]] = []

    def send(self, partition: int, key: str, value: Any) -> None:
        self.records.append((partition, key, value))

    def replayed(self) -> dict[str, Any]:
        """The table a recovering worker reads back (JSON, as the changelog holds it)."""
        data: dict[str, Any] = {}
        for _, key, value in self.records:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = json.loads(record_json(value))
        return data


def window(project: int, due: float, partition: int) -> DueWork:
    """A window as ``offer`` makes it (and the due table hands it out): with its key."""
    work = DueWork("project", 1, project, None, "test", due - 5.0, due, partition)
    return work._replace(ident=work.key)


def test_a_pass_takes_the_earliest_windows_across_partitions_not_partition_by_partition() -> None:
    """Under a backlog, a busy low partition must not starve the others."""
    due = DueTable(Table(), Changelog())
    for n in range(3_000):  # partition 0: a backlog of windows, due over 3 s
        due.add_due(window(n, T0 + n / 1000, 0))
    due.add_due(window(90_000, T0 + 0.5, 3))  # partition 3: one window, due at 0.5 s
    taken = [w for _, w in zip(range(1_000), due.take({0: T0 + 10, 3: T0 + 10}), strict=False)]
    assert window(90_000, T0 + 0.5, 3) in taken
    assert [w.due for w in taken] == sorted(w.due for w in taken)
    assert max(w.due for w in taken) < T0 + 1.0  # the earliest thousand, nothing later


def test_what_a_pass_does_not_take_stays_queued_and_horizons_hold_windows_back() -> None:
    due = DueTable(Table(), Changelog())
    for n in range(10):
        due.add_due(window(n, T0 + n, n % 2))
    first = [w for _, w in zip(range(3), due.take({0: T0 + 100, 1: T0 + 100}), strict=False)]
    assert [w.project_id for w in first] == [0, 1, 2]
    # Partition 1's requests are not all read past T0 + 5: its later windows wait.
    rest = list(due.take({0: T0 + 100, 1: T0 + 5}))
    assert [w.project_id for w in rest] == [3, 4, 5, 6, 8]
    assert [w.project_id for w in due.take({0: T0 + 100, 1: T0 + 100})] == [7, 9]


def recovered(changelog: Changelog) -> DueTable:
    table = Table()
    table.data = changelog.replayed()
    due = DueTable(table, Changelog())
    due.rebuild()
    return due


def test_a_batch_writes_one_entry_per_partition_and_its_tombstone_after_the_last_window() -> None:
    changelog = Changelog()
    due = DueTable(Table(), changelog)
    works = [window(n, T0 + n, n % 2) for n in range(6)]
    for w in works:
        due.add_due(w)
    due.seal()
    assert [(p, len(v)) for p, _, v in changelog.records] == [(0, 3), (1, 3)]
    due.start(works[:5])
    due.remove(works[:5])  # partition 0 is done; one window of partition 1 is left
    entries = [(p, v is None) for p, _, v in changelog.records]
    assert entries == [(0, False), (1, False), (0, True)]
    # What a crash now leaves: partition 1's whole entry comes back, nothing of partition 0.
    back = recovered(changelog).take({0: T0 + 99, 1: T0 + 99})
    assert [w.project_id for w in back] == [1, 3, 5]
    due.remove(works[5:])
    assert recovered(changelog).windows == {}


def test_a_handed_over_partition_rewrites_its_partly_done_entries_without_the_published() -> None:
    changelog = Changelog()
    due = DueTable(Table(), changelog)
    works = [window(n, T0 + n, 0) for n in range(4)]
    for w in works:
        due.add_due(w)
    due.seal()
    due.start(works[:1])
    due.remove(works[:1])
    due.rewrite({0})
    due.drop({0})
    assert due.windows == {} and due.table.data == {}
    taken = recovered(changelog).take({0: T0 + 99})
    assert [w.project_id for w in taken] == [1, 2, 3]  # project 0 was published


def test_windows_an_older_version_wrote_one_by_one_are_read_and_deleted_one_by_one() -> None:
    old = window(7, T0 + 1, 2)
    changelog = Changelog()
    table = Table()
    table.data = {old.key: old.to_json()}  # as the changelog of 0.1.0 holds a window
    due = DueTable(table, changelog)
    due.rebuild()
    assert list(due.take({2: T0 + 99})) == [old]
    due.start([old])
    due.remove([old])
    assert changelog.records == [(2, old.key, None)]  # its own key's tombstone


def test_the_same_window_opened_again_moves_to_the_newer_entry() -> None:
    """A window opened twice (a replayed request read after a restart): the older entry
    is deleted once its other windows are gone, the newer one holds the window."""
    changelog = Changelog()
    due = DueTable(Table(), changelog)
    a, b = window(1, T0 + 1, 0), window(2, T0 + 2, 0)
    due.add_due(a)
    due.add_due(b)
    due.seal()
    due.add_due(a)  # the same key
    due.seal()
    due.start([b])
    due.remove([b])  # the first entry has no window of its own left
    assert [v is None for _, _, v in changelog.records] == [False, False, True]
    assert list(recovered(changelog).take({0: T0 + 99})) == [a]


def held_table() -> tuple[DueTable, Changelog]:
    changelog = Changelog()
    return DueTable(Table(), changelog, entries=False), changelog


def test_held_windows_hold_their_oldest_request_and_write_nothing() -> None:
    """Held (the direct consumer): a partition's requests are committed only up to the
    request of its oldest unpublished window; nothing goes to the changelog."""
    due, changelog = held_table()
    works = [window(n, T0 + n, n % 2) for n in range(6)]
    for offset, w in enumerate(works):
        due.add_due(w)
        due.opened(100 + offset)  # partition 0: 100, 102, 104; partition 1: 101, 103, 105
    due.seal()
    assert changelog.records == [] and due.table.data == {}
    assert due.holds() == {0: 100, 1: 101}
    due.start(works[:1])  # running: still held (a crash now runs it again)
    assert due.holds() == {0: 100, 1: 101}
    due.remove([works[0], works[5]])  # partition 1's latest first: 101 still holds it
    assert due.holds() == {0: 102, 1: 101}
    due.remove([works[1]])
    assert due.holds() == {0: 102, 1: 103}
    due.remove([works[2], works[3], works[4]])
    assert due.holds() == {}
    assert changelog.records == []


def test_held_windows_survive_a_rebuild_but_not_their_partitions_going() -> None:
    """An incremental assignment rebuilds the index: the held windows of partitions still
    owned stay (their requests are not committed), those of partitions let go are
    dropped (the next owner reads their requests again)."""
    due, _ = held_table()
    works = [window(n, T0 + n, n % 2) for n in range(4)]
    for offset, w in enumerate(works):
        due.add_due(w)
        due.opened(offset)
    due.rebuild()
    assert sorted(w.project_id or 0 for w in due.take({0: T0 + 99, 1: T0 + 99})) == [0, 1, 2, 3]
    assert due.holds() == {0: 0, 1: 1}
    due.drop({1})
    assert due.holds() == {0: 0}
    assert [w.project_id for w in due.take({0: T0 + 99, 1: T0 + 99})] == [0, 2]
    assert due.pending_due(works[1].scope_key) is None  # no longer covers a request


def test_a_held_table_still_deletes_the_entries_an_older_version_left() -> None:
    """After an upgrade the changelog may hold entries: read, run, then tombstoned."""
    old = window(7, T0 + 1, 2)
    changelog = Changelog()
    table = Table()
    table.data = {"windows:2:ab": (old[:8],)}
    due = DueTable(table, changelog, entries=False)
    due.rebuild()
    assert list(due.take({2: T0 + 99})) == [old]
    assert due.holds() == {}  # its requests were committed by the older version
    due.start([old])
    due.remove([old])
    assert changelog.records == [(2, "windows:2:ab", None)]
