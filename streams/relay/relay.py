"""The relay process: passes over the outbox tables, woken by NOTIFY, falling back to polling.

Each pass reads the id range of each outbox table of this silo and, when it holds more
than a batch, drains it as up to ``concurrency`` parts at once: disjoint sets of shards
(shard identifier modulo the parts), so each shard keeps its order. With concurrency
above 1 the parts go to worker processes, each with its own connection pool and its
own producer (streams/relay/workers.py); with a publisher handed in, to threads sharing
it. A pass that found work is followed by another at once; an idle relay waits for a
NOTIFY or the poll interval. Rows committed late with a lower id than rows already
drained fall into the next pass's range, so they are never skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from prometheus_client import start_http_server
from psycopg_pool import ConnectionPool

from streams import metrics
from streams.db.pool import pool_options
from streams.delayed.pump import start_pump
from streams.outbox.categories import CONTROL_OUTBOX, REGION_OUTBOX, OutboxTable
from streams.outbox.write import DEFERRED_TARGET, NOTIFY_CHANNEL, write_deferred
from streams.publisher import Publisher
from streams.relay import claim
from streams.relay import metrics as m
from streams.relay.acks import ONLY_ERRORS
from streams.relay.drain import Drainer, DrainStats, StopFlag
from streams.relay.producer import PublisherSlot
from streams.relay.ranges import Job, Ranges, ThreadRanges
from streams.relay.workers import ProcessRanges
from streams.settings import Settings
from streams.silo import SiloMode

log = logging.getLogger(__name__)

STATS_INTERVAL = 5.0
LOCK_TIMEOUT_MS = 5000


def tables_for(silo: SiloMode) -> list[OutboxTable]:
    """The outbox tables a relay of this silo drains."""
    if silo is SiloMode.REGION:
        return [REGION_OUTBOX]
    if silo is SiloMode.CONTROL:
        return [CONTROL_OUTBOX]
    return [REGION_OUTBOX, CONTROL_OUTBOX]


def _configure(conn: psycopg.Connection[Any]) -> None:
    # A claim that overlaps another (late-committed row) waits at most this long.
    conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
    # Timestamps then load with datetime.timezone.utc, cheaper to convert than a
    # zoneinfo zone. Same instants; date_trunc('minute') is alike in whole-minute zones.
    conn.execute("SET TimeZone = 'UTC'")
    conn.commit()


def publish_timeout(settings: Settings) -> dict[str, Any]:
    """librdkafka gives up on a message after the publish timeout, so a broker outage
    fails the batch (and backs its shards off) instead of holding it forever."""
    return {"message.timeout.ms": int(settings.relay_publish_timeout * 1000)}


def outbox_producer(settings: Settings) -> dict[str, Any]:
    """The producer settings of outbox messages (``Publisher`` overrides).

    ``linger.ms`` (``STREAMS_RELAY_LINGER``, 20 ms): a batch is produced, then flushed,
    and librdkafka's flush sends what is queued at once, whatever the linger; so the
    linger adds no latency here, it only gathers the messages produced meanwhile into
    fewer requests. With the 1 ms of the other producers, librdkafka's thread spent 10 us
    per outbox message; with 20 ms, 2 us (bench/README.md).
    """
    return {**publish_timeout(settings), "linger.ms": round(settings.relay_linger * 1000)}


class Relay:
    """Publishes committed outbox rows; ``run`` until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        *,
        concurrency: int | None = None,
        publisher: Publisher | None = None,
        stop: StopFlag | None = None,
    ) -> None:
        self.settings = settings
        self._own_publisher = publisher is None
        self.concurrency = concurrency or settings.relay_concurrency
        self.tables = tables_for(settings.silo_mode)
        self.stop = threading.Event()
        overrides = publish_timeout(settings)
        # Outbox messages: failures reported only, a batch acknowledged by its flush
        # (streams/relay/acks.py). Dead letters and the delayed pump need every
        # delivery reported: a publisher of their own, built when first needed.
        fast: dict[str, Any] = {**outbox_producer(settings), **ONLY_ERRORS}
        self.publishers = PublisherSlot(lambda: Publisher(settings, **fast), publisher)
        self.letters = (
            self.publishers
            if publisher is not None
            else PublisherSlot(lambda: Publisher(settings, **overrides), lazy=True)
        )
        self.pool = ConnectionPool(
            settings.database_url.get(),
            min_size=1,
            max_size=self.concurrency + 2,
            configure=_configure,
            open=False,
            name="streams-relay",
            **pool_options(sync=True),
        )
        slot = f"{settings.producer_name}:{os.getpid()}"
        self.drainers = {
            t.name: Drainer(
                t,
                self.pool,
                self.publishers,
                batch_size=settings.relay_batch_size,
                publish_timeout=settings.relay_publish_timeout,
                slot=slot,
                stop=stop or self.stop,
                letters=self.letters,
            )
            for t in self.tables
        }
        self.totals = DrainStats()

    def run(self, ranges: Ranges | None = None) -> None:
        """Drain until ``stop`` is set (SIGTERM in ``streams relay``), on ``ranges`` (by
        default, those of ``self.ranges()``, started here)."""
        if ranges is None:
            with self.ranges() as started:
                self.run(started)
            return
        self.pool.open(wait=True, timeout=30)
        log.info(
            "relay.started",
            extra={"tables": [t.name for t in self.tables], "concurrency": self.concurrency},
        )
        listener: psycopg.Connection[Any] | None = None
        stats = threading.Thread(target=self._stats_loop, name="relay-stats", daemon=True)
        stats.start()
        try:
            while not self.stop.is_set():
                listener = self._listener(listener)
                try:
                    found = self.run_pass(ranges)
                except Exception as exc:  # database down, lock timeout, ...: next pass
                    log.warning("relay.pass.failed", extra={"error": repr(exc)}, exc_info=True)
                    found = 0
                    self.stop.wait(self.settings.relay_poll_interval)
                if not found:
                    self._wait(listener)
        finally:
            self.stop.set()
            if listener is not None:
                listener.close()
            stats.join(timeout=STATS_INTERVAL + 5)
            self.close()

    @contextlib.contextmanager
    def ranges(self) -> Iterator[Ranges]:
        """What drains a pass's parts in parallel: ``concurrency`` worker processes
        (each with its own producer and connections) when the relay built its own
        publisher, else threads sharing the given one (tests hand one in)."""
        ranges: Ranges
        if self.concurrency > 1 and self._own_publisher:
            ranges = ProcessRanges(self.settings, self.concurrency, self.stop)
        else:
            ranges = ThreadRanges(self.concurrency)
        try:
            yield ranges
        finally:
            ranges.close()

    def close(self) -> None:
        self.pool.close()
        self.publishers.close()
        if self.letters is not self.publishers:
            self.letters.close()

    def run_pass(self, ranges: Ranges | None = None) -> int:
        """One pass over every table; returns the rows handled (0 = nothing to do)."""
        jobs: list[Job] = []
        with self.pool.connection() as conn:
            for table in self.tables:
                found = claim.bounds(conn, table)
                if found is not None:
                    drainer = self.drainers[table.name]
                    parts = claim.parts(*found, self.concurrency, drainer.batch_size)
                    jobs += [(drainer, *found, part) for part in parts]
        if ranges is None or len(jobs) <= 1:
            results = [d.drain_range(lo, hi, part) for d, lo, hi, part in jobs]
        else:
            results = ranges.drain(jobs)
        done = DrainStats()
        for r in results:
            done.add(r)
        self.totals.add(done)
        return done.work

    def _listener(self, current: psycopg.Connection[Any] | None) -> psycopg.Connection[Any] | None:
        if current is not None and not current.closed:
            return current
        try:
            conn = psycopg.connect(self.settings.database_url.get(), autocommit=True)
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            return conn
        except psycopg.Error as exc:
            log.warning("relay.listen.failed", extra={"error": repr(exc)})
            return None

    def _wait(self, listener: psycopg.Connection[Any] | None) -> None:
        """Sleep until a NOTIFY, the poll interval, or stop (checked twice a second)."""
        deadline = time.monotonic() + self.settings.relay_poll_interval
        while not self.stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if listener is None:
                self.stop.wait(min(0.5, remaining))
                continue
            try:
                if list(listener.notifies(timeout=min(0.5, remaining), stop_after=1)):
                    # Everything queued meanwhile is covered by the next pass.
                    list(listener.notifies(timeout=0))
                    return
            except psycopg.Error as exc:
                log.warning("relay.listen.lost", extra={"error": repr(exc)})
                listener.close()
                listener = None

    def _stats_loop(self) -> None:
        # A thread of its own: while a broker outage stalls a pass, the backlog still shows.
        while not self.stop.is_set():
            try:
                self.record_backlog()
            except psycopg.Error as exc:
                log.warning("relay.stats.failed", extra={"error": repr(exc)})
            self.stop.wait(STATS_INTERVAL)

    def record_backlog(self) -> None:
        """Set the backlog gauges (queued rows, oldest row age, deepest shard)."""
        with self.pool.connection() as conn:
            for table in self.tables:
                b = claim.backlog(conn, table)
                m.QUEUED_ROWS.labels(table.name).set(b.queued)
                m.OLDEST_PENDING.labels(table.name).set(b.oldest_seconds)
                m.MAX_SHARD_DEPTH.labels(table.name).set(b.max_shard_depth)
            claim.forget_old_minutes(conn)


