"""The measuring step: duration, sampled memory growth, outcomes, retries, in flight."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

from streams import metrics

MEMORY_SAMPLE_EVERY = 64  # one call in 64 pays for the two RSS reads
_PROCESS = psutil.Process()


class AgentMetrics:
    """One agent's metric children, resolved once."""

    def __init__(self, agent: str) -> None:
        self.duration = metrics.AGENT_DURATION.labels(agent)
        self.memory = metrics.AGENT_MEMORY.labels(agent)
        self.ok = metrics.AGENT_MESSAGES.labels(agent, "success")
        self.failed = metrics.AGENT_MESSAGES.labels(agent, "failure")
        self.ignored = metrics.AGENT_MESSAGES.labels(agent, "ignored")
        self.retries = metrics.AGENT_RETRIES.labels(agent)
        self.in_flight = metrics.AGENT_IN_FLIGHT.labels(agent)
        self._calls = 0

    @contextmanager
    def call(self, messages: int = 1, *, failures: bool = True) -> Iterator[None]:
        """Measure one handler call over ``messages`` messages (duration per message);
        ``failures=False``: no duration when the call raises (its messages run again)."""
        self._calls += 1
        failed = False
        sample = self._calls % MEMORY_SAMPLE_EVERY == 1
        rss = _PROCESS.memory_info().rss if sample else 0
        started = time.perf_counter()
        self.in_flight.inc(messages)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            self.in_flight.dec(messages)
            if failures or not failed:
                per = (time.perf_counter() - started) / messages
                for _ in range(messages):
                    self.duration.observe(per)
            if sample:
                self.memory.observe(max(0, _PROCESS.memory_info().rss - rss))
