"""Project config invalidation: debounce requests, recompute configs when due.

Topic ``project-config-invalidations`` (keyed by organization), a due table, a timer:

- The due table (``streams.projectconfigs.duetable``) holds the countdown windows not
  yet published; nothing is written for a skipped request. The debounce index (scope
  -> due time of its pending window) is kept in memory
  (``streams.projectconfigs.debounce``).
- The requests are read by a direct (librdkafka) consumer, group
  ``<app id>.invalidation`` (``STREAMS_DIRECT_CONSUMERS``, the default): Faust's
  per-message path was the largest single cost of a request (bench/README.md). The
  table is then kept by this module and its windows are **held** through their
  requests: each partition's oldest request whose window is not published yet is
  written to ``<app id>-invalidation-holds`` (compacted, key ``held:<partition>``),
  and the next owner of the partition, after a crash or a
  rebalance, reads the requests again from there (``DueRecovery`` tells the consumer
  where to start). The batches are committed as for any agent, so the group's lag is
  the backlog. When partitions are assigned, that topic and the due changelog
  (``<app id>-invalidation-due-changelog``: window entries an older version left) are
  read to their true end before any of their requests is
  handed over; when partitions are revoked, their windows are dropped once no
  recompute runs.
- With ``STREAMS_DIRECT_CONSUMERS=0`` the agent runs through Faust, which commits the
  offsets: the windows are then written to a Faust table on the same changelog, one
  entry per batch of requests and partition.
- A timer over the partitions this worker owns starts what is due (and what its
  partition's requests allow, ``streams.projectconfigs.gate``), folds the windows
  of one scope into one recompute, and deletes the windows only after the broker
  acknowledged the configs: a pending recompute survives kill -9 and rebalances.
  Window-close callbacks are not used: Faust fires them for one partition per
  window and forgets them on a crash (docs/broker.md F1).

Table writes name their changelog partition explicitly (the request's partition):
in a batch there is no single "current event" for Faust to take it from.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Coroutine, Sequence
from typing import Any, Final

from faust.types import TP

from streams import metrics
from streams.agents.base import AgentSpec, Message, Retry, RetryPolicy, attach, runs_here
from streams.agents.project_configs import ConfigsOut, Published
from streams.agents.served_configs import feed_of
from streams.agents.wrapper.direct import DirectConsumer
from streams.errors import PermanentFailure, PublishError
from streams.projectconfigs.changelog import ChangelogWriter
from streams.projectconfigs.debounce import DueWork, Request, fold, offer
from streams.projectconfigs.duetable import DueTable
from streams.projectconfigs.gate import PartitionGate
from streams.projectconfigs.recompute import recompute
from streams.projectconfigs.scopes import Scope, scope_of
from streams.projectconfigs.tail import read_tail
from streams.runtime import Runtime
from streams.silo import REGION_ONLY

log = logging.getLogger(__name__)

NAME = "invalidation"
TOPIC: Final = "project-config-invalidations"
TICK = 0.05  # timer interval: how late after its due time a recompute may start
MAX_BATCH = 2_000  # due recomputes per tick (one query per scope kind)
MAX_IN_FLIGHT = 2  # batches handed to the producer and not yet acknowledged
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
    "streams_invalidation_recomputes_total",
    "Scope recomputes whose configs were published, by scope kind (one per scope per run).",
    ("scope",),
)
FOLDED = metrics.counter(
    "streams_invalidation_windows_folded_total",
    "Countdown windows served by a recompute of a later window of the same scope.",
)
DEFERRED = metrics.counter(
    "streams_invalidation_deferred_total",
    "Timer passes that held due windows back until their partition's requests were read.",
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

    MAX_SCOPES = 100_000  # then the cache starts over (about 230 B a scope: 23 MB at most)

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


class Invalidation:
    """The request agent's handlers and the timer's work, around one ``DueTable``."""

    def __init__(
        self,
        app: Any,
        runtime: Runtime,
        state: DueTable,
        changelog: ChangelogWriter,
        out: ConfigsOut,
        *,
        holds: ChangelogWriter | None = None,
    ) -> None:
        """``holds``: where held windows' requests are needed from (direct mode)."""
        self.app = app
        self.changelog = changelog
        self.holds = holds
        self.runtime = runtime
        self.state = state
        self.out = out
        self.source = runtime.topic(TOPIC)
        self.gate = PartitionGate(self._highwater)
        self.ready = False
        # Direct mode: the partitions whose windows are loaded (None: Faust's assignment).
        self.loaded: set[int] | None = None
        self.direct: DirectConsumer | None = None
        self.changelog_topic = changelog.topic
        self._running = asyncio.Lock()  # a recompute pass vs. partitions moving
        self._acking: set[asyncio.Task[None]] = set()  # batches awaiting their acks
        self._attempts: dict[str, int] = {}
        self._single: set[str] = set()
        self._reader = RequestReader()
        self._decided = Decided()
        self._gauged = 0.0
        self._written: dict[int, int] = {}  # partition -> the hold last written

    def _highwater(self, partition: int) -> int | None:
        if self.direct is not None:
            return self.direct.highwater(partition)
        try:
            end = self.app.consumer.highwater(TP(self.source, partition))
        except Exception:  # no consumer yet, or a driver without it: the clock decides
            return None
        return None if end is None else int(end)

    # -- requests -------------------------------------------------------------------

    async def handle_batch(self, msgs: Sequence[Message]) -> None:
        # Validate everything before writing anything: on error the wrapper replays
        # the batch one by one, and the bad message alone goes to the dead letters.
        read = self._reader.read
        requests = [(read(m.value), m) for m in msgs]
        counts: dict[tuple[bool, str, str], int] = {}
        state, decided, now = self.state, self.gate.decided, time.time()
        held = not state.entries_written
        written = self._written
        unheld = False  # a window opened on a partition without a hold record yet
        try:
            for req, msg in requests:
                decision = offer(state, req, msg.partition)
                if held and decision.scheduled:
                    state.opened(msg.offset)  # read again by a next owner until published
                    unheld = unheld or msg.partition not in written
                decided(msg.partition, msg.offset, req.requested_at, now)
                ident = (decision.scheduled, decision.reason, req.trigger)
                counts[ident] = counts.get(ident, 0) + 1
        finally:
            # Also on error: what was decided before it stays decided (counted, and its
            # windows written or held: replayed one by one, those requests are skipped).
            state.seal()
            self._decided.add(counts)
        if held:
            # Later holds only move forward: written as windows are published (finish).
            if unheld and self._write_holds() and self.holds is not None:
                # Before the batch is committed: a partition's first hold is known to its
                # next owner (later records only move it forward).
                await self.holds.flush()
        elif any(scheduled for scheduled, _, _ in counts):
            # Before the batch is acknowledged: a committed request has its window durable.
            await self.changelog.flush()

    async def handle(self, msg: Message) -> None:
        await self.handle_batch([msg])

    def _write_holds(self) -> bool:
        """Held windows: write to the holds topic (key ``'held:<partition>'``) where each
        partition's requests are needed from, where that moved: its oldest request whose
        window is not published yet, or, with none, the offset after its last decided
        request. The next owner of the partition starts reading there, before the
        group's commit. Whether a partition got its first record (which must be
        acknowledged before the batch is committed).

        Every value written is at most the offset of any window opened later (a later
        window's request comes after the position, and a pending one after the oldest),
        so a record that lands late, or is lost, only makes a next owner read more: no
        tombstone is ever written, and only a partition's first record is waited for."""
        writer = self.holds
        if writer is None or self.state.entries_written:
            return False
        holds, written, position = self.state.holds(), self._written, self.gate.position
        first = False
        for p in holds.keys() | written.keys():
            offset = holds.get(p)
            if offset is None:
                offset = position.get(p)
                if offset is None:  # nothing decided since it was assigned: keep the record
                    continue
            was = written.get(p)
            if was != offset:
                writer.send(p, hold_key(p), offset)
                written[p] = offset
                first = first or was is None
        return first

    # -- timer ----------------------------------------------------------------------

    def owned(self) -> set[int]:
        if self.loaded is not None:
            return set(self.loaded)
        return {
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == self.source
        }

    def take_due(self, now: float) -> list[DueWork]:
        """What may start now on owned partitions, earliest first, up to MAX_BATCH; a
        suspect work alone."""
        horizons: dict[int, float] = {}
        for partition in self.owned():
            horizon = horizons[partition] = self.gate.horizon(partition, now)
            first = self.state.next_due(partition)
            if first is not None and horizon < first <= now:
                DEFERRED.inc()  # due by the clock, but its requests are not all read yet
        out: list[DueWork] = []
        single = self._single
        for work in self.state.take(horizons):
            if single and work.key in single:
                if out:  # alone, in the next pass
                    self.state.requeue(work, now)
                    continue
                return [work]
            out.append(work)
            if len(out) >= MAX_BATCH:
                break
        return out

    async def tick(self) -> int:
        """Start the windows due now (up to ``MAX_BATCH``); how many it started."""
        if not self.ready or (self.loaded is None and self.app.rebalancing):
            return 0
        if self.out.served is None:
            self.out.served = feed_of(self.app)  # installed after this agent, or not here
        async with self._running:
            if len(self._acking) >= MAX_IN_FLIGHT:
                await asyncio.wait(self._acking, return_when=asyncio.FIRST_COMPLETED)
            now = time.time()
            works = self.take_due(now)
            if now - self._gauged >= 1.0:
                self._gauged = now
                PENDING.set(self.state.count(self.owned()))
            if not works:
                return 0
            acked = await self.begin(works)
            if acked is not None:
                task = asyncio.create_task(acked)
                self._acking.add(task)
                task.add_done_callback(self._acking.discard)
            return len(works)

    async def run(self, works: list[DueWork]) -> None:
        """Recompute ``works`` and wait until their configs are acknowledged."""
        acked = await self.begin(works)
        if acked is not None:
            await acked

    async def begin(self, works: list[DueWork]) -> Coroutine[Any, Any, None] | None:
        """Read ``works``' configs and hand them to the producer; returns what waits for
        the acknowledgements (None: the recompute failed and was rescheduled).

        The timer starts the next batch while a batch waits for its acknowledgements
        (up to ``MAX_IN_FLIGHT``): a pass was mostly waiting, on PostgreSQL and then on
        the broker. Batches are handed to the producer in the order they start, so a
        later window's config is never published before an earlier one's.
        """
        # Pending ends as the recompute starts: a request decided from now on opens
        # a new window, whatever its requested_at says.
        self.state.start(works)
        started = time.time()
        latest, folded = fold(works)
        try:
            pool = await self.runtime.pool()
            async with pool.connection() as conn:
                pubs = await recompute(conn, latest)
            published = self.out.start(pubs)
        except Exception as exc:
            await self.failed(works, started, exc)
            return None
        return self.finish(works, latest, folded, published, started)

    async def finish(
        self,
        works: list[DueWork],
        latest: list[DueWork],
        folded: int,
        published: Published,
        started: float,
    ) -> None:
        try:
            await published.acknowledged()
        except Exception as exc:
            await self.failed(works, started, exc)
            return
        done = time.time()
        # Removed only now: a crash before this line recomputes again (at least once).
        self.state.remove(works)
        self._write_holds()  # not waited for: a record that lands late only replays more
        kinds: dict[str, int] = {}
        for w in latest:
            kinds[w.scope_kind] = kinds.get(w.scope_kind, 0) + 1
        if self._attempts or self._single:  # retries under way (rarely): forget these
            for w in works:
                key = w.key
                self._attempts.pop(key, None)
                self._single.discard(key)
        metrics.observe_many(LATENESS, [max(0.0, done - w.due) for w in works])
        for kind, n in kinds.items():
            RECOMPUTES.labels(kind).inc(n)
        if folded:
            FOLDED.inc(folded)
        log.info(
            "invalidation.recomputed",
            extra={"windows": len(works), "folded": folded, "configs": len(published.pubs)},
        )

    async def failed(self, works: list[DueWork], started: float, exc: Exception) -> None:
        RECOMPUTE_FAILURES.inc()
        log.warning(
            "invalidation.recompute.failed", extra={"works": len(works), "error": repr(exc)}
        )
        await self.retry_later(works, started, exc)

    async def settled(self) -> None:
        """Wait until no batch waits for its acknowledgements."""
        while self._acking:
            await asyncio.wait(set(self._acking))

    async def retry_later(self, works: list[DueWork], now: float, exc: Exception) -> None:
        if len(works) > 1:
            # Isolate a poison work: retry each alone, right away.
            for w in works:
                self._single.add(w.key)
                self.state.requeue(w, now)
            return
        w = works[0]
        attempts = self._attempts.get(w.key, 0) + 1
        self._attempts[w.key] = attempts
        decision = RECOMPUTE_RETRY.decide(exc, attempts)
        if isinstance(decision, Retry):
            self.state.requeue(w, now + decision.delay)
            return
        await self.out.dead_letter(w, f"recompute failed {attempts} times: {exc!r}")
        self.state.remove([w])
        self._write_holds()
        self._attempts.pop(w.key, None)
        self._single.discard(w.key)

    # -- direct mode: windows follow the direct consumer's partitions ------------------

    async def adopt(
        self, partitions: list[int], records: list[tuple[int, Any, Any]]
    ) -> dict[int, int]:
        """``partitions`` are this worker's now: their windows (read from the changelog to
        its true end) join the table; the timer may start them. Returns where each
        partition's requests are needed from (its held windows' oldest request)."""
        holds, records = split_holds(records)
        async with self._running:
            data = self.state.table.data
            apply_records(data, records)
            self.state.rebuild()
            self._written.update(holds)
            self.gate.forget(partitions)
            # Added to what is loaded: an eager rebalance revoked everything before (so
            # this is the whole assignment), an incremental one hands over only the new.
            self.loaded = (self.loaded or set()) | set(partitions)
            self.ready = True
        log.info(
            "invalidation.recovered",
            extra={
                "due": len(self.state.windows),
                "read": len(records),
                "partitions": partitions,
                "held": holds,
            },
        )
        return holds

    async def release(self, partitions: list[int]) -> None:
        """``partitions`` go to another worker: once no recompute runs, forget their
        windows (the next owner reads them from the changelog)."""
        async with self._running:
            await self.settled()  # their published windows are removed first
            gone = set(partitions)
            # The next owner reads the changelog: it must not run a published window again.
            self.state.rewrite(gone)
            self._write_holds()
            try:
                await self.changelog.flush()
                if self.holds is not None:
                    await self.holds.flush()
            except PublishError as exc:  # then the next owner runs some of them again
                log.error("invalidation.release.rewrite_failed", extra={"error": repr(exc)})
            self.state.drop(gone)
            for partition in gone:
                self._written.pop(partition, None)
            self.loaded = (self.loaded or set()) - gone
        log.info(
            "invalidation.released",
            extra={"partitions": partitions, "due": len(self.state.windows)},
        )

    async def on_recovered(self) -> None:
        owned = sorted(self.owned())
        topic = self.changelog_topic
        try:
            tail = await asyncio.to_thread(read_tail, self.runtime.settings, topic, owned)
        except Exception as exc:
            # Loud, not fatal: what Faust recovered is still run.
            log.error("invalidation.recovery.tail_failed", extra={"error": repr(exc)})
            tail = []
        data = self.state.table.data
        apply_records(data, split_holds(tail)[1])
        self.state.rebuild()
        self.ready = True
        log.info(
            "invalidation.recovered",
            extra={"due": len(self.state.windows), "tail": len(tail), "partitions": owned},
        )


