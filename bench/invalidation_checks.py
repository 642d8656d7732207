"""What bench_invalidation checks, as pure functions over what it sent and what it read."""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Seen:
    """One project-configs message: key, its window's requested_at and due (ms), ack (ms)."""

    key: str
    requested_ms: int
    due_ms: int
    acked_ms: int


def distinct_windows(times: Iterable[int], countdown_ms: int) -> int:
    """Countdown windows opened by the first request not inside an earlier one."""
    count, end = 0, -1
    for t in sorted(times):
        if t >= end:
            count, end = count + 1, t + countdown_ms
    return count


def unserved(times_by_key: Mapping[str, list[int]], seen: Iterable[Seen]) -> int:
    """Requests with no config of their key from a window due after them.

    A recompute starts at or after its due time, so a config whose window is due
    after the request was read from the database after the request was made. A folded
    recompute carries its latest window's due time.
    """
    dues: dict[str, list[int]] = {}
    for s in seen:
        dues.setdefault(s.key, []).append(s.due_ms)
    missing = 0
    for key, times in times_by_key.items():
        due = sorted(dues.get(key, []))
        for t in times:
            if bisect.bisect_right(due, t) == len(due):
                missing += 1
    return missing


def percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# Where a worker's samples go, first match wins (a frame name or file in the stack).
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "timer: publish configs (encode, headers, produce)",
        ("ConfigsOut.publish", "ConfigsOut.start", "Invalidation.finish"),
    ),
    ("timer: recompute SQL + documents", ("recompute (streams/projectconfigs/recompute.py",)),
    ("timer: take, start, remove", ("Invalidation.tick",)),
    ("served feed: topic path", ("ServedFeed.handle_batch",)),
    ("served feed: skip own configs", ("attach_feed.<locals>.agent",)),
    ("requests: decide (offer, due table)", ("Invalidation.handle_batch",)),
    ("wrapper: decode, metrics", ("streams/agents/wrapper/",)),
    ("publisher poll thread (delivery reports)", ("Publisher._poll_loop",)),
    ("changelog flush thread", ("flush_blocking",)),
    ("Faust stream / consumer", ("faust/streams.py", "faust/transport/", "faust/tables/")),
    ("aiokafka fetcher", ("aiokafka/",)),
    ("event loop select", ("select (selectors.py",)),
    ("event loop, other", ("asyncio/",)),
)


def components(lines: Iterable[str]) -> list[tuple[str, float]]:
    """Share of py-spy raw samples (``stack count`` lines) per component, largest first."""
    counts: dict[str, int] = {}
    total = 0
    for line in lines:
        stack, _, n = line.rstrip().rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        name = next((c for c, marks in COMPONENTS if any(m in stack for m in marks)), "other")
        counts[name] = counts.get(name, 0) + int(n)
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    return [(name, n / total) for name, n in ranked] if total else []
