"""Project config invalidation: debounce requests, recompute configs when due.

Topic ``project-config-invalidations`` (keyed by organization), two tables, a timer:

- ``invalidation-markers``: a Faust *windowed* table (tumbling grid of
  ``STREAMS_INVALIDATION_COUNTDOWN`` seconds) of (scope, grid window) -> due time:
  the debounce state the agent reads to skip covered requests
  (``streams.projectconfigs.debounce``);
- ``invalidation-due``: a plain changelogged table of the recomputes not yet
  published. A timer over the partitions this worker owns runs what is due and
  deletes it only after the broker acknowledged the configs, so a pending recompute
  survives kill -9 and rebalances (it is recovered from the changelog by whichever
  worker owns the partition next). Window-close callbacks are not used: Faust fires
  them for one partition per window and forgets them on a crash (docs/broker.md F1).

Table writes name their changelog partition explicitly (the request's partition):
in a batch there is no single "current event" for Faust to take it from.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Sequence
from typing import Any, Final

from streams import metrics
from streams.agents.base import AgentSpec, Message, Retry, RetryPolicy, attach, runs_here
from streams.agents.project_configs import ConfigsOut
from streams.errors import PermanentFailure
from streams.projectconfigs.debounce import (
    DueWork,
    Request,
    WindowRange,
    offer,
)
from streams.projectconfigs.recompute import recompute
from streams.projectconfigs.scopes import Scope, scope_of
from streams.runtime import Runtime
from streams.silo import REGION_ONLY

log = logging.getLogger(__name__)

NAME = "invalidation"
TOPIC: Final = "project-config-invalidations"
TICK = 0.1  # timer interval: how late after its due time a recompute may start
MAX_BATCH = 2_000  # due recomputes per tick (one query per scope kind)
# A failing recompute is retried alone, 11 times with backoff (1 s doubling, up to
# 30 s: about 4 minutes in all), then its request goes to the dead letters (replayable).
RECOMPUTE_RETRY = RetryPolicy(times=11, delay=1.0, backoff=2.0, max_delay=30.0)
MAX_TRIGGERS = 200  # distinct trigger label values before 'other'

SCHEDULED = metrics.counter(
    "streams_invalidation_scheduled_total",
    "Invalidation requests that scheduled a recompute, by scope kind and trigger.",
    ("reason", "trigger"),
)
SKIPPED = metrics.counter(
    "streams_invalidation_skipped_total",
    "Invalidation requests skipped because a covering scope was pending.",
    ("reason", "trigger"),
)
RECOMPUTES = metrics.counter(
    "streams_invalidation_recomputes_total", "Recomputes published, by scope kind.", ("scope",)
)
RECOMPUTE_FAILURES = metrics.counter(
    "streams_invalidation_recompute_failures_total", "Recompute batches that failed (retried)."
)
PENDING = metrics.gauge(
    "streams_invalidation_pending", "Recomputes scheduled and not yet published (owned here)."
)
LATENESS = metrics.histogram(
    "streams_invalidation_lateness_seconds",
    "From a recompute's due time (request + countdown) to its configs being acknowledged.",
)

_triggers: set[str] = set()


def trigger_label(trigger: str) -> str:
    """Triggers are free text from clients; cap the label's cardinality."""
    label = "".join(c if c.isalnum() or c in "._-:" else "_" for c in trigger[:64]) or "none"
    if label in _triggers:
        return label
    if len(_triggers) >= MAX_TRIGGERS:
        return "other"
    _triggers.add(label)
    return label


class RequestReader:
    """Decoded request values to ``Request``s, reusing one ``Scope`` per distinct scope
    (its covering keys are computed once, not per request)."""

    MAX_SCOPES = 100_000  # then the cache starts over (bounded memory)

    def __init__(self) -> None:
        self._scopes: dict[tuple[Any, ...], Scope] = {}

    def read(self, value: dict[str, Any]) -> Request:
        ident = (
            value["scope"],
            value.get("organization_id"),
            value.get("project_id"),
            value.get("public_key"),
        )
        scope = self._scopes.get(ident)
        if scope is None:
            try:
                scope = scope_of(value)
            except ValueError as exc:
                raise PermanentFailure(str(exc)) from exc
            if len(self._scopes) >= self.MAX_SCOPES:
                self._scopes.clear()
            self._scopes[ident] = scope
        countdown = float(value["countdown"])
        if not math.isfinite(countdown) or countdown < 0:
            raise PermanentFailure(f"countdown {countdown!r} is not a finite number >= 0")
        return Request(scope, value["trigger"], countdown, value["requested_at"].timestamp())