HOLD_PREFIX = "held:"


def hold_key(partition: int) -> str:
    """The holds topic's key for a partition (where its requests are needed from)."""
    return f"{HOLD_PREFIX}{partition}"


def split_holds(
    records: list[tuple[int, Any, Any]],
) -> tuple[dict[int, int], list[tuple[int, Any, Any]]]:
    """Changelog records -> (partition -> where its requests are needed from, as last
    written; the other records)."""
    holds: dict[int, int] = {}
    rest = []
    for record in records:
        _, key, value = record
        if isinstance(key, str) and key.startswith(HOLD_PREFIX):
            partition = int(key[len(HOLD_PREFIX) :])
            if isinstance(value, int) and value >= 0:
                holds[partition] = value
            else:
                holds.pop(partition, None)
        else:
            rest.append(record)
    return holds, rest


def apply_records(data: dict[Any, Any], records: list[tuple[int, Any, Any]]) -> None:
    """Changelog records, in order, onto the table's data (a tombstone deletes)."""
    for _, key, value in records:
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value


class DueRecovery:
    """The direct consumer's ``Listener``: windows loaded before a partition's requests
    are read, dropped when it is revoked (both on the consumer thread, waiting for the
    event loop)."""

    def __init__(self, inv: Invalidation, consumer: DirectConsumer) -> None:
        self.inv = inv
        self.consumer = consumer

    def assigned(self, partitions: list[int]) -> dict[int, int]:
        settings, holds = self.inv.runtime.settings, self.inv.holds
        try:
            records = read_tail(settings, self.inv.changelog_topic, partitions, whole=True)
            if holds is not None:
                records += read_tail(settings, holds.topic, partitions, whole=True)
        except Exception as exc:
            # Loud, not fatal: a window lost here is recomputed when its scope is next
            # requested; the requests not yet committed are read again anyway.
            log.error("invalidation.recovery.failed", extra={"error": repr(exc)})
            records = []
        needed: dict[int, int] | None = self._wait(self.inv.adopt(partitions, records))
        return needed or {}

    def revoked(self, partitions: list[int]) -> None:
        self._wait(self.inv.release(partitions))

    def _wait(self, step: Any) -> Any:
        loop = self.consumer.loop
        if loop is None or loop.is_closed():
            step.close()
            return None
        return asyncio.run_coroutine_threadsafe(step, loop).result()


