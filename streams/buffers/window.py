"""Flush windows: the increments of one partition since its last flush, summed per row.

A window also remembers the offset range it covers (``start`` = the flush mark it
continues from, ``next`` = one past the last offset taken in) and the consumed
messages whose acknowledgement waits for the flush: the source topic, read again
from the flush mark, is what rebuilds a window lost in a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streams.buffers.models import FilterValue, Increment, ModelSpec, WireExtra

if TYPE_CHECKING:
    from streams.buffers.wire import PlainRows

RowId = tuple[str, tuple[tuple[str, FilterValue], ...], bool]  # model, filters, signal_only


class RowSums:
    """What one flush does to one row: summed counters, last ``extra`` values.

    A plain class with slots: a window makes one per distinct row it sees, thousands a
    second at 5,000 rows (a dataclass's ``default_factory`` init cost twice as much)."""

    __slots__ = (
        "columns",
        "extra",
        "filters",
        "first_offset",
        "increments",
        "last_offset",
        "model",
        "signal_only",
    )

    def __init__(
        self,
        model: ModelSpec,
        filters: tuple[tuple[str, FilterValue], ...],
        signal_only: bool,
        first_offset: int = -1,
    ) -> None:
        self.model = model
        self.filters = filters
        self.signal_only = signal_only
        self.columns: dict[str, int] = {}
        # column -> (event time ms, value): the latest event wins, monotonic columns the max.
        self.extra: dict[str, tuple[int, WireExtra]] = {}
        self.increments = 0
        self.first_offset = first_offset
        self.last_offset = first_offset

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RowSums) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass's

    def __repr__(self) -> str:
        return f"RowSums({self.model.name}, {self.filters}, columns={self.columns})"

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


def _values(filters: tuple[tuple[str, FilterValue], ...]) -> Any:
    """A row's key in ``PartitionWindow._index``: its filter value, or their tuple."""
    return filters[0][1] if len(filters) == 1 else tuple(v for _, v in filters)


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
    # (model, signal_only) -> filter values (the value itself for one filter) -> rows
    _by_values: dict[tuple[str, bool], dict[Any, RowSums]] = field(default_factory=dict)
    held: list[object] = field(default_factory=list)  # acked once the flush commits
    increments: int = 0
    last_timestamp: int | None = None  # ms, of the record at ``next - 1`` (the mark's)

    def add(self, inc: Increment, offset: int) -> None:
        row_id: RowId = (inc.model.name, inc.filters, inc.signal_only)
        row = self.rows.get(row_id)
        if row is None:
            row = self._put(row_id, RowSums(inc.model, inc.filters, inc.signal_only))
        row.add(inc, offset)
        self.increments += inc.count

    def _put(self, row_id: RowId, row: RowSums) -> RowSums:
        """Add a row new to this window (to ``rows`` and to the index of its shape)."""
        self.rows[row_id] = row
        index = self._by_values.get((row_id[0], row_id[2]))
        if index is not None:
            index[_values(row.filters)] = row
        return row

    def _index(self, name: str, signal_only: bool) -> dict[Any, RowSums]:
        """The rows of one model (and signal_only) by their filter values alone: what
        ``add_plain`` looks rows up by (an int, not a tuple of pairs, to hash)."""
        key = (name, signal_only)
        index = self._by_values.get(key)
        if index is None:
            index = self._by_values[key] = {
                _values(row.filters): row
                for row_id, row in self.rows.items()
                if row_id[0] == name and row_id[2] == signal_only
            }
        return index

    def add_plain(self, plain: PlainRows, offset: int) -> None:
        """Sum rows read column by column (no ``extra``), without an object per row."""
        spec, name, signal_only = plain.model, plain.model.name, plain.signal_only
        index, rows = self._index(name, signal_only), self.rows
        names = tuple(f for f, _ in plain.filters)
        single = len(names) == 1  # the common case: one filter, its value the key
        columns = [v for _, v in plain.filters]
        values: Sequence[Any] = columns[0] if single else list(zip(*columns, strict=True))
        get = index.get
        # One pass per row: find (or make) its sums, count its calls; then its counters.
        found: list[RowSums] = []
        append = found.append
        for value, count in zip(values, plain.counts, strict=True):
            row = get(value)
            if row is None:
                filters = ((names[0], value),) if single else tuple(zip(names, value, strict=True))
                row = RowSums(spec, filters, signal_only, offset)
                rows[(name, filters, signal_only)] = index[value] = row
            row.increments += count
            row.last_offset = offset
            append(row)
        for column, deltas in plain.columns:
            for row, delta in zip(found, deltas, strict=True):
                sums = row.columns
                sums[column] = sums.get(column, 0) + delta
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
                self._put(row_id, sums)
            else:
                mine.absorb(sums)
        self.held.extend(newer.held)
        if newer.next >= self.next:
            self.next, self.last_timestamp = newer.next, newer.last_timestamp
        self.increments += newer.increments
        if self.closes_at is None:
            self.closes_at = newer.closes_at