class Decided:
    """Per-batch decision counts, added to the metrics once per (label set) per batch."""

    MAX_CHILDREN = 10_000  # cached metric children (raw triggers are free text)

    def __init__(self) -> None:
        self._children: dict[tuple[bool, str, str], Any] = {}

    def add(self, counts: dict[tuple[bool, str, str], int]) -> None:
        children = self._children
        for ident, n in counts.items():
            child = children.get(ident)
            if child is None:
                scheduled, reason, trigger = ident
                counter = SCHEDULED if scheduled else SKIPPED
                child = counter.labels(reason, trigger_label(trigger))
                if len(children) >= self.MAX_CHILDREN:
                    children.clear()
                children[ident] = child
            child.inc(n)


class TableState:
    """``DebounceState`` over the two Faust tables, plus the timer's due-time heap."""

    def __init__(self, markers: Any, due: Any) -> None:
        self.markers = markers  # the windowed table (its ``window`` is the grid)
        self.due = due
        self.heap: list[tuple[float, str]] = []

    def marker(self, scope_key: str, window: WindowRange) -> float | None:
        value = self.markers.data.get((scope_key, window))
        return None if value is None else float(value)

    def set_marker(self, partition: int, scope_key: str, window: WindowRange, due: float) -> None:
        key = (scope_key, window)
        self.markers.data[key] = due
        self.markers.send_changelog(partition, key, due)
        # Lets Faust's table cleanup expire the marker with its grid window.
        self.markers._maybe_set_key_ttl(key, partition)

    def add_due(self, work: DueWork) -> None:
        value = work.to_json()
        self.due.data[work.key] = value
        self.due.send_changelog(work.partition, work.key, value)
        heapq.heappush(self.heap, (work.due, work.key))

    def remove_due(self, work: DueWork) -> None:
        self.due.data.pop(work.key, None)
        self.due.send_changelog(work.partition, work.key, None, value_serializer="raw")

    def rebuild(self, now: float, expires: float) -> None:
        """After recovery: index the recovered due work; drop long-expired markers."""
        self.heap = [(float(v["due"]), k) for k, v in list(self.due.data.items())]
        heapq.heapify(self.heap)
        stale = [k for k in list(self.markers.data.keys()) if k[1][1] < now - expires]
        for k in stale:
            # Local only: the changelog's retention removes them on a real cluster.
            self.markers.data.pop(k, None)


