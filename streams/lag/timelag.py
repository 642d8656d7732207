"""Time lag from offset lag: a per-partition table of (end offset, wall time) points.

Each poll adds one point: the partition's true end offset and when it was seen. The
time at which the oldest unconsumed message (offset ``c``) was appended is estimated
by linear interpolation between the last point whose end was still ``<= c`` and the
first point whose end passed ``c`` (the approach kafka-lag-exporter made popular).
Before the oldest point the table's average rate is extrapolated; with no rate at all
(one point, or an idle partition) the oldest point's time is used, which is a lower
bound of the real lag. So a partition with offset lag always has a finite time lag,
and a caught-up one has 0: never NaN.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

DEFAULT_CAPACITY = 120  # 10 minutes of history at the default 5 s interval


@dataclass(frozen=True)
class Point:
    offset: int
    time: float


class OffsetTimeTable:
    """The (end offset, time) history of one partition, oldest first, bounded in size."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 2:
            raise ValueError("an offset/time table needs room for at least 2 points")
        self.capacity = capacity
        self._points: list[Point] = []

    def __len__(self) -> int:
        return len(self._points)

    @property
    def points(self) -> tuple[Point, ...]:
        return tuple(self._points)

    def add(self, offset: int, at: float) -> None:
        """Record that the partition ended at ``offset`` at wall time ``at``."""
        pts = self._points
        if pts and offset < pts[-1].offset:
            # The end moved backwards: the partition was recreated; old points lie.
            pts.clear()
        if pts and at <= pts[-1].time:
            return  # clock stepped back or a duplicate poll: keep times increasing
        if len(pts) >= 2 and pts[-2].offset == pts[-1].offset == offset:
            # Idle partition: keep only the first and the latest point of a flat run,
            # so the table covers a long idle stretch with two points. The latest one
            # is the lower anchor for the next message appended.
            pts[-1] = Point(offset, at)
            return
        pts.append(Point(offset, at))
        if len(pts) > self.capacity:
            del pts[0]

    def appended_at(self, offset: int) -> float | None:
        """Estimated wall time message ``offset`` was appended; None if not yet appended."""
        pts = self._points
        if not pts or offset >= pts[-1].offset:
            return None
        # First point whose end passed ``offset`` (the message existed then).
        i = bisect_right([p.offset for p in pts], offset)
        if i == 0:
            return self._extrapolate(offset)
        lo, hi = pts[i - 1], pts[i]
        # lo.offset <= offset < hi.offset, so the span is never zero.
        return lo.time + (offset - lo.offset) * (hi.time - lo.time) / (hi.offset - lo.offset)

    def _extrapolate(self, offset: int) -> float:
        first, last = self._points[0], self._points[-1]
        span = last.offset - first.offset
        if span <= 0 or last.time <= first.time:
            return first.time  # no rate known: a lower bound of the real age
        rate = span / (last.time - first.time)  # messages per second
        return first.time - (first.offset - offset) / rate

    def lag_seconds(self, committed: int, now: float) -> float:
        """Seconds the oldest unconsumed message has waited; 0 when caught up."""
        appended = self.appended_at(committed)
        if appended is None:
            return 0.0
        return max(0.0, now - appended)
