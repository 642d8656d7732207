"""The garbage collector's settings for a long-running process (worker, relay, relay
worker processes): ``STREAMS_GC_THRESHOLDS`` and the start-up heap frozen."""

from __future__ import annotations

import gc


def freeze_startup_heap(thresholds: tuple[int, int, int] | None = None) -> None:
    """Take what start-up built (modules, Faust's app, the agents) out of the garbage
    collector's sight, and collect less often (``STREAMS_GC_THRESHOLDS``).

    Every full collection walked those ~100k long-lived objects: 12-14% of a busy
    worker's CPU. With Python's thresholds, anything alive for half a second (a window
    waiting for its countdown, a cached scope, a batch in flight) reached the oldest
    generation, and a worker at 100k projects still ran a full collection every few
    seconds: 19% of its CPU, 180 ms each. With 50,000 allocations between young
    collections such objects mostly die young (bench/README.md, config invalidation).
    """
    gc.collect()
    gc.freeze()
    if thresholds is not None:
        gc.set_threshold(*thresholds)
