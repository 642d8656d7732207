"""How a relay pass drains its id ranges in parallel: the interface, and threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from streams.relay.drain import Drainer, DrainStats


class Ranges(Protocol):
    def drain(self, jobs: list[tuple[Drainer, int, int]]) -> list[DrainStats]:
        """Drain every (drainer, lo, hi) range; raises what a range raised."""
        ...

    def close(self) -> None: ...


class ThreadRanges:
    """Ranges drained by threads of this process (they share its GIL and publisher)."""

    def __init__(self, threads: int) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="relay")

    def drain(self, jobs: list[tuple[Drainer, int, int]]) -> list[DrainStats]:
        futures = [self._executor.submit(d.drain_range, lo, hi) for d, lo, hi in jobs]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._executor.shutdown(wait=True)
