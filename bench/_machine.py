"""Where a benchmark's CPU went on the whole machine (Linux /proc): how busy the cores
were, and the CPU of a process together with its descendants (the broker, PostgreSQL
and its backends). A figure bound by the machine shows up as cores nearly all busy."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU seconds every core spent busy since boot (``/proc/stat``: all but idle and
    iowait)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICK


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process, MB; ``VmHWM`` for its peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _stats() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, user + system CPU seconds) of every process."""
    out: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK)
    return out


def tree_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and of its live descendants (a descendant that exited
    meanwhile takes its CPU with it: read before and after a run of long-lived ones)."""
    stats = _stats()
    children: dict[int, list[int]] = {}
    for p, (parent, _) in stats.items():
        children.setdefault(parent, []).append(p)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += stats[p][1]
        todo.extend(children.get(p, ()))
    return total


@dataclass
class Span:
    """The machine between ``Span.start`` and ``stop``: busy core-seconds, and the CPU of
    named process trees."""

    pids: dict[str, int]
    busy: float = 0.0
    seconds: float = 0.0
    trees: dict[str, float] | None = None

    @classmethod
    def start(cls, pids: dict[str, int | None]) -> Span:
        span = cls({k: v for k, v in pids.items() if v})
        span.busy = busy_seconds()
        span.seconds = _uptime()
        span.trees = {k: tree_seconds(v) for k, v in span.pids.items()}
        return span

    def stop(self) -> Span:
        assert self.trees is not None
        self.busy = busy_seconds() - self.busy
        self.seconds = _uptime() - self.seconds
        self.trees = {k: tree_seconds(self.pids[k]) - v for k, v in self.trees.items()}
        return self

    def cores_busy(self) -> float:
        """Mean cores busy over the span (os.cpu_count() when saturated)."""
        return self.busy / self.seconds if self.seconds > 0 else 0.0

    def describe(self, items: int) -> str:
        """'machine 1.9 of 2 cores busy, 41.0 us CPU/row (broker 9.1, postgres 6.2)'."""
        assert self.trees is not None
        parts = ", ".join(f"{k} {v / items * 1e6:.1f}" for k, v in self.trees.items())
        return (
            f"machine {self.cores_busy():.2f} of {os.cpu_count()} cores busy, "
            f"{self.busy / items * 1e6:.1f} us CPU/row in all ({parts})"
        )


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])
