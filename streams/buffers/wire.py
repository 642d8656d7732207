"""Reading ``buffer-increments`` values: every row of a message, checked against the
allow-list (``streams.buffers.models``) by the same rules as ``incr()``.

A v1 message is one row; a v2 message may add ``more``, further rows of the same
model column by column (``streams/incr_coalesce.py`` writes them). Plain rows
(integer counters and filters, no ``extra``: what ``incr()`` sends most) are checked
by a few comparisons per column; anything else goes through ``check_increment``,
which names the problem. One bad row refuses the whole message (it is dead-lettered).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
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


def rows_from_wire(value: Mapping[str, Any]) -> list[Increment]:
    """Every row of a decoded ``buffer-increments`` value: the top-level one, then
    ``more`` (v2: rows of the same model a client summed in one window, column by
    column); all valid, else ``NotAllowed`` (the message is dead-lettered whole)."""
    model, signal_only = value["model"], value.get("signal_only", False)
    first = _row_from_wire(model, signal_only, value)
    more = value.get("more")
    if not more:
        return [first]
    fast = _plain_more(first.model, first.signal_only, more)
    if fast is not None:
        return [first, *fast]
    return [first, *(_row_from_wire(model, signal_only, row) for row in more_rows(more))]


def _plain_ints(values: list[Any], lo: int, hi: int) -> bool:
    return all(type(v) is int for v in values) and (
        not values or lo <= min(values) <= max(values) <= hi
    )


def _plain_more(
    spec: ModelSpec, signal_only: bool, more: Mapping[str, Any]
) -> list[Increment] | None:
    """The common ``more`` (integer filters and counters, no ``extra``) checked column
    by column, the same checks as ``check_increment``; None: check row by row."""
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
    if any(len(a) != n for a in arrays) or not _plain_ints(counts, 1, hi):
        return None
    if not all(_plain_ints(a, lo, hi) for a in arrays) or not all(type(t) is int for t in times):
        return None
    fnames, cnames = list(spec.filters), list(columns)
    if len(fnames) == 1 and len(cnames) == 1:  # the common case, without a zip per row
        (f,), (c,) = fnames, cnames
        return [
            Increment(spec, ((f, fv),), {c: cv}, {}, signal_only, t, k)
            for fv, cv, t, k in zip(filters[f], columns[c], times, counts, strict=True)
        ]
    fcols = zip(*(filters[f] for f in fnames), strict=True)
    ccols = zip(*columns.values(), strict=True)
    return [
        Increment(
            spec,
            tuple(zip(fnames, fv, strict=True)),
            dict(zip(cnames, cv, strict=True)),
            {},
            signal_only,
            t,
            k,
        )
        for fv, cv, t, k in zip(fcols, ccols, times, counts, strict=True)
    ]


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
