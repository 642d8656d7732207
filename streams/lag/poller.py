"""One poll of the cluster turned into an immutable ``Snapshot`` of lag.

The poller owns the per-partition offset/time tables (they need history across
polls) and nothing else: the snapshot holds only what this poll read, so groups and
partitions that disappeared are simply not in it, and their series vanish.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from streams.lag.source import TP, OffsetSource, PartitionOffsets
from streams.lag.timelag import DEFAULT_CAPACITY, OffsetTimeTable


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int
    end: int
    lag: int
    # Estimated wall time the oldest unconsumed message was appended; None if caught up.
    appended_at: float | None

    def lag_seconds(self, now: float) -> float:
        """Age of the oldest unconsumed message at ``now``; 0 when caught up, never NaN."""
        if self.appended_at is None:
            return 0.0
        return max(0.0, now - self.appended_at)


@dataclass(frozen=True)
class GroupStatus:
    group: str
    state: str | None
    members: int | None


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    poll_seconds: float
    groups: tuple[GroupStatus, ...]
    partitions: tuple[PartitionLag, ...]
    offsets: Mapping[TP, PartitionOffsets]


EMPTY = Snapshot(0.0, 0.0, (), (), {})


class LagPoller:
    """Reads groups and offsets from ``source`` and computes lag per partition."""

    def __init__(
        self,
        source: OffsetSource,
        groups: str | re.Pattern[str] = ".*",
        *,
        clock: Callable[[], float] = time.time,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self.source = source
        self.pattern = re.compile(groups) if isinstance(groups, str) else groups
        self.clock = clock
        self.capacity = capacity
        self._tables: dict[TP, OffsetTimeTable] = {}

    def poll(self) -> Snapshot:
        started = time.perf_counter()
        readings = self.source.read_groups(self.pattern)
        wanted = {tp for r in readings for tp in r.committed}
        offsets = self.source.read_offsets(wanted)
        # The ends were read just now: stamp the table points after the read.
        now = self.clock()
        for tp, off in offsets.items():
            table = self._tables.get(tp)
            if table is None:
                table = self._tables[tp] = OffsetTimeTable(self.capacity)
            table.add(off.end, now)
        for tp in set(self._tables) - set(offsets):
            del self._tables[tp]
        partitions: list[PartitionLag] = []
        for r in readings:
            for (topic, partition), committed in sorted(r.committed.items()):
                ends = offsets.get((topic, partition))
                if ends is None:
                    continue  # topic deleted while the group still has offsets on it
                lag = max(0, ends.end - committed)
                appended = self._tables[(topic, partition)].appended_at(committed) if lag else None
                partitions.append(
                    PartitionLag(r.group, topic, partition, committed, ends.end, lag, appended)
                )
        return Snapshot(
            taken_at=now,
            poll_seconds=time.perf_counter() - started,
            groups=tuple(GroupStatus(r.group, r.state, r.members) for r in readings),
            partitions=tuple(partitions),
            offsets=dict(offsets),
        )
