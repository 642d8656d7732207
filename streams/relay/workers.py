"""Relay concurrency in processes: each worker drains the parts of a pass it is handed.

The threads of one process share one GIL, and the relay's per-row work (encoding and
producing) is Python, so ``--concurrency N`` (N > 1) starts N worker processes, each
with its own connection pool and its own producer, and hands each pass's parts (sets
of shards, streams/relay/claim.py) to them. The relay process keeps what is per
relay: the pass loop and its NOTIFY wake-up, the backlog gauges, the delayed pump and
``/metrics``, into which each worker's counter increments and batch timings are
replayed after every part it drained.

A worker is killed with its parent (kill -9 included: ``PR_SET_PDEATHSIG``), so a
killed relay leaves nothing behind; what it had not committed is published again by
the next relay (at least once). On SIGTERM/SIGINT, or when the relay stops, a worker
finishes its batch and returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import signal
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import util as mp_util
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

from prometheus_client import Counter

from streams import logs
from streams.heap import freeze_startup_heap
from streams.metrics import REGISTRY
from streams.relay import metrics as m
from streams.relay.claim import Part
from streams.relay.drain import DrainStats
from streams.relay.ranges import Job
from streams.settings import Settings

log = logging.getLogger(__name__)

CounterKey = tuple[str, tuple[tuple[str, str], ...]]  # (family, sorted labels)
_PR_SET_PDEATHSIG = 1


class _Flag:
    """Set by a signal handler: a plain attribute, no lock a handler could deadlock on."""

    def __init__(self, shared: MpEvent) -> None:
        self.raised = False
        self.shared = shared

    def is_set(self) -> bool:
        return self.raised or self.shared.is_set()


class _Worker:
    """The state of one worker process: its relay parts, built once at start."""

    def __init__(self, settings: Settings, stop: MpEvent) -> None:
        from streams.relay.relay import Relay  # the relay module imports this one

        self.stop = _Flag(stop)
        self.relay = Relay(settings, concurrency=1, stop=self.stop)
        self.relay.pool.open(wait=True, timeout=30)
        self.counters = _counter_values()
        # Run when the worker exits normally (atexit handlers do not run in one).
        mp_util.Finalize(self, self.relay.close, exitpriority=10)

    def drain(
        self, table: str, lo: int, hi: int, part: Part
    ) -> tuple[DrainStats, dict[CounterKey, float]]:
        stats = self.relay.drainers[table].drain_range(lo, hi, part)
        now = _counter_values()
        deltas = {k: v - self.counters.get(k, 0.0) for k, v in now.items()}
        self.counters = now
        return stats, {k: d for k, d in deltas.items() if d}


_worker: _Worker | None = None


def _start(settings: Settings, stop: MpEvent, log_level: int, parent: int) -> None:
    """Worker initializer: die with the parent, stop on signals, log like the parent."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        # The relay died (kill -9) while this worker was still starting, before the
        # death signal was asked for: nothing will ever send it. Do not linger.
        os._exit(1)
    logs.configure(logging.getLevelName(log_level), settings.log_format)
    freeze_startup_heap(settings.gc_thresholds)  # as the relay process itself does
    global _worker
    _worker = _Worker(settings, stop)
    flag = _worker.stop

    def finish(*_: Any) -> None:
        flag.raised = True

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    log.info("relay.worker.started", extra={"pid": os.getpid()})


def _drain(table: str, lo: int, hi: int, part: Part) -> tuple[DrainStats, dict[CounterKey, float]]:
    assert _worker is not None, "not a relay worker process"
    return _worker.drain(table, lo, hi, part)


def _pid() -> int:
    time.sleep(0.05)  # long enough for the next ping to go to another worker
    return os.getpid()


def _counter_values() -> dict[CounterKey, float]:
    out: dict[CounterKey, float] = {}
    for family in REGISTRY.collect():
        if family.type != "counter":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                out[(family.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def replay(deltas: dict[CounterKey, float], stats: DrainStats, table: str) -> None:
    """Add a worker's counter increments and batch timings to this process's metrics."""
    collectors: dict[str, Any] = REGISTRY._names_to_collectors
    for (name, labels), delta in deltas.items():
        metric = collectors.get(name)
        if not isinstance(metric, Counter):
            log.warning("relay.worker.metric_unknown", extra={"metric": name})
            continue
        (metric.labels(**dict(labels)) if labels else metric).inc(delta)
    for seconds in stats.batch_seconds:
        m.BATCH_SECONDS.labels(table).observe(seconds)


class ProcessRanges:
    """Drains a pass's (table, lo, hi) ranges in worker processes."""

    def __init__(self, settings: Settings, processes: int, stop: Any) -> None:
        self._settings = settings
        self._processes = processes
        self._relay_stop = stop  # the relay's: set by its signal handlers
        self._ctx = mp.get_context("spawn")  # the relay has threads: never fork it
        self._stop = self._ctx.Event()
        self._executor = self._new()
        self._start_all()

    def _new(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self._processes,
            mp_context=self._ctx,
            initializer=_start,
            initargs=(self._settings, self._stop, logging.getLogger().level, os.getpid()),
        )

    def _start_all(self) -> None:
        """Start every worker now, without waiting for them (the pool starts one per
        submit while none is idle): passes of one part run in the relay process
        meanwhile, and the first pass of several parts finds its workers up."""
        pings = [self._executor.submit(_pid) for _ in range(self._processes)]
        left = [len(pings)]

        def started(_: Future[int]) -> None:
            left[0] -= 1
            if left[0] == 0:
                pids = sorted({p.result() for p in pings if p.exception() is None})
                log.info("relay.workers.started", extra={"pids": pids})

        for p in pings:
            p.add_done_callback(started)

    def drain(self, jobs: list[Job]) -> list[DrainStats]:
        """Drain every job (the workers share them out); raises what a job raised."""
        try:
            futures = [
                self._executor.submit(_drain, d.table.name, lo, hi, part)
                for d, lo, hi, part in jobs
            ]
            self._wait(futures)
            results = [(d[0], *f.result()) for d, f in zip(jobs, futures, strict=True)]
        except BrokenProcessPool:
            log.warning("relay.worker.lost", extra={"processes": self._processes})
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new()
            raise
        for d, stats, deltas in results:
            replay(deltas, stats, d.table.name)
        return [stats for _, stats, _ in results]

    def _wait(self, futures: list[Future[Any]]) -> None:
        # Workers see the relay's stop through a shared event, set from here (a signal
        # handler must not take the event's lock).
        while True:
            _, pending = wait(futures, timeout=0.25, return_when=FIRST_EXCEPTION)
            if not pending or any(f.done() and f.exception() for f in futures):
                return
            if self._relay_stop.is_set():
                self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