class Invalidation:
    """The request agent's handlers and the timer's work, around one ``TableState``."""

    def __init__(self, app: Any, runtime: Runtime, state: TableState, out: ConfigsOut) -> None:
        self.app = app
        self.runtime = runtime
        self.state = state
        self.out = out
        self.window = state.markers.window
        self.grid = float(self.window.size)
        self.source = runtime.topic(TOPIC)
        self.ready = False
        self._attempts: dict[str, int] = {}
        self._single: set[str] = set()
        self._reader = RequestReader()
        self._decided = Decided()
        self._gauged = 0.0

    # -- requests -------------------------------------------------------------------

    async def handle_batch(self, msgs: Sequence[Message]) -> None:
        # Validate everything before writing anything: on error the wrapper replays
        # the batch one by one, and the bad message alone goes to the dead letters.
        read = self._reader.read
        requests = [(read(m.value), m.partition) for m in msgs]
        # Requests of a batch share few distinct times: one grid lookup per time.
        windows: dict[float, WindowRange] = {}
        current = self.window.current

        def window_of(ts: float) -> WindowRange:
            w = windows.get(ts)
            if w is None:
                w = windows[ts] = current(ts)
            return w

        counts: dict[tuple[bool, str, str], int] = {}
        state, grid = self.state, self.grid
        try:
            for req, partition in requests:
                decision = offer(state, window_of, grid, req, partition)
                ident = (decision.scheduled, decision.reason, req.trigger)
                counts[ident] = counts.get(ident, 0) + 1
        finally:
            # Also on error: what was decided before it stays decided (and counted).
            self._decided.add(counts)

    async def handle(self, msg: Message) -> None:
        await self.handle_batch([msg])

    # -- timer ----------------------------------------------------------------------

    def owned(self) -> set[int]:
        return {
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == self.source
        }

    def take_due(self, now: float) -> list[DueWork]:
        """Pop what is due on owned partitions; one retried (suspect) work alone."""
        owned = self.owned()
        batch: dict[str, DueWork] = {}
        heap = self.state.heap
        while heap and heap[0][0] <= now and len(batch) < MAX_BATCH:
            _, key = heapq.heappop(heap)
            raw = self.state.due.data.get(key)
            if raw is None or key in batch:
                continue  # published already, or a duplicate heap entry
            work = DueWork.from_json(raw)
            if work.partition not in owned:
                continue  # its owner's timer runs it; regained partitions are re-indexed
            if key in self._single:
                if batch:
                    heapq.heappush(heap, (now, key))
                    break
                return [work]
            batch[key] = work
        return list(batch.values())

    async def tick(self) -> None:
        if not self.ready or self.app.rebalancing:
            return
        now = time.time()
        works = self.take_due(now)
        if now - self._gauged >= 1.0:
            # A full scan of the due table: once a second, not every tick.
            self._gauged = now
            owned = self.owned()
            PENDING.set(
                sum(1 for v in list(self.state.due.data.values()) if v["partition"] in owned)
            )
        if works:
            await self.run(works)

    async def run(self, works: list[DueWork]) -> None:
        started = time.time()
        try:
            pool = await self.runtime.pool()
            async with pool.connection() as conn:
                pubs = await recompute(conn, works)
            await self.out.publish(pubs)
        except Exception as exc:
            RECOMPUTE_FAILURES.inc()
            log.warning(
                "invalidation.recompute.failed",
                extra={"works": len(works), "error": repr(exc)},
            )
            await self.retry_later(works, started, exc)
            return
        done = time.time()
        for w in works:
            # Cleared only now: a crash before this line recomputes again (at least once).
            self.state.remove_due(w)
            self._attempts.pop(w.key, None)
            self._single.discard(w.key)
            RECOMPUTES.labels(w.scope_kind).inc()
            LATENESS.observe(max(0.0, done - w.due))
        log.info("invalidation.recomputed", extra={"works": len(works), "configs": len(pubs)})

    async def retry_later(self, works: list[DueWork], now: float, exc: Exception) -> None:
        if len(works) > 1:
            # Isolate a poison work: retry each alone, right away.
            for w in works:
                self._single.add(w.key)
                heapq.heappush(self.state.heap, (now, w.key))
            return
        w = works[0]
        attempts = self._attempts.get(w.key, 0) + 1
        self._attempts[w.key] = attempts
        decision = RECOMPUTE_RETRY.decide(exc, attempts)
        if isinstance(decision, Retry):
            heapq.heappush(self.state.heap, (now + decision.delay, w.key))
            return
        await self.out.dead_letter(w, f"recompute failed {attempts} times: {exc!r}")
        self.state.remove_due(w)
        self._attempts.pop(w.key, None)
        self._single.discard(w.key)

    def on_recovered(self) -> None:
        self.state.rebuild(time.time(), float(self.state.markers.window.expires or 0))
        self.ready = True
        log.info(
            "invalidation.recovered",
            extra={"due": len(self.state.heap), "partitions": sorted(self.owned())},
        )


def install(app: Any, runtime: Runtime) -> None:
    settings = runtime.settings
    if not runs_here(runtime, NAME, REGION_ONLY):
        return  # before the tables and the timer: a skipped agent creates nothing
    from streams import catalogue

    partitions = catalogue.spec(TOPIC).partitions
    grid = max(1, round(settings.invalidation_countdown))
    markers = app.Table(
        "invalidation-markers",
        default=None,
        partitions=partitions,
        help="Debounce markers: (scope, grid window) -> due time of its recompute.",
    ).tumbling(grid, expires=max(60.0, 10.0 * grid))
    due = app.Table(
        "invalidation-due",
        default=None,
        partitions=partitions,
        help="Recomputes scheduled and not yet published, by '<scope>@<window start ms>'.",
    )
    out = ConfigsOut.for_runtime(runtime)
    inv = Invalidation(app, runtime, TableState(markers.table, due), out)

    async def recovered() -> None:
        inv.on_recovered()

    async def run_due() -> None:
        await inv.tick()

    due.on_recover(recovered)
    app.timer(TICK, name="invalidation-due")(run_due)

    attach(
        app,
        runtime,
        AgentSpec(
            name=NAME,
            topic=TOPIC,
            silos=REGION_ONLY,
            handler=inv.handle,
            batch_handler=inv.handle_batch,
            retry=RetryPolicy(times=2, delay=0.1),
            deadline=30.0,
            batch_size=2_000,
            batch_within=0.05,
        ),
    )
