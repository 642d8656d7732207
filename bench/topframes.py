"""Summarise a py-spy raw (collapsed) profile: the top frames by own and by total samples.

Usage: python bench/topframes.py PROFILE.txt [N]
"""

from __future__ import annotations

import re
import sys
from collections import Counter

_LINE = re.compile(r":\d+\)$")


def frame_name(frame: str) -> str:
    """'func (path/to/file.py:12)' -> 'func (file.py)': lines merged per function."""
    name, _, where = frame.partition(" (")
    path = _LINE.sub("", "(" + where).strip("()")
    return f"{name} ({path.rsplit('/', 1)[-1]})" if path else name


def summarise(lines: list[str], top: int) -> str:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [frame_name(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    out = [f"{samples} samples", "", "own %   frame"]
    out += [f"{100 * n / samples:5.1f}   {f}" for f, n in own.most_common(top)]
    out += ["", "total % frame"]
    out += [f"{100 * n / samples:5.1f}   {f}" for f, n in total.most_common(top)]
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        print(summarise(fh.readlines(), int(sys.argv[2]) if len(sys.argv) > 2 else 20))
