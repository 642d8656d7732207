"""Offset gaps in a fetched partition: read again before anything past them is handled.

The embedded broker (Tansu, memory engine) can answer a fetch at offset N with a later
batch while the batch at N, appended by another producer a moment before, is not yet
visible; librdkafka then moves its position past N, and the records between are never
handed out (docs/broker.md #11). On a non-compacted topic
streams' idempotent, non-transactional producers leave no gaps, so a record whose
offset is beyond the next expected one means records the consumer has not seen.

``Gaps.screen`` keeps a batch's records up to such a gap and asks for the partition to
be read again from the expected offset; the records past the gap come again with it.
A gap still there after ``patience`` seconds is accepted and reported: on Apache Kafka
a transactional producer upstream leaves commit markers and aborted records that no
fetch returns, and a consumer must not stall on them for ever.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

# Long enough for a batch appended a moment earlier to become visible (on the benchmark
# machine a fetch issued right after the skipping one returned it); short enough that a
# legitimate gap (see the module docstring) delays its partition by about this much once.
PATIENCE = 2.0


class Positioned(Protocol):
    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


E = TypeVar("E", bound="Positioned")


@dataclass(frozen=True)
class Gap:
    partition: int
    expected: int  # the first offset not returned
    got: int  # the offset the fetch returned instead


@dataclass
class Screened(Generic[E]):
    kept: list[E] = field(default_factory=list)
    seeks: dict[int, int] = field(default_factory=dict)  # partition -> offset to read again
    refetched: list[Gap] = field(default_factory=list)  # gaps a later fetch filled
    accepted: list[Gap] = field(default_factory=list)  # gaps given up on after patience


class Gaps:
    """The next expected offset of each partition, and the gaps being read again."""

    def __init__(
        self, patience: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.patience = PATIENCE if patience is None else patience
        self._clock = clock
        self._next: dict[int, int] = {}
        self._open: dict[int, tuple[Gap, float]] = {}  # partition -> (gap, first seen)

    def expect(self, partition: int, offset: int) -> None:
        """The partition is (re)positioned at ``offset``: assignment, seek or rewind."""
        self._next[partition] = offset

    def forget(self, partition: int) -> None:
        """The partition is no longer ours: its next owner checks it."""
        self._next.pop(partition, None)
        self._open.pop(partition, None)

    def screen(self, records: Sequence[E]) -> Screened[E]:
        """The records to handle now; a partition with a gap stops at it and is re-read."""
        out: Screened[E] = Screened()
        now = self._clock()
        for r in records:
            p, offset = r.partition, r.offset
            if p in out.seeks:
                continue  # past a gap in this batch: it comes again after the seek
            expected = self._next.get(p)
            opened = self._open.get(p)
            if expected is not None and offset > expected:
                gap = Gap(p, expected, offset)
                first_seen = opened[1] if opened and opened[0].expected == expected else now
                if now - first_seen < self.patience:
                    self._open[p] = (gap, first_seen)
                    out.seeks[p] = expected
                    continue
                out.accepted.append(gap)
                self._open.pop(p, None)
            elif opened is not None and offset == opened[0].expected:
                out.refetched.append(opened[0])
                self._open.pop(p, None)
            self._next[p] = offset + 1
            out.kept.append(r)
        return out
