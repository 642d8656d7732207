"""Reading ``buffer-increments`` values: every row of a message, checked against the
allow-list (``streams.buffers.models``) by the same rules as ``incr()``.

A v1 message is one row; a v2 message may add ``more``, further rows of the same
model column by column, and a v3 one ``packed``, the same columns as little-endian
int64 bytes (``streams/incr_coalesce.py`` writes them). Plain rows (integer counters
and filters, no ``extra``: what ``incr()`` sends most) are checked by a few
comparisons per column and kept column by column (``PlainRows``: the worker sums them
without an object per row); anything else goes through ``check_increment``, which
names the problem. One bad row refuses the whole message (it is dead-lettered).
"""

from __future__ import annotations

import datetime as dt
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streams.buffers.models import (
    BIGINT_RANGE,
    MODELS,
    FilterValue,
    Increment,
    Kind,
    ModelSpec,
    NotAllowed,
    check_increment,
)


def from_wire(value: Mapping[str, Any]) -> Increment:
    """Validate a decoded ``buffer-increments`` value's top-level row (a producer may
    have skipped incr()); ``rows_from_wire`` gives every row of the message."""
    return _row_from_wire(value["model"], value.get("signal_only", False), value)


@dataclass(frozen=True, slots=True)
class PlainRows:
    """Checked rows of one model with bigint filters and counters only, column by
    column: element i of every sequence is row i."""

    model: ModelSpec
    signal_only: bool
    filters: tuple[tuple[str, Sequence[int]], ...]  # in the model's filter order
    columns: tuple[tuple[str, Sequence[int]], ...]
    event_time: Sequence[int]
    counts: Sequence[int]

    def __len__(self) -> int:
        return len(self.counts)

    def increments(self) -> list[Increment]:
        """One ``Increment`` per row (tests, and the row-by-row path)."""
        fnames = [f for f, _ in self.filters]
        cnames = [c for c, _ in self.columns]
        fcols = zip(*(v for _, v in self.filters), strict=True)
        ccols = zip(*(v for _, v in self.columns), strict=True)
        return [
            Increment(
                self.model,
                tuple(zip(fnames, fv, strict=True)),
                dict(zip(cnames, cv, strict=True)),
                {},
                self.signal_only,
                t,
                k,
            )
            for fv, cv, t, k in zip(fcols, ccols, self.event_time, self.counts, strict=True)
        ]


def read_rows(value: Mapping[str, Any]) -> tuple[list[Increment], PlainRows | None]:
    """Every row of a decoded ``buffer-increments`` value: the top-level one (and the
    further rows that need a row-by-row check), and the plain further rows column by
    column; all valid, else ``NotAllowed`` (the message is dead-lettered whole)."""
    model, signal_only = value["model"], value.get("signal_only", False)
    first = _row_from_wire(model, signal_only, value)
    more, packed = value.get("more"), value.get("packed")
    if more and packed:
        raise NotAllowed("a message carries 'more' or 'packed', not both")
    typed = bool(packed)
    if packed:
        more = unpack(packed)
    if not more:
        return [first], None
    plain = _plain_more(first.model, first.signal_only, more, typed=typed)
    if plain is not None:
        return [first], plain
    return [first, *(_row_from_wire(model, signal_only, row) for row in more_rows(more))], None


def rows_from_wire(value: Mapping[str, Any]) -> list[Increment]:
    """Every row of a decoded ``buffer-increments`` value, one ``Increment`` each."""
    rows, plain = read_rows(value)
    return rows if plain is None else [*rows, *plain.increments()]


def _int64s(raw: object, name: str) -> list[int]:
    if type(raw) is not bytes or len(raw) % 8:
        raise NotAllowed(f"packed {name}: 8 bytes a row expected")
    values = array("q")
    values.frombytes(raw)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


def pack(values: Sequence[int]) -> bytes:
    """A packed column (v3): little-endian signed 64-bit integers."""
    out = array("q", values)
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def unpack(packed: Mapping[str, Any]) -> dict[str, Any]:
    """A v3 ``packed`` block as the v2 ``more`` it stands for (lists of ints)."""
    return {
        "filters": {f: _int64s(v, f) for f, v in packed["filters"].items()},
        "columns": {c: _int64s(v, c) for c, v in packed["columns"].items()},
        "extra": [],
        "event_time": _int64s(packed["event_time"], "event_time"),
        "increments": _int64s(packed["increments"], "increments"),
    }


