"""The allow-list: which models take buffered increments, and through which columns.

Every SQL identifier the buffer agent uses comes from a ``ModelSpec`` declared here.
A message only *selects* an entry by name and supplies parameter values, so nothing
from the wire is ever spliced into SQL. ``check_increment`` is the one validation both
``streams.client.incr`` (before publishing) and the agent (after decoding, for
producers that write the topic directly) run.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.errors import StreamsError

FilterValue = int | str
WireExtra = int | str | float | bool | None


class NotAllowed(StreamsError, TypeError):
    """A model, column or value outside the allow-list (raised before anything is sent)."""


class Kind(enum.Enum):
    BIGINT = "bigint"
    SMALLINT = "smallint"
    TEXT = "text"
    TIMESTAMP = "timestamptz"  # aware datetime at the call, epoch ms on the wire


_RANGES = {Kind.BIGINT: (-(2**63), 2**63 - 1), Kind.SMALLINT: (-(2**15), 2**15 - 1)}
BIGINT_RANGE = _RANGES[Kind.BIGINT]
MAX_TEXT = 4096


@dataclass(frozen=True)
class ExtraColumn:
    """A column ``extra`` may set. ``monotonic`` columns never move backwards (GREATEST)."""

    kind: Kind
    monotonic: bool = False


@dataclass(frozen=True, eq=False)  # identity hash: specs are singletons and cache keys
class ModelSpec:
    name: str  # what callers pass to incr()
    table: str
    filters: Mapping[str, Kind]  # all of them identify one row; all are required
    counters: frozenset[str]
    extra: Mapping[str, ExtraColumn] = field(default_factory=dict)


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec(
            name="issue_group",
            table="issue_group",
            filters={"id": Kind.BIGINT},
            counters=frozenset({"times_seen", "num_comments"}),
            extra={
                "last_seen": ExtraColumn(Kind.TIMESTAMP, monotonic=True),
                "status": ExtraColumn(Kind.SMALLINT),
                "level": ExtraColumn(Kind.TEXT),
                "culprit": ExtraColumn(Kind.TEXT),
            },
        ),
    )
}


# Not frozen: the worker builds one per row it reads, and a frozen dataclass's
# __init__ costs about 4x a plain one. Treat it as immutable all the same.
@dataclass(slots=True)
class Increment:
    """One validated increment, in wire form (timestamps as epoch ms); not to be changed."""

    model: ModelSpec
    filters: tuple[tuple[str, FilterValue], ...]  # in the model's filter order
    columns: Mapping[str, int]
    extra: Mapping[str, WireExtra]
    signal_only: bool
    event_time_ms: int
    count: int = 1  # the incr() calls this increment sums (a client may have summed them)

    @property
    def key(self) -> str:
        """The message key: every increment of one row shares it (so one partition)."""
        return row_key(self.model.name, self.filters)

    def to_wire(self) -> dict[str, Any]:
        return {
            "model": self.model.name,
            "filters": dict(self.filters),
            "columns": dict(self.columns),
            "extra": dict(self.extra) if self.extra else None,
            "signal_only": self.signal_only,
            "event_time": self.event_time_ms,
            "increments": self.count,
        }


def row_key(model: str, filters: tuple[tuple[str, FilterValue], ...]) -> str:
    # JSON keeps the key unambiguous whatever characters a text filter holds.
    return f"{model}:{json.dumps(dict(filters), sort_keys=True, separators=(',', ':'))}"


def spec_for(model: object) -> ModelSpec:
    if not isinstance(model, str):
        raise NotAllowed(
            f"model must be an allow-listed name (one of {sorted(MODELS)}), "
            f"got {type(model).__name__}"
        )
    try:
        return MODELS[model]
    except KeyError:
        raise NotAllowed(
            f"model {model!r} is not allow-listed for buffered increments "
            f"(allowed: {sorted(MODELS)})"
        ) from None


def _mapping(name: str, value: object) -> Mapping[str, Any]:
    if type(value) is dict:  # the common case; ABC isinstance checks are slow per message
        return value
    if not isinstance(value, Mapping):
        raise NotAllowed(f"{name} must be a dict, got {type(value).__name__}")
    return value


def _check_scalar(where: str, kind: Kind, value: object) -> WireExtra:
    if kind is Kind.TIMESTAMP:
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                raise NotAllowed(f"{where}: naive datetime; pass an aware (UTC) datetime")
            return int(value.timestamp() * 1000)
        raise NotAllowed(f"{where}: expected an aware datetime, got {type(value).__name__}")
    if kind is Kind.TEXT:
        if type(value) is not str:
            raise NotAllowed(f"{where}: expected str, got {type(value).__name__}")
        if len(value) > MAX_TEXT:
            raise NotAllowed(f"{where}: text longer than {MAX_TEXT} characters")
        if "\x00" in value:
            raise NotAllowed(f"{where}: text holds a NUL character (PostgreSQL refuses it)")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:  # a lone surrogate: no UTF-8 form to send
                raise NotAllowed(f"{where}: text is not valid Unicode ({exc.reason})") from exc
        return value
    if type(value) is not int:  # bool is an int subclass: refused on purpose
        raise NotAllowed(f"{where}: expected int, got {type(value).__name__}")
    lo, hi = _RANGES[kind]
    if not lo <= value <= hi:
        raise NotAllowed(f"{where}: {value} does not fit a {kind.value} column")
    return value


def check_increment(
    model: object,
    columns: object,
    filters: object,
    extra: object = None,
    signal_only: object = False,
    *,
    event_time_ms: int | None = None,
    wire: bool = False,
    count: int = 1,
) -> Increment:
    """Validate against the allow-list; raises ``NotAllowed`` (a TypeError) naming the problem.

    ``wire=True`` reads timestamps in ``extra`` as epoch ms (as decoded from the topic);
    ``count`` is how many calls the increment sums (>= 1).
    """
    spec = spec_for(model)
    cols = _mapping("columns", columns)
    if not cols:
        raise NotAllowed("columns is empty: nothing to increment")
    counters: dict[str, int] = {}
    for name, delta in cols.items():
        if name not in spec.counters:
            raise NotAllowed(
                f"{spec.name}: column {name!r} is not an allow-listed counter "
                f"(allowed: {sorted(spec.counters)})"
            )
        checked = _check_scalar(f"{spec.name}.{name}", Kind.BIGINT, delta)
        assert isinstance(checked, int)
        counters[name] = checked
    flt = _mapping("filters", filters)
    if set(flt) != set(spec.filters):
        raise NotAllowed(
            f"{spec.name}: filters must be exactly {sorted(spec.filters)}, got {sorted(flt)}"
        )
    ordered: list[tuple[str, FilterValue]] = []
    for name, kind in spec.filters.items():
        value = _check_scalar(f"{spec.name} filter {name}", kind, flt[name])
        assert isinstance(value, int | str)
        ordered.append((name, value))
    extras: dict[str, WireExtra] = {}
    for name, value in _mapping("extra", extra or {}).items():
        col = spec.extra.get(name)
        if col is None:
            raise NotAllowed(
                f"{spec.name}: extra column {name!r} is not allow-listed "
                f"(allowed: {sorted(spec.extra)})"
            )
        kind = Kind.BIGINT if (wire and col.kind is Kind.TIMESTAMP) else col.kind
        extras[name] = _check_scalar(f"{spec.name} extra {name}", kind, value)
    if type(signal_only) is not bool:
        raise NotAllowed(f"signal_only must be a bool, got {type(signal_only).__name__}")
    if type(count) is not int or count < 1:
        raise NotAllowed(f"increments must be an int >= 1, got {count!r}")
    if event_time_ms is None:
        event_time_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    return Increment(spec, tuple(ordered), counters, extras, signal_only, event_time_ms, count)


def sql_value(spec: ModelSpec, column: str, wire: WireExtra) -> Any:
    """An ``extra`` wire value as the database parameter (ms -> aware datetime)."""
    if spec.extra[column].kind is Kind.TIMESTAMP and isinstance(wire, int):
        return dt.datetime.fromtimestamp(wire / 1000, dt.UTC)
    return wire
