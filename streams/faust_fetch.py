"""How long Faust's consumer lets the broker hold a fetch with nothing to return.

faust-streaming 0.15 builds its aiokafka consumer with ``fetch_max_wait_ms=1500``
fixed. Apache Kafka answers a fetch as soon as data arrives, so that value only
bounds idle long-polls; the embedded Tansu broker holds the fetch for the full wait
even when records arrive meanwhile (measured at 250 msg/s: p50 400 ms, p99 750 ms
per hop with 1,500 ms; 30 / 58 ms with 100 ms; tests/test_faust_fetch.py). Every hop
of a pipeline (resource change -> delivery -> POST) pays it. ``STREAMS_CONSUMER_FETCH_MAX_WAIT``
(seconds; unset = Faust's own 1.5 s) sets it; ``streams up`` and the benchmarks
use 0.1 on the embedded stack.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as driver

_wait_ms: int | None = None


def set_fetch_max_wait(seconds: float | None) -> None:
    """Make every Faust worker consumer created from now on use this fetch wait
    (None: Faust's own again)."""
    global _wait_ms
    _wait_ms = None if seconds is None else max(1, int(seconds * 1000))
    current = driver.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(current, "_streams_fetch_wait", False):
        return
    original = current

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        if _wait_ms is not None:
            # Read by AIOKafkaConsumer.start() when it builds its fetcher.
            consumer._fetch_max_wait_ms = _wait_ms
        return consumer

    create_worker_consumer._streams_fetch_wait = True  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]
