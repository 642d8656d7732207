"""The debounce rule, as pure functions over a small state Protocol.

A request made at ``t`` (its ``requested_at``) is *skipped* when a scope covering it
(its organization, its project, itself) has a recompute that is *pending*, i.e. due
after ``t`` and **not started yet**: that recompute will read the database after the
worker saw the request, so the change is served. Otherwise the request opens a
*countdown window* ``[t, t + countdown)`` for its scope, due at ``t + countdown``.

"Not started" is judged on the worker's own state, never by comparing the
producer's clock with the worker's: a recompute stops covering anything the moment
the timer takes it (``DebounceState.start``). A request that arrives after that,
however early its ``requested_at``, opens another window. So with skewed clocks
there may be an extra recompute, never an unserved change.

Without skew the count is exact: the timer does not start a window due at ``D``
on a partition before it has decided every request of that partition made before
``D`` (``streams.agents.invalidation``), so the number of windows scheduled is the
number of distinct (scope, countdown window) pairs of the request times, also when
the worker is behind. Windows of one scope that are due together are *folded* into
one recompute (counted as such).

State per scope is one float (the due time of its latest pending window) plus the
durable due work; nothing is written per skipped request.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any, NamedTuple, Protocol

from streams.projectconfigs.scopes import Scope, ScopeKind


class Request(NamedTuple):
    """A decoded invalidation request (a tuple: built once per request, cheaply)."""

    scope: Scope
    trigger: str
    countdown: float
    requested_at: float  # seconds since the epoch, producer's clock


class DueWork(NamedTuple):
    """One scheduled recompute (a countdown window): the durable record the timer uses.

    A named tuple: one is built per countdown window (and per window a pass takes), and
    a frozen dataclass's init cost three times as much."""

    scope_kind: str
    organization_id: int | None
    project_id: int | None
    public_key: str | None
    trigger: str
    requested_at: float
    due: float
    partition: int
    # Its key, when known: the due table and ``offer`` set it, so the key and the scope
    # key (read five times for each window) are not formatted again. Not in the record.
    ident: str = ""

    @property
    def scope(self) -> Scope:
        return Scope(
            ScopeKind(self.scope_kind), self.organization_id, self.project_id, self.public_key
        )

    @property
    def scope_key(self) -> str:
        """The debounce key of the scope ('o:1', 'p:2', 'k:abc'), as ``Scope.key``."""
        ident = self.ident
        if ident:
            return ident[: ident.rindex("@")]
        if self.scope_kind == "organization":
            return f"o:{self.organization_id}"
        if self.scope_kind == "project":
            return f"p:{self.project_id}"
        return f"k:{self.public_key}"

    @property
    def key(self) -> str:
        """Unique per (scope, countdown window); a replayed request rewrites the same key."""
        return self.ident or window_key(self.scope_key, self.requested_at)

    def to_json(self) -> list[Any]:
        """A compact positional record (the changelog carries one per window)."""
        return [
            self.scope_kind,
            self.organization_id,
            self.project_id,
            self.public_key,
            self.trigger,
            self.requested_at,
            self.due,
            self.partition,
        ]

    @classmethod
    def from_json(cls, data: DueWork | Sequence[Any] | dict[str, Any]) -> DueWork:
        """Reads the work itself, the positional record (a list from JSON, or the tuple
        the due table keeps), and the older named one (a dict)."""
        if type(data) is DueWork:
            return data
        if isinstance(data, dict):
            return cls(**data)
        return cls(*data)

    def encode(self) -> bytes:
        return record_json(self.to_json())


def window_key(scope_key: str, requested_at: float) -> str:
    """A window's key: its scope's key and its start in milliseconds."""
    return f"{scope_key}@{round(requested_at * 1000)}"


def record_json(record: Any) -> bytes:
    """``json.dumps(record).encode()``, byte for byte; a ``to_json`` record, or a
    sequence of them (a due table entry), is written directly (1.8 against 3.4 us a
    record). Anything else, or a record with unusual types (a str, an int or None where
    they belong, finite floats), goes to json.dumps."""
    if type(record) is tuple and record and type(record[0]) is tuple:
        return _json(record).encode()  # an entry: the C encoder, as json.dumps
    try:
        kind, org, project, key, trigger, requested_at, due, partition = record
        if (
            type(org) in _INT_OR_NONE
            and type(project) in _INT_OR_NONE
            and type(partition) is int
            and math.isfinite(requested_at)
            and math.isfinite(due)
        ):
            return (
                f"[{_str(kind)}, {_null if org is None else org}, "
                f"{_null if project is None else project}, "
                f"{_null if key is None else _str(key)}, {_str(trigger)}, "
                f"{_float(requested_at)}, {_float(due)}, {partition}]"
            ).encode()
    except (TypeError, ValueError):
        pass
    return json.dumps(record).encode()


_json = json.JSONEncoder().encode  # json.dumps without building an encoder per call
_INT_OR_NONE = frozenset({int, type(None)})
_null = "null"
_float = float.__repr__  # what json.dumps writes for a finite float (TypeError otherwise)
_str = encode_basestring_ascii  # a str's JSON, as json.dumps writes it (TypeError otherwise)


