"""How a relay pass drains its parts in parallel: the interface, and threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from streams.relay.claim import Part
from streams.relay.drain import Drainer, DrainStats

# What one pass hands out: drain the shards of ``part`` with rows in [lo, hi].
Job = tuple[Drainer, int, int, Part]


class Ranges(Protocol):
    def drain(self, jobs: list[Job]) -> list[DrainStats]:
        """Drain every job; raises what a job raised."""
        ...

    def close(self) -> None: ...


class ThreadRanges:
    """Jobs drained by threads of this process (they share its GIL and publisher)."""

    def __init__(self, threads: int) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="relay")

    def drain(self, jobs: list[Job]) -> list[DrainStats]:
        futures = [self._executor.submit(d.drain_range, lo, hi, p) for d, lo, hi, p in jobs]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._executor.shutdown(wait=True)
