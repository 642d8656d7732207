"""Flush windows: the increments of one partition since its last flush, summed per row.

A window also remembers the offset range it covers (``start`` = the flush mark it
continues from, ``next`` = one past the last offset taken in) and the consumed
messages whose acknowledgement waits for the flush: the source topic, read again
from the flush mark, is what rebuilds a window lost in a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from streams.buffers.models import FilterValue, Increment, ModelSpec, WireExtra

if TYPE_CHECKING:
    from streams.buffers.wire import PlainRows

RowId = tuple[str, tuple[tuple[str, FilterValue], ...], bool]  # model, filters, signal_only


@dataclass
class RowSums:
    """What one flush does to one row: summed counters, last ``extra`` values."""

    model: ModelSpec
    filters: tuple[tuple[str, FilterValue], ...]
    signal_only: bool
    columns: dict[str, int] = field(default_factory=dict)
    # column -> (event time ms, value): the latest event wins, monotonic columns the max.
    extra: dict[str, tuple[int, WireExtra]] = field(default_factory=dict)
    increments: int = 0
    first_offset: int = -1
    last_offset: int = -1

    @property
    def row_id(self) -> RowId:
        return (self.model.name, self.filters, self.signal_only)

    def add(self, inc: Increment, offset: int) -> None:
        for name, delta in inc.columns.items():
            self.columns[name] = self.columns.get(name, 0) + delta
        for name, value in inc.extra.items():
            self._set_extra(name, inc.event_time_ms, value)
        self.increments += inc.count
        if self.first_offset < 0:
            self.first_offset = offset
        self.last_offset = offset

    def absorb(self, newer: RowSums) -> None:
        """Fold a later window's sums for the same row into this one."""
        for name, delta in newer.columns.items():
            self.columns[name] = self.columns.get(name, 0) + delta
        for name, (at, value) in newer.extra.items():
            self._set_extra(name, at, value)
        self.increments += newer.increments
        if self.first_offset < 0:
            self.first_offset = newer.first_offset
        self.last_offset = max(self.last_offset, newer.last_offset)

    def _set_extra(self, name: str, at: int, value: WireExtra) -> None:
        current = self.extra.get(name)
        if current is None:
            self.extra[name] = (at, value)
        elif self.model.extra[name].monotonic:
            keep = value if _gt(value, current[1]) else current[1]
            self.extra[name] = (max(at, current[0]), keep)
        elif at >= current[0]:  # ties: the later offset wins
            self.extra[name] = (at, value)

    def extra_values(self) -> dict[str, WireExtra]:
        return {name: value for name, (_, value) in self.extra.items()}


def _gt(a: WireExtra, b: WireExtra) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a > b
    return str(a) > str(b)


@dataclass
class PartitionWindow:
    """The unflushed increments of one source partition."""

    partition: int
    start: int  # the flush mark (next offset to apply) this window continues from
    next: int  # one past the last offset taken in
    generation: int  # bumped when the partition is forgotten (revoked)
    closes_at: float | None = None  # wall clock; set by the first message
    rows: dict[RowId, RowSums] = field(default_factory=dict)
    held: list[object] = field(default_factory=list)  # acked once the flush commits
    increments: int = 0
    last_timestamp: int | None = None  # ms, of the record at ``next - 1`` (the mark's)

    def add(self, inc: Increment, offset: int) -> None:
        row_id: RowId = (inc.model.name, inc.filters, inc.signal_only)
        row = self.rows.get(row_id)
        if row is None:
            row = self.rows[row_id] = RowSums(inc.model, inc.filters, inc.signal_only)
        row.add(inc, offset)
        self.increments += inc.count

    def add_plain(self, plain: PlainRows, offset: int) -> None:
        """Sum rows read column by column (no ``extra``), without an object per row."""
        spec, name, signal_only, rows = plain.model, plain.model.name, plain.signal_only, self.rows
        keys: list[tuple[tuple[str, FilterValue], ...]]
        if len(plain.filters) == 1:  # the common case: one filter, no tuple per row
            ((f, fvalues),) = plain.filters
            keys = [((f, v),) for v in fvalues]
        else:
            names = [f for f, _ in plain.filters]
            keys = [
                tuple(zip(names, vs, strict=True))
                for vs in zip(*(v for _, v in plain.filters), strict=True)
            ]
        for column, deltas in plain.columns:
            for filters, delta in zip(keys, deltas, strict=True):
                row_id = (name, filters, signal_only)
                row = rows.get(row_id)
                if row is None:
                    row = rows[row_id] = RowSums(spec, filters, signal_only)
                    row.first_offset = offset
                sums = row.columns
                sums[column] = sums.get(column, 0) + delta
        for filters, count in zip(keys, plain.counts, strict=True):
            row = rows[(name, filters, signal_only)]
            row.increments += count
            row.last_offset = offset
        self.increments += sum(plain.counts)

    def hold(
        self, offset: int, token: object, closes_at: float, timestamp: int | None = None
    ) -> None:
        """Record that ``offset`` was consumed into this window (applied or dead-lettered)."""
        if offset + 1 >= self.next:
            self.next = offset + 1
            self.last_timestamp = timestamp
        self.held.append(token)
        if self.closes_at is None:
            self.closes_at = closes_at

    @property
    def empty(self) -> bool:
        return not self.held and not self.rows

    def successor(self) -> PartitionWindow:
        """The window that starts where this one ends (its flush mark once committed)."""
        return PartitionWindow(self.partition, self.next, self.next, self.generation)

    def absorb(self, newer: PartitionWindow) -> None:
        """Put a later window behind this one (a failed flush is retried as one window)."""
        for row_id, sums in newer.rows.items():
            mine = self.rows.get(row_id)
            if mine is None:
                self.rows[row_id] = sums
            else:
                mine.absorb(sums)
        self.held.extend(newer.held)
        if newer.next >= self.next:
            self.next, self.last_timestamp = newer.next, newer.last_timestamp
        self.increments += newer.increments
        if self.closes_at is None:
            self.closes_at = newer.closes_at