class Decision(NamedTuple):
    """What ``offer`` decided for one request (a named tuple: one per new window)."""

    scheduled: bool
    reason: str  # scheduled: the scope kind; skipped: 'pending_<covering kind>'
    work: DueWork | None = None


class DebounceState(Protocol):
    """Pending windows and due work (Faust table + dict in the worker, dicts in tests)."""

    def pending_due(self, scope_key: str) -> float | None:
        """Due time of the latest window of ``scope_key`` whose recompute has not started."""

    def started_due(self, scope_key: str) -> float | None:
        """Due time of the latest window of ``scope_key`` that started (recently), if any."""

    def add_due(self, work: DueWork) -> None:
        """Persist ``work`` until its recompute has been published; it is now pending."""


# Most requests are skipped: their decisions are shared, not built per request.
_SKIPPED = {kind: Decision(False, f"pending_{kind.value}") for kind in ScopeKind}
_LATE = {kind: f"{kind.value}_late" for kind in ScopeKind}
_TEXT = {kind: kind.value for kind in ScopeKind}  # a dict lookup: ``.value`` costs 0.4 us


def offer(state: DebounceState, req: Request, partition: int) -> Decision:
    """Skip ``req`` or schedule its recompute; updates ``state`` when it schedules.

    A request read after the window it falls in has started (a worker behind its
    partition, or a producer's clock behind the worker's) gets a *late* window: due
    at that window's due time, so it runs at once and covers only what the started
    window would have covered. The windows that are not late are then exactly the
    distinct (scope, countdown window) pairs of the request times.
    """
    # Skipped if a covering scope's pending window is due after the request (most
    # requests stop at the first lookup); late if a started one is.
    covering = req.scope.covering()
    requested_at = req.requested_at
    pending_due = state.pending_due
    for kind, key in covering:
        due = pending_due(key)
        if due is not None and due > requested_at:
            return _SKIPPED[kind]
    started_due = state.started_due
    late = None
    for _, key in covering:
        due = started_due(key)
        if due is not None and due > requested_at and (late is None or due > late):
            late = due
    scope = req.scope
    work = DueWork(
        _TEXT[scope.kind],
        scope.organization_id,
        scope.project_id,
        scope.public_key,
        req.trigger,
        requested_at,
        late if late is not None else requested_at + max(0.0, req.countdown),
        partition,
        window_key(scope.own_key, requested_at),
    )
    state.add_due(work)
    return Decision(True, _LATE[scope.kind] if late is not None else work.scope_kind, work)


class PendingIndex:
    """Scope key -> due time of its latest pending window, and of its latest started one.

    One float per scope with a pending window (rebuilt from the durable due work after
    a restart or rebalance), and one per scope whose window started in the last
    ``keep_started`` seconds (in memory only: after a restart a late request opens an
    ordinary window, an extra recompute but never a lost one).
    """

    def __init__(self, keep_started: float = 120.0) -> None:
        self.due: dict[str, float] = {}
        self.started: dict[str, float] = {}
        self.keep_started = keep_started
        self._expiry: deque[tuple[float, str, float]] = deque()

    def get(self, scope_key: str) -> float | None:
        return self.due.get(scope_key)

    def add(self, scope_key: str, due: float) -> None:
        previous = self.due.get(scope_key)
        if previous is None or previous < due:
            self.due[scope_key] = due

    def start(self, works: Iterable[DueWork], now: float | None = None) -> None:
        """``works`` are starting: they cover nothing new from now on.

        A later window of the same scope that is not among them stays pending.
        """
        now = time.time() if now is None else now
        due, started, expiry = self.due, self.started, self._expiry
        for w in works:
            key = w.scope_key
            pending = due.get(key)
            if pending is not None and pending <= w.due:
                del due[key]
            if started.get(key, -1.0) < w.due:
                started[key] = w.due
                expiry.append((now + self.keep_started, key, w.due))
        while expiry and expiry[0][0] <= now:
            _, key, was = expiry.popleft()
            if started.get(key) == was:  # not started again since
                del started[key]


def fold(works: Iterable[DueWork]) -> tuple[list[DueWork], int]:
    """One work per scope (its latest window), and how many windows were folded into them."""
    latest: dict[str, DueWork] = {}
    n = 0
    for w in works:
        n += 1
        key = w.scope_key
        seen = latest.get(key)
        if seen is None or seen.due < w.due:
            latest[key] = w
    return list(latest.values()), n - len(latest)


class MemoryState:
    """A dict-backed ``DebounceState`` (unit tests, and the reference for the tables)."""

    def __init__(self) -> None:
        self.pending = PendingIndex()
        self.due: dict[str, DueWork] = {}

    def pending_due(self, scope_key: str) -> float | None:
        return self.pending.get(scope_key)

    def started_due(self, scope_key: str) -> float | None:
        return self.pending.started.get(scope_key)

    def add_due(self, work: DueWork) -> None:
        self.due[work.key] = work
        self.pending.add(work.scope_key, work.due)

    def start(self, works: Iterable[DueWork], now: float | None = None) -> None:
        """The timer took ``works``: they are running and no longer pending."""
        self.pending.start(works, now)
