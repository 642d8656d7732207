"""The worker's ``/health`` probes: the broker (one metadata request), and a bound on
any probe's answer time.

A worker whose broker is unreachable (down, paused, partitioned) consumes nothing;
``/health`` then says not ready with the cause, like it does for the database. The
cause is logged once when the broker goes away and once when it is back. ``Bounded``
makes ``/health`` answer in time even when a dependency is frozen (SIGSTOP, a hung
host): TCP connects, nothing answers, and even cancelling the probe can block.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable

from confluent_kafka.admin import AdminClient

from streams import kafka_config
from streams.settings import Settings

log = logging.getLogger(__name__)


class BrokerProbe:
    """Asks the broker for its cluster metadata through one long-lived admin client."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.timeout = settings.connect_timeout
        self.down: str | None = None
        self._lock = threading.Lock()
        self._admin: AdminClient | None = None

    async def cause(self) -> str | None:
        """``None`` when the broker answers in time, else one short phrase saying why not."""
        try:
            await asyncio.to_thread(self._probe)
        except Exception as exc:  # every failure means "not ready"; the cause is logged
            cause = f"no metadata from {self._settings.kafka_bootstrap_servers}: {exc}"
            if self.down is None:
                log.error("worker.broker.unreachable", extra={"cause": cause})
            self.down = cause
            return cause
        if self.down is not None:
            log.info("worker.broker.recovered", extra={"was": self.down})
        self.down = None
        return None

    def _probe(self) -> None:
        with self._lock:  # one probe at a time: concurrent /health calls queue here
            if self._admin is None:
                self._admin = AdminClient(kafka_config.common(self._settings))
            meta = self._admin.list_topics(timeout=self.timeout)
            if not meta.brokers:
                raise RuntimeError("no broker in the cluster metadata")


class Bounded:
    """A probe's cause within ``timeout`` seconds, whatever the probe does.

    A probe still running at the bound is not cancelled (cancelling a query to a frozen
    server blocks too): it finishes in the background, no second one is started
    meanwhile, and the answer is "no answer within <timeout>s".
    """

    def __init__(self, probe: Callable[[], Awaitable[str | None]], timeout: float) -> None:
        self._probe = probe
        self.timeout = timeout
        self._task: asyncio.Future[str | None] | None = None

    async def cause(self) -> str | None:
        """``None`` when the probe says its dependency is up, else why not."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._probe())
        done, _ = await asyncio.wait({self._task}, timeout=self.timeout)
        if not done:
            return f"no answer within {self.timeout:g}s"
        return self._task.result()
