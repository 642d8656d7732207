"""Load shedding: a circuit breaker per target origin (scheme://host:port).

After ``threshold`` failures in a row (5xx, 408/429, timeouts, connection errors;
not other 4xx: those prove the target is up) the origin is paused for ``pause``
seconds: deliveries to it are deferred to the retry topic without spending an
attempt, instead of hammering a target that is down. When the pause ends one probe
request goes through (half-open); its success closes the circuit, its failure opens
it again. The state is per worker process and visible in metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from streams import metrics

CIRCUIT_OPEN = metrics.gauge(
    "streams_webhook_circuit_open",
    "Webhook target origins paused by the circuit breaker now (pause not over yet).",
)
CIRCUIT_TRANSITIONS = metrics.counter(
    "streams_webhook_circuit_transitions_total",
    "Circuit breaker state changes, by new state.",
    ("state",),
)

# While a half-open probe is in flight, others retry after this fraction of the pause.
PROBE_WAIT_FRACTION = 0.1


def origin(url: str) -> str:
    """The breaker key of a URL: its scheme, host and port."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


@dataclass
class _State:
    failures: int = 0
    open_until: float | None = None
    probing: bool = False


class CircuitBreaker:
    """Per-key consecutive-failure counting with a timed pause; see the module docstring."""

    def __init__(
        self, threshold: int, pause: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.pause = pause
        self._clock = clock
        self._states: dict[str, _State] = {}
        # Read at scrape time: a pause ends by the clock, not by an event.
        CIRCUIT_OPEN.set_function(self.paused_count)

    def wait_time(self, key: str) -> float | None:
        """None if a request to ``key`` may go now, else seconds to wait before trying."""
        st = self._states.get(key)
        if st is None or st.open_until is None:
            return None
        now = self._clock()
        if now < st.open_until:
            return st.open_until - now
        if st.probing:
            return max(0.05, self.pause * PROBE_WAIT_FRACTION)
        st.probing = True
        CIRCUIT_TRANSITIONS.labels("half_open").inc()
        return None

    def record(self, key: str, ok: bool) -> None:
        """Record the outcome of a request that was allowed by ``wait_time``."""
        st = self._states.get(key)
        if ok:
            if st is not None:
                if st.open_until is not None:
                    CIRCUIT_TRANSITIONS.labels("closed").inc()
                del self._states[key]
            return
        if st is None:
            st = self._states[key] = _State()
        st.failures += 1
        if st.probing or (st.open_until is None and st.failures >= self.threshold):
            st.open_until = self._clock() + self.pause
            st.probing = False
            CIRCUIT_TRANSITIONS.labels("open").inc()

    def is_open(self, key: str) -> bool:
        st = self._states.get(key)
        return st is not None and st.open_until is not None

    def paused_count(self) -> int:
        """Origins whose pause is not over yet."""
        now = self._clock()
        return sum(
            1 for st in self._states.values() if st.open_until is not None and st.open_until > now
        )
