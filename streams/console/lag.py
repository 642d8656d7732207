"""Consumer lag of this worker's groups (Faust's and each direct agent's), for the status
page, cached for a few seconds.

The lag exporter's poller does the work (true end offsets on the embedded broker,
time lag from an offset/time table per partition); the console keeps one poller so
the tables gain history across page views. A poll is blocking client code: it runs
in a thread, bounded by a short timeout, and at most one runs at a time.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import defaultdict
from dataclasses import dataclass

from streams import kafka_config
from streams.lag.poller import LagPoller, Snapshot
from streams.lag.source import KafkaOffsetSource
from streams.settings import Settings

log = logging.getLogger(__name__)

CACHE_SECONDS = 3.0
TIMEOUT = 2.0


@dataclass(frozen=True)
class TopicLag:
    group: str
    topic: str
    partitions: int
    lag: int
    lag_seconds: float


@dataclass(frozen=True)
class LagView:
    rows: tuple[TopicLag, ...]
    taken_at: float
    error: str | None = None


def by_topic(snap: Snapshot, now: float) -> tuple[TopicLag, ...]:
    """Sum of offset lag and max time lag per (group, topic)."""
    acc: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for p in snap.partitions:
        acc[(p.group, p.topic)].append((p.lag, p.lag_seconds(now)))
    return tuple(
        TopicLag(g, t, len(v), sum(x for x, _ in v), max(s for _, s in v))
        for (g, t), v in sorted(acc.items())
    )


class LagCache:
    """The latest lag of ``settings.app_id`` (Faust's group id) and of its direct agents'
    groups (``<app id>.<agent>``, streams/agents/wrapper/direct.py), refreshed on demand."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._poller: LagPoller | None = None
        self._view: LagView | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Future[Snapshot] | None = None

    def _poll(self) -> Snapshot:
        if self._poller is None:
            source = KafkaOffsetSource(kafka_config.common(self.settings), timeout=TIMEOUT)
            group = re.compile(f"^{re.escape(self.settings.app_id)}(\\.[a-z_]+)?$")
            self._poller = LagPoller(source, group)
        return self._poller.poll()

    async def get(self) -> LagView:
        """The cached view if fresh, else one new poll (errors shown, not raised)."""
        async with self._lock:
            view = self._view
            if view is not None and time.time() - view.taken_at < CACHE_SECONDS:
                return view
            # A poll that outlived its wait keeps running: wait for it, never start a
            # second one on the same (single-threaded) clients.
            if self._task is None or self._task.done():
                self._task = asyncio.ensure_future(asyncio.to_thread(self._poll))
            try:
                snap = await asyncio.wait_for(asyncio.shield(self._task), TIMEOUT * 3)
                view = LagView(by_topic(snap, time.time()), time.time())
            except Exception as exc:  # shown on the page
                log.warning("console.lag.failed", extra={"error": repr(exc)})
                view = LagView((), time.time(), f"lag unavailable: {exc!r}")
            self._view = view
            return view

    def close(self) -> None:
        if self._poller is not None:
            self._poller.source.close()
