"""The debounce rule, as pure functions over a small state Protocol.

A request made at ``t`` (its ``requested_at``) is *skipped* when a scope covering it
(its organization, its project, itself) has a recompute scheduled to start after
``t``: that recompute will read the database after the change that caused the
request, so nothing is lost. Otherwise the request opens a *countdown window*
``[t, t + countdown)`` for its scope and a recompute is due at ``t + countdown``.

So "pending" means "a recompute is due after your request was made": once a
recompute starts (at or after its due time) it no longer covers anything new, and
a request made during it opens another window. Deciding on the request's own time,
not on when the worker happens to see it, makes the outcome deterministic: a
replayed request after a crash is skipped again, and the number of recomputes is
the number of distinct (scope, countdown window) pairs.

The markers live in a windowed table: a countdown window is written into every
fixed grid window it overlaps, so a lookup is one read of the grid window holding
``t``, and old markers expire with their grid window.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple, Protocol

from streams.projectconfigs.scopes import Scope, ScopeKind

WindowRange = tuple[float, float]
WindowOf = Callable[[float], WindowRange]

# A countdown window longer than this many grid windows is only marked in the first
# ones: later requests then open a new window (an extra recompute, never a lost one).
MAX_MARKED_WINDOWS = 4


class Request(NamedTuple):
    """A decoded invalidation request (a tuple: built once per request, cheaply)."""

    scope: Scope
    trigger: str
    countdown: float
    requested_at: float  # seconds since the epoch


@dataclass(frozen=True)
class DueWork:
    """One scheduled recompute: the durable record the timer works from."""

    scope_kind: str
    organization_id: int | None
    project_id: int | None
    public_key: str | None
    trigger: str
    requested_at: float
    due: float
    partition: int

    @property
    def scope(self) -> Scope:
        return Scope(
            ScopeKind(self.scope_kind), self.organization_id, self.project_id, self.public_key
        )

    @property
    def key(self) -> str:
        """Unique per (scope, countdown window); a replayed request rewrites the same key."""
        return f"{self.scope.key}@{round(self.requested_at * 1000)}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DueWork:
        return cls(**data)

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True).encode()


@dataclass(frozen=True)
class Decision:
    scheduled: bool
    reason: str  # scheduled: the scope kind; skipped: 'pending_<covering kind>'
    work: DueWork | None = None


class DebounceState(Protocol):
    """Where markers and due work live (Faust tables in the worker, dicts in tests)."""

    def marker(self, scope_key: str, window: WindowRange) -> float | None:
        """Due time of the latest countdown window of ``scope_key`` marked in ``window``."""

    def set_marker(self, partition: int, scope_key: str, window: WindowRange, due: float) -> None:
        """Record that ``scope_key`` has a recompute due at ``due`` (overlapping ``window``)."""

    def add_due(self, work: DueWork) -> None:
        """Persist ``work`` until its recompute has been published."""


# Most requests are skipped: their decisions are shared, not built per request.
_SKIPPED = {kind: Decision(False, f"pending_{kind.value}") for kind in ScopeKind}


def covering_due(
    state: DebounceState, window_of: WindowOf, req: Request
) -> tuple[ScopeKind, float] | None:
    """(kind, due) of a covering scope's recompute due after the request, if any."""
    window = window_of(req.requested_at)
    for kind, key in req.scope.covering():
        due = state.marker(key, window)
        if due is not None and due > req.requested_at:
            return kind, due
    return None


def marked_windows(window_of: WindowOf, start: float, due: float, size: float) -> list[WindowRange]:
    """The grid windows that the countdown window ``[start, due)`` overlaps (capped)."""
    out: list[WindowRange] = []
    t = start
    while t < due and len(out) < MAX_MARKED_WINDOWS:
        w = window_of(t)
        out.append(w)
        # Step to the next grid window's start; ``size`` is the grid step.
        t = math.floor(t / size) * size + size
    return out


def offer(
    state: DebounceState,
    window_of: WindowOf,
    grid_size: float,
    req: Request,
    partition: int,
) -> Decision:
    """Skip ``req`` or schedule its recompute; updates ``state`` when it schedules."""
    covered = covering_due(state, window_of, req)
    if covered is not None:
        return _SKIPPED[covered[0]]
    scope = req.scope
    due = req.requested_at + max(0.0, req.countdown)
    work = DueWork(
        scope.kind.value,
        scope.organization_id,
        scope.project_id,
        scope.public_key,
        req.trigger,
        req.requested_at,
        due,
        partition,
    )
    # Due work first: if the markers were written and the worker died before the due
    # work, a replay would be skipped and the recompute lost.
    state.add_due(work)
    for window in marked_windows(window_of, req.requested_at, due, grid_size):
        previous = state.marker(scope.key, window)
        if previous is None or previous < due:
            state.set_marker(partition, scope.key, window, due)
    return Decision(True, scope.kind.value, work)


def tumbling(size: float) -> WindowOf:
    """Epoch-aligned tumbling grid, the same ranges Faust's ``TumblingWindow`` gives."""

    def window_of(ts: float) -> WindowRange:
        start = (ts // size) * size
        return (float(start), float(start + size - 0.1))

    return window_of


class MemoryState:
    """A dict-backed ``DebounceState`` (unit tests, and the reference for the tables)."""

    def __init__(self) -> None:
        self.markers: dict[tuple[str, WindowRange], float] = {}
        self.due: dict[str, DueWork] = {}

    def marker(self, scope_key: str, window: WindowRange) -> float | None:
        return self.markers.get((scope_key, window))

    def set_marker(self, partition: int, scope_key: str, window: WindowRange, due: float) -> None:
        self.markers[(scope_key, window)] = due

    def add_due(self, work: DueWork) -> None:
        self.due[work.key] = work