def changelog_topic(app: Any) -> str:
    """The due table's changelog: the name Faust gives a table's changelog topic."""
    return f"{app.conf.id}-invalidation-due-changelog"


def holds_topic(app: Any) -> str:
    """Where each partition's held requests are needed from (direct mode; compacted).
    Not the due changelog: a worker of an older version reads every record there as
    windows."""
    return f"{app.conf.id}-invalidation-holds"


def install(app: Any, runtime: Runtime) -> None:
    if not runs_here(runtime, NAME, REGION_ONLY):
        return  # before the tables and the timer: a skipped agent creates nothing
    from streams import catalogue, topics

    partitions = catalogue.spec(TOPIC).partitions
    direct = runtime.settings.direct_consumers
    due: Any
    holds = None
    if direct:
        due = LocalTable()
        topic = changelog_topic(app)
        topics.create_changelog(runtime.settings, topic, partitions)
        topics.create_changelog(runtime.settings, holds_topic(app), partitions)
        holds = ChangelogWriter(runtime.settings, holds_topic(app), name="invalidation-holds")
    else:
        due = app.Table(
            "invalidation-due",
            default=None,
            partitions=partitions,
            help="Recomputes scheduled and not yet published, by '<scope>@<window start ms>'.",
        )
        topic = due.changelog_topic.get_topic_name()
    out = ConfigsOut.for_runtime(runtime)
    changelog = ChangelogWriter(runtime.settings, topic)
    # Direct: windows are held through their requests (``holds``); through Faust, which
    # commits the offsets, they are written to the changelog.
    state = DueTable(due, changelog, entries=not direct)
    inv = Invalidation(app, runtime, state, changelog, out, holds=holds)

    async def run_due() -> None:
        # A full batch: more may be due. The next pass starts at once, not a tick later:
        # on a busy event loop a tick's sleep lasted 165 ms, a quarter of the time the
        # timer needs for a batch of 2,000 (bench/README.md, 100k projects).
        while await inv.tick() >= MAX_BATCH:
            pass

    app.timer(TICK, name="invalidation-due")(run_due)

    runner = attach(
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
            direct=direct,
            # A request waits out its countdown (5 s by default), so 50 ms more to read
            # it costs nothing a user sees, while Tansu answers every fetch only after
            # the whole wait: at 10 ms the broker and this consumer handled 100 small
            # fetches a second. At 100k projects and 5,000 req/s: worker CPU per request
            # 140-154 -> 120-138 us, the broker 50-56% -> 40-47% of a core, p99 after
            # the countdown 0.65-1.3 -> 0.25-0.41 s; p50 at 1k projects unchanged.
            fetch_wait=0.05,
        ),
    )
    consumer = next(
        (c for c in runtime.consumers if isinstance(c, DirectConsumer) and c.name == NAME), None
    )
    if direct and runner is not None and consumer is not None:
        inv.direct = consumer
        consumer.track_ends = True  # the gate's high watermarks
        consumer.listener = DueRecovery(inv, consumer)
        return

    async def recovered() -> None:
        await inv.on_recovered()

    due.on_recover(recovered)


class LocalTable:
    """The due windows of the partitions this worker owns, when no Faust table keeps
    them (direct mode): ``DueTable`` needs only ``data``."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