def _plain_ints(values: list[Any], lo: int, hi: int) -> bool:
    return all(type(v) is int for v in values) and (
        not values or lo <= min(values) <= max(values) <= hi
    )


def _in_range(values: list[int], lo: int, hi: int) -> bool:
    return not values or lo <= min(values) <= max(values) <= hi


def _plain_more(
    spec: ModelSpec, signal_only: bool, more: Mapping[str, Any], *, typed: bool = False
) -> PlainRows | None:
    """The common ``more`` (integer filters and counters, no ``extra``) checked column
    by column, the same checks as ``check_increment``; None: check row by row.
    ``typed``: every value is an int already (unpacked), only ranges are checked."""
    filters, columns, times, counts = (
        more["filters"],
        more["columns"],
        more["event_time"],
        more["increments"],
    )
    n = len(times)
    lo, hi = BIGINT_RANGE
    if (
        more["extra"]
        or not columns
        or filters.keys() != spec.filters.keys()
        or not columns.keys() <= spec.counters
        or any(kind is not Kind.BIGINT for kind in spec.filters.values())
    ):
        return None
    arrays = [counts, *filters.values(), *columns.values()]
    if any(len(a) != n for a in arrays):
        return None
    check = _in_range if typed else _plain_ints
    if not check(counts, 1, hi) or not all(check(a, lo, hi) for a in arrays):
        return None
    if not typed and not all(type(t) is int for t in times):
        return None
    return PlainRows(
        spec,
        signal_only,
        tuple((f, filters[f]) for f in spec.filters),
        tuple(columns.items()),
        times,
        counts,
    )


def more_rows(more: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of a column-by-column ``more`` (each array holds one value per row)."""
    times = more["event_time"]
    n = len(times)
    filters, columns, extra = more["filters"], more["columns"], more["extra"] or [None] * n
    arrays = [more["increments"], extra, *filters.values(), *columns.values()]
    if any(len(a) != n for a in arrays):
        raise NotAllowed("more: every array must hold one value per row")
    fnames, cnames = list(filters), list(columns)
    fvalues, cvalues = (
        list(zip(*filters.values(), strict=True)),
        list(zip(*columns.values(), strict=True)),
    )
    return [
        {
            "filters": dict(zip(fnames, fvalues[i], strict=True)) if fnames else {},
            "columns": dict(zip(cnames, cvalues[i], strict=True)) if cnames else {},
            "extra": extra[i],
            "event_time": times[i],
            "increments": more["increments"][i],
        }
        for i in range(n)
    ]


def _row_from_wire(model: object, signal_only: object, row: Mapping[str, Any]) -> Increment:
    event_time = row["event_time"]
    if isinstance(event_time, dt.datetime):
        event_time = int(event_time.timestamp() * 1000)
    fast = _plain_row(model, signal_only, row, int(event_time))
    if fast is not None:
        return fast
    return check_increment(
        model,
        row["columns"],
        row["filters"],
        row.get("extra"),
        signal_only,
        event_time_ms=int(event_time),
        wire=True,
        count=row.get("increments", 1),  # absent from v1 messages: one call each
    )


def _plain_row(
    model: object, signal_only: object, row: Mapping[str, Any], event_time_ms: int
) -> Increment | None:
    """The common row (integer counters and filters, no ``extra``) checked in a few
    comparisons, the same checks as ``check_increment``; None: let it decide (and
    name the problem). The worker runs this for every row it reads."""
    spec = MODELS.get(model) if type(model) is str else None
    columns, filters, count = row["columns"], row["filters"], row.get("increments", 1)
    if (
        spec is None
        or row.get("extra")
        or type(signal_only) is not bool
        or type(columns) is not dict
        or type(filters) is not dict
        or not columns
        or type(count) is not int
        or count < 1
        or filters.keys() != spec.filters.keys()
    ):
        return None
    lo, hi = BIGINT_RANGE
    for name, value in columns.items():
        if name not in spec.counters or type(value) is not int or not lo <= value <= hi:
            return None
    ordered: list[tuple[str, FilterValue]] = []
    for name, kind in spec.filters.items():
        value = filters[name]
        if kind is not Kind.BIGINT or type(value) is not int or not lo <= value <= hi:
            return None
        ordered.append((name, value))
    return Increment(spec, tuple(ordered), columns, {}, signal_only, event_time_ms, count)
