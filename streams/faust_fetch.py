"""How long Faust's consumer lets the broker hold a fetch with nothing to return.

faust-streaming 0.15 builds its aiokafka consumer with ``fetch_max_wait_ms=1500``
fixed. Apache Kafka answers a fetch as soon as data arrives, so that value only
bounds idle long-polls; the embedded Tansu broker holds the fetch for the full wait
even when records arrive meanwhile (measured at 250 msg/s: p50 400 ms, p99 750 ms
per hop with 1,500 ms; 30 / 58 ms with 100 ms; tests/test_faust_fetch.py). Every hop
of a pipeline (resource change -> delivery -> POST) pays it. ``STREAMS_CONSUMER_FETCH_MAX_WAIT``
(seconds; unset = Faust's own 1.5 s) sets it; ``streams up`` and the benchmarks
use 0.1 on the embedded stack.

The wait is applied only on the verified faust-streaming and aiokafka versions
(``streams/faust_versions.py``; otherwise an ERROR line ``faust.patch.unverified``
and Faust's 1.5 s). A consumer without the attribute aiokafka reads is an error at
creation, never a silently ignored setting.
"""

from __future__ import annotations

import functools
from typing import Any

from faust.transport.drivers import aiokafka as driver

from streams.errors import StreamsError
from streams.faust_versions import FETCH_VERIFIED, installed, verified

_wait_ms: int | None = None


class FetchWaitUnsupported(StreamsError, RuntimeError):
    """The aiokafka consumer Faust built has no fetch wait this module can set."""


def set_fetch_max_wait(seconds: float | None) -> bool:
    """Make every Faust worker consumer created from now on use this fetch wait
    (None: Faust's own again). Returns whether the wait is applied (False: unverified
    versions, logged)."""
    global _wait_ms
    if seconds is not None and not verified("fetch_max_wait", FETCH_VERIFIED):
        seconds = None
    _wait_ms = None if seconds is None else max(1, int(seconds * 1000))
    current = driver.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(current, "_streams_fetch_wait", False):
        return _wait_ms is not None
    original = current

    @functools.wraps(original)
    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        if _wait_ms is not None:
            if not isinstance(getattr(consumer, "_fetch_max_wait_ms", None), int):
                raise FetchWaitUnsupported(
                    "STREAMS_CONSUMER_FETCH_MAX_WAIT cannot be applied: the aiokafka "
                    f"consumer has no _fetch_max_wait_ms (installed {installed(FETCH_VERIFIED)}, "
                    f"verified {FETCH_VERIFIED})"
                )
            # Read by AIOKafkaConsumer.start() when it builds its fetcher.
            consumer._fetch_max_wait_ms = _wait_ms
        return consumer

    create_worker_consumer._streams_fetch_wait = True  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]
    return _wait_ms is not None
