"""The timer's view of the due windows: which windows a pass takes, and in what order."""

from __future__ import annotations

from typing import Any

from streams.projectconfigs.debounce import DueWork
from streams.projectconfigs.duetable import DueTable

T0 = 1_700_000_000.0


class Table:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}


class Changelog:
    def send(self, partition: int, key: str, value: Any) -> None:
        return None


def window(project: int, due: float, partition: int) -> DueWork:
    return DueWork("project", 1, project, None, "test", due - 5.0, due, partition)


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
