"""Direct consumption: a librdkafka consumer feeds a stateless agent, one commit per batch.

Faust hands each record through aiokafka's Python record parser, an ``Event``, a
channel and the stream iterator: about 100-150 us a message on the benchmark machine,
the largest single cost of the webhook worker (bench/README.md; docs/broker.md: a
confluent consumer reads 1.3M msg/s where a trivial Faust agent reads 10.5k/s). An
agent with no Faust table and no per-event context needs none of it. For such an
agent (``AgentSpec.direct``) a consumer thread takes batches of up to ``batch_size``
records from librdkafka's prefetched queue, hands them to the agent's wrapper on the
worker's event loop, waits until the batch is handled (each message done, retried on
the delayed path or dead-lettered) and then commits the batch's offsets, once,
synchronously. So a batch runs end to end: decode, database, produce and commit.

Delivery is at least once, as with Faust: a crash between the handling and the
commit hands the batch again to the next owner (kill -9 tests cover it). Rebalance
callbacks run inside ``consume()`` on this thread, between batches, so a revoked
partition never has a batch in flight. The group is ``<app id>.<agent name>``, one per
agent, so the lag exporter shows each agent's lag on its own.

Before a batch is handed over, two steps may hold records back: a partition whose
offsets jump is read again from the gap (``gaps.py``: the embedded broker's fetch can
step over a batch), and records this worker published and already handed to the agent
itself are waited for instead of handed again (``handoff.py``); both are committed
with the batch.

A consumer made with ``follows`` joins no group: it reads the partitions ``follow``
names (the served-configs feed follows its Faust table's partitions, so the worker that
serves a key is the one that feeds it) and commits to its group all the same.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from streams import kafka_config, metrics
from streams.agents.wrapper.gaps import Gaps
from streams.agents.wrapper.handoff import Handoff, settled
from streams.agents.wrapper.message import RawEvent
from streams.agents.wrapper.spec import AgentSpec
from streams.settings import Settings

log = logging.getLogger(__name__)

ERRORS = metrics.counter(
    "streams_consumer_errors_total",
    "Errors of a direct (librdkafka) agent consumer, by agent and kind "
    "(fetch, handler, commit, assign); a handler error re-reads the batch after a backoff.",
    ("agent", "kind"),
)

GAPS = metrics.counter(
    "streams_consumer_gaps_total",
    "Fetches of a direct agent that returned a partition's records past a gap: refetched "
    "(read again from the gap, nothing skipped) or accepted (still there after the "
    "patience: records no fetch returns, skipped and logged).",
    ("agent", "outcome"),
)

# Tansu holds a fetch for the whole wait (docs/broker.md): the wait is half a hop's
# latency at light load. librdkafka polls in its own thread, so a short wait costs the
# worker's Python nothing; on Apache Kafka it only bounds idle polls.
DEFAULT_FETCH_WAIT = 0.01
_BACKOFF_FIRST, _BACKOFF_MAX = 0.5, 30.0


def group_id(settings: Settings, agent: str) -> str:
    """The consumer group of a direct agent: one per agent."""
    return f"{settings.app_id}.{agent}"


class Runner(Protocol):
    """What the consumer drives: an ``InstrumentedAgent`` (or a test's stand-in)."""

    @property
    def spec(self) -> AgentSpec: ...

    async def process(self, events: Sequence[RawEvent]) -> None: ...


class Listener(Protocol):
    """Told of partitions moving, on the consumer thread, before records of a newly
    assigned partition are handed over and before a revoked one's next owner starts
    (an agent with state per partition: load it, or drop it)."""

    def assigned(self, partitions: list[int]) -> Mapping[int, int] | None:
        """Load the state of ``partitions``; returns, per partition, an offset to start
        at if it is before the group's commit (records still needed after their batch
        was committed: the invalidation's pending windows are read again)."""
        ...

    def revoked(self, partitions: list[int]) -> None: ...


class DirectConsumer:
    """One direct agent's consumer thread (see the module docstring)."""

    def __init__(
        self,
        runner: Runner,
        settings: Settings,
        topic: str,
        *,
        compacted: bool = False,
        follows: bool = False,
    ) -> None:
        self.runner = runner
        self.name = runner.spec.name
        self.topic = topic
        self.batch_size = max(1, runner.spec.batch_size)
        # At most DEFAULT_FETCH_WAIT: the longer wait `up` gives Faust's consumers (whose
        # idle polls cost Python) would cost a direct hop half of it in latency.
        wait = runner.spec.fetch_wait or min(
            settings.consumer_fetch_max_wait or DEFAULT_FETCH_WAIT, DEFAULT_FETCH_WAIT
        )
        self.config = kafka_config.consumer(
            settings,
            group_id(settings, self.name),
            **{
                "fetch.wait.max.ms": max(1, int(wait * 1000)),
                # librdkafka prefetches up to 64 MB per consumer by default; a worker runs
                # several direct agents, and a batch is at most batch_size records.
                "queued.max.messages.kbytes": 16384,
                "client.id": f"{settings.app_id}-{self.name}",
            },
        )
        self.faust_group = settings.app_id
        # A compacted topic has gaps by design; any other is checked (gaps.py).
        self._gaps: Gaps | None = None if compacted else Gaps()
        # Set by the agent's install when records this worker publishes may be handled
        # at once (handoff.py); None: every record comes through the consumer.
        self.handoff: Handoff | None = None
        # Set by an agent with state per partition (``Listener``).
        self.listener: Listener | None = None
        self.track_ends = False  # keep each owned partition's end offset (``highwater``)
        self._ends: dict[int, int] = {}
        for outcome in ("refetched", "accepted"):
            GAPS.labels(self.name, outcome)  # exported as 0 from the start, for rate()
        self._assigned: tuple[str, ...] = ()
        self._joined = False
        # ``follows``: no group membership; the partitions are the ones ``follow`` names
        # (a table's partitions, as Faust assigned them), offsets committed to the group.
        self.follows = follows
        self._wanted: frozenset[int] | None = None
        self._wanted_starts: dict[int, int] = {}  # partition -> offset to start it at
        self._waiters: list[concurrent.futures.Future[None]] = []
        self._wanted_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def ready(self) -> bool:
        """Whether the group gave this consumer its share (possibly none) and it runs."""
        return self._joined and self._thread is not None and self._thread.is_alive()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop batches are handled on (None before ``start``)."""
        return self._loop

    def assignment(self) -> list[str]:
        """``topic:partition`` of every partition this consumer owns now."""
        return list(self._assigned)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the consumer thread; batches are handled on ``loop``."""
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name=f"consumer-{self.name}", daemon=True)
        self._thread.start()

    async def stop(self, timeout: float = 30.0) -> None:
        """Let the batch in hand finish and commit, then leave the group."""
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, timeout)

    def _consumer(self) -> Consumer:
        return Consumer(self.config)

    def follow(
        self, partitions: Iterable[int], starts: Mapping[int, int] | None = None
    ) -> concurrent.futures.Future[None]:
        """Own exactly ``partitions`` from now on (a consumer made with ``follows``).

        The consumer thread applies it between batches: a partition let go has had its
        last batch handled and committed, a new one starts at ``starts[partition]`` if
        given, else at the group's commit. The future is done once applied (at once if
        the thread is not running: it applies the latest wish when it starts).
        """
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._wanted_lock:
            self._wanted = frozenset(partitions)
            self._wanted_starts = dict(starts or {})
            if self._thread is not None and self._thread.is_alive():
                self._waiters.append(done)
            else:
                done.set_result(None)
        return done

    def following(self) -> set[int]:
        """The partitions this consumer reads now (as applied by its thread)."""
        return {int(name.rsplit(":", 1)[1]) for name in self._assigned}

    def _apply_wanted(self, consumer: Consumer) -> None:
        with self._wanted_lock:
            wanted, waiters, given = self._wanted, self._waiters, self._wanted_starts
            self._wanted, self._waiters = None, []
        if wanted is None:
            return
        current = self.following()
        gone = sorted(current - wanted)
        new = [TopicPartition(self.topic, p) for p in sorted(wanted - current)]
        try:
            if gone:
                self._let_go(gone)
                consumer.incremental_unassign([TopicPartition(self.topic, p) for p in gone])
            if new:
                rest = [tp for tp in new if tp.partition not in given]
                starts = [
                    TopicPartition(self.topic, tp.partition, given[tp.partition])
                    for tp in new
                    if tp.partition in given
                ]
                if rest:
                    starts += self._starts(consumer, rest)
                consumer.incremental_assign(starts)
                self._started(starts)
        except KafkaException as exc:  # the broker is away: the thread tries again
            ERRORS.labels(self.name, "assign").inc()
            log.warning("consumer.follow.failed", extra={"agent": self.name, "error": str(exc)})
            with self._wanted_lock:
                if self._wanted is None:
                    self._wanted, self._wanted_starts = wanted, given
                self._waiters = waiters + self._waiters
            self._assigned = tuple(f"{self.topic}:{p}" for p in sorted(current - set(gone)))
            self._stopping.wait(_BACKOFF_FIRST)
            return
        self._assigned = tuple(f"{self.topic}:{p}" for p in sorted(wanted))
        # Ready from now on: the served feed is first told what to follow once Faust
        # has recovered its table, so a worker is not ready while GETs would miss.
        self._joined = True
        log.info(
            "consumer.following",
            extra={"agent": self.name, "partitions": sorted(wanted), "released": gone},
        )
        for waiter in waiters:
            waiter.set_result(None)

    def _settle_waiters(self) -> None:
        with self._wanted_lock:
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.set_result(None)

    def highwater(self, partition: int) -> int | None:
        """The partition's end offset as the last fetch reported it (None: unknown). Kept
        by the consumer thread only when ``track_ends`` is set: librdkafka's consumer is
        not called from other threads (a call waits behind the thread's ``consume``)."""
        return self._ends.get(partition)

    def _track_ends(self, consumer: Consumer) -> None:
        ends = self._ends
        for name in self._assigned:
            partition = int(name.rsplit(":", 1)[1])
            try:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), cached=True
                )
            except KafkaException:
                continue
            if high >= 0:
                ends[partition] = int(high)

    def _run(self) -> None:
        consumer = self._consumer()
        if not self.follows:  # a follower has joined once it applies its first wish
            consumer.subscribe(
                [self.topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
        backoff = _BACKOFF_FIRST
        try:
            while not self._stopping.is_set():
                if self.follows:
                    self._apply_wanted(consumer)
                events = self._screen(consumer, self._events(self._ready(consumer)))
                if self.track_ends:
                    self._track_ends(consumer)
                if not events:
                    continue
                if self._handle(self._unclaimed(events)):
                    self._commit(consumer, events)
                    backoff = _BACKOFF_FIRST
                else:
                    # Nothing of the batch is committed: read it again after a pause.
                    self._rewind(consumer, events)
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
        except Exception as exc:  # a bug here must not leave a silent, stopped agent
            ERRORS.labels(self.name, "consumer").inc()
            log.critical("consumer.crashed", extra={"agent": self.name, "error": repr(exc)})
            raise
        finally:
            consumer.close()
            self._settle_waiters()

    def _ready(self, consumer: Consumer) -> list[KafkaMessage]:
        # consume(n, timeout) waits until n records or the timeout: a light-load batch
        # would wait the whole timeout. Take what is queued; only when nothing is, wait
        # for the first record, then take what came with it.
        records = consumer.consume(self.batch_size, 0)
        if records:
            return records
        records = consumer.consume(1, 0.2)
        if records and self.batch_size > 1:
            records.extend(consumer.consume(self.batch_size - 1, 0))
        return records

    def _events(self, records: Sequence[KafkaMessage]) -> list[RawEvent]:
        events: list[RawEvent] = []
        of = RawEvent.of
        for m in records:
            err = m.error()
            if err is not None:
                ERRORS.labels(self.name, "fetch").inc()
                log.warning("consumer.fetch.error", extra={"agent": self.name, "error": str(err)})
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            assert topic is not None and partition is not None and offset is not None
            key = m.key()
            events.append(
                of(
                    m,  # type: ignore[arg-type]
                    topic,
                    partition,
                    offset,
                    key.encode() if isinstance(key, str) else key,
                    m.value(),
                    m.timestamp()[1] / 1000.0,
                )
            )
        return events

    def _screen(self, consumer: Consumer, events: list[RawEvent]) -> list[RawEvent]:
        """The events up to any gap; a partition with one is read again from it."""
        if self._gaps is None or not events:
            return events
        screened = self._gaps.screen(events)
        for partition, offset in screened.seeks.items():
            try:
                consumer.seek(TopicPartition(self.topic, partition, offset))
            except KafkaException as exc:  # revoked meanwhile: its next owner reads it
                self._gaps.forget(partition)
                log.info("consumer.gap.seek_skipped", extra={"agent": self.name, "error": str(exc)})
        for outcome, gaps, level in (
            ("refetched", screened.refetched, logging.WARNING),
            ("accepted", screened.accepted, logging.ERROR),
        ):
            for gap in gaps:
                GAPS.labels(self.name, outcome).inc()
                log.log(
                    level,
                    f"consumer.gap.{outcome}",
                    extra={
                        "agent": self.name,
                        "partition": gap.partition,
                        "offsets": f"{gap.expected}-{gap.got - 1}",
                        "patience": self._gaps.patience,
                    },
                )
        if screened.seeks and not screened.kept:
            self._stopping.wait(0.01)  # the gap's batch may be a moment from visible
        return screened.kept

    def _unclaimed(self, events: list[RawEvent]) -> list[RawEvent]:
        """The events to hand to the agent: those handled early (handoff.py) are waited
        for instead, except where that handling failed."""
        if self.handoff is None:
            return events
        fresh, claimed = self.handoff.split(events)
        if not claimed:
            return fresh
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(settled(task for _, task in claimed), self._loop)
        while True:
            try:
                failed = future.result(timeout=1.0)
                break
            except concurrent.futures.TimeoutError:
                if self._loop.is_closed():
                    return events  # _handle fails, the batch is read again
        if failed:
            again = {id(ev) for ev, task in claimed if task in failed} | {id(ev) for ev in fresh}
            fresh = [ev for ev in events if id(ev) in again]
        return fresh

    def _handle(self, events: list[RawEvent]) -> bool:
        if not events:
            return True
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self.runner.process(events), self._loop)
        while True:
            try:
                future.result(timeout=1.0)
                return True
            except concurrent.futures.TimeoutError:
                if self._loop.is_closed():
                    return False
            except Exception as exc:
                # The wrapper settles every message; what reaches here is infrastructure.
                ERRORS.labels(self.name, "handler").inc()
                log.error(
                    "consumer.batch.failed",
                    extra={"agent": self.name, "size": len(events), "error": repr(exc)},
                )
                return False

    def _commit(self, consumer: Consumer, events: Sequence[RawEvent]) -> None:
        nexts: dict[int, int] = {}
        for ev in events:
            nexts[ev.partition] = ev.offset + 1
        offsets = [TopicPartition(self.topic, p, o) for p, o in nexts.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Handled already; the next owner of a partition lost meanwhile re-reads
            # from its last commit (at least once, as with Faust).
            ERRORS.labels(self.name, "commit").inc()
            log.warning("consumer.commit.failed", extra={"agent": self.name, "error": str(exc)})

    def _rewind(self, consumer: Consumer, events: Sequence[RawEvent]) -> None:
        firsts: dict[int, int] = {}
        for ev in events:
            firsts.setdefault(ev.partition, ev.offset)
        for partition, offset in firsts.items():
            if self._gaps is not None:
                self._gaps.expect(partition, offset)
            try:
                consumer.seek(TopicPartition(self.topic, partition, offset))
            except KafkaException as exc:  # revoked meanwhile: its next owner re-reads it
                log.info("consumer.rewind.skipped", extra={"agent": self.name, "error": str(exc)})

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        earlier = None
        if self.listener is not None:
            earlier = self.listener.assigned(sorted(tp.partition for tp in partitions))
        if partitions:
            starts = self._starts(consumer, partitions)
            if earlier:
                starts = [self._earlier(tp, earlier.get(tp.partition)) for tp in starts]
            consumer.assign(starts)
            self._started(starts)
        if self.handoff is not None:
            self.handoff.assigned(tp.partition for tp in partitions)
        self._assigned = tuple(sorted(f"{tp.topic}:{tp.partition}" for tp in partitions))
        self._joined = True
        log.info("consumer.assigned", extra={"agent": self.name, "partitions": len(partitions)})

    def _earlier(self, tp: TopicPartition, offset: int | None) -> TopicPartition:
        """``tp`` (a start), or ``offset`` if the listener still needs the records from
        there and they come before it."""
        if offset is None or offset < 0 or (0 <= tp.offset <= offset):
            return tp
        log.info(
            "consumer.start.earlier",
            extra={"agent": self.name, "partition": tp.partition, "committed": tp.offset,
                   "from": offset},
        )  # fmt: skip
        return TopicPartition(tp.topic, tp.partition, offset)

    def _started(self, starts: list[TopicPartition]) -> None:
        for tp in starts:
            if self._gaps is not None and tp.offset >= 0:
                self._gaps.expect(tp.partition, tp.offset)

    def _starts(self, consumer: Any, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Where to start each partition: this group's commit, else the commit the worker's
        Faust group made when the agent still ran there (an upgrade, or a switch back from
        ``STREAMS_DIRECT_CONSUMERS=0``), else ``auto.offset.reset``. Without the second,
        the first direct start after an upgrade would re-read the whole topic."""
        own = consumer.committed(partitions, timeout=30)
        missing = [TopicPartition(tp.topic, tp.partition) for tp in own if tp.offset < 0]
        if not missing:
            return list(own)
        faust = Consumer({**self.config, "group.id": self.faust_group})
        try:
            inherited = {tp.partition: tp.offset for tp in faust.committed(missing, timeout=30)}
        finally:
            faust.close()
        starts = []
        for tp in own:
            offset = inherited.get(tp.partition, OFFSET_INVALID) if tp.offset < 0 else tp.offset
            if tp.offset < 0 and offset >= 0:
                log.info(
                    "consumer.start.inherited",
                    extra={"agent": self.name, "partition": tp.partition, "offset": offset},
                )
            starts.append(TopicPartition(tp.topic, tp.partition, offset))
        return starts

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._let_go(sorted(tp.partition for tp in partitions))
        self._assigned = ()
        self._joined = False

    def _let_go(self, partitions: list[int]) -> None:
        if self.listener is not None:
            self.listener.revoked(partitions)
        if self.handoff is not None:
            self.handoff.revoked()
        for partition in partitions:
            self._ends.pop(partition, None)
            if self._gaps is not None:
                self._gaps.forget(partition)


def install(app: Any, direct: DirectConsumer) -> None:
    """Start ``direct`` with the worker and stop it before the worker shuts down."""

    async def start_consumer() -> None:
        direct.start(asyncio.get_running_loop())

    async def stop_consumer(sender: Any, **kwargs: Any) -> None:
        started = time.monotonic()
        await direct.stop()
        log.info(
            "consumer.stopped",
            extra={"agent": direct.name, "seconds": round(time.monotonic() - started, 3)},
        )

    start_consumer.__name__ = f"start_{direct.name}"
    app.task(start_consumer)
    app.on_before_shutdown.connect(stop_consumer)