def serve_metrics(settings: Settings) -> None:
    """Serve ``/metrics`` for the relay on ``STREAMS_METRICS_PORT`` (0 = do not serve)."""
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.web_host, registry=metrics.REGISTRY)
        log.info(
            "relay.metrics.serving",
            extra={"port": settings.metrics_port, "host": settings.web_host},
        )


def run_relay(settings: Settings, *, concurrency: int | None = None) -> int:
    """``streams relay``: serve metrics, drain until SIGTERM/SIGINT, then flush and exit."""
    import signal

    from streams import topics

    topics.create_all(settings)
    relay = Relay(settings, concurrency=concurrency)
    signal.signal(signal.SIGTERM, lambda *_: relay.stop.set())
    signal.signal(signal.SIGINT, lambda *_: relay.stop.set())
    with relay.ranges() as ranges:  # worker processes start meanwhile
        serve_metrics(settings)
        pump = start_pump(
            settings.database_url.get(),
            relay.letters,
            relay.stop,
            poll_interval=settings.relay_poll_interval,
            publish_timeout=settings.relay_publish_timeout,
            local_targets={DEFERRED_TARGET: write_deferred},
        )
        relay.run(ranges)
    pump.join(timeout=settings.relay_publish_timeout + 15)
    log.info("relay.stopped", extra={"published": relay.totals.published})
    return 0
