"""One table of every benchmark figure (``make bench`` ends with it).

Reads the JSON lines the benchmarks wrote to ``.streams/bench/*.json`` (bench/_results.py)
and prints each figure with its goal, whether it was met, the alternative measured in
the same run and the machine's load at the start of that benchmark.

    .venv/bin/python bench/summary.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

DIR = Path(__file__).resolve().parents[1] / ".streams" / "bench"
COLUMNS = ("bench", "figure", "value", "goal", "met", "alternative (same run)", "load at start")


def _value(row: dict[str, object]) -> str:
    value = float(row["value"])  # type: ignore[arg-type]
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return f"{text} {row['unit']}"


def rows(directory: Path = DIR) -> list[tuple[str, ...]]:
    """The table's rows, one per figure, benchmarks in name order."""
    out: list[tuple[str, ...]] = []
    for path in sorted(directory.glob("*.json")):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            met = {True: "yes", False: "NO", None: "-"}[r.get("met")]
            out.append(
                (
                    r["bench"],
                    r["figure"],
                    _value(r),
                    r.get("goal") or "-",
                    met,
                    r.get("alternative") or "-",
                    r.get("load_at_start", ""),
                )
            )
    return out


def render(table: list[tuple[str, ...]]) -> str:
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(COLUMNS)]
    line = " | ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))
    sep = "-+-".join("-" * w for w in widths)
    body = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    return "\n".join([line, sep, *body])


def main() -> int:
    table = rows()
    if not table:
        print(f"no benchmark figures in {DIR}")
        return 1
    one, five, _ = os.getloadavg()
    print(f"\nSummary ({os.cpu_count()} cores; load now {one:.2f}/{five:.2f}):")
    print(render(table))
    missed = sum(1 for r in table if r[4] == "NO")
    print(f"{len(table)} figures, {missed} goals not met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
