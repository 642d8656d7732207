"""Benchmark figures as JSON lines, for ``bench/summary.py``'s one table.

Every figure is written with its goal, the alternative measured in the same run (the
bare producer, the naive loop, ...) and the machine's load and core count when it
was measured: the machine is shared, so a figure without its load means little.
Each benchmark run rewrites ``.streams/bench/<bench>.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIR = ROOT / ".streams" / "bench"


def machine() -> str:
    """``load 1.23/2.34 on 2 cores`` (1- and 5-minute load averages)."""
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} on {os.cpu_count()} cores"


class Results:
    """The figures of one benchmark run; ``add`` appends one line to its file."""

    def __init__(self, bench: str) -> None:
        self.bench = bench
        self.start_load = machine()
        DIR.mkdir(parents=True, exist_ok=True)
        self.path = DIR / f"{bench}.json"
        self.path.write_text("")
        print(f"{bench}: {self.start_load} at start")

    def add(
        self,
        figure: str,
        value: float,
        unit: str,
        *,
        goal: str = "",
        met: bool | None = None,
        alternative: str = "",
    ) -> None:
        """Record one figure (``met``: whether ``goal`` was reached; None: no goal)."""
        line = {
            "bench": self.bench,
            "figure": figure,
            "value": value,
            "unit": unit,
            "goal": goal,
            "met": met,
            "alternative": alternative,
            "load_at_start": self.start_load,
            "load": machine(),
            "at": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        with self.path.open("a") as out:
            out.write(json.dumps(line) + "\n")
