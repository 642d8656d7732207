"""Sampling profiles of benchmark processes (py-spy), and their top frames.

Set ``BENCH_PROFILE=1`` (or ``gil``: only samples holding the GIL) to record every
process a benchmark wraps in ``profiled(...)`` with ``py-spy record``
(``.venv/bin/pip install py-spy``); the raw collapsed stacks
go to ``.streams/bench/profiles/<name>.txt`` and the top frames are printed when the
block ends. Without the variable the block does nothing.

    BENCH_PROFILE=1 .venv/bin/python bench/bench_webhooks.py
    .venv/bin/python bench/_profile.py .streams/bench/profiles/webhooks-worker.txt
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".streams" / "bench" / "profiles"


def _py_spy() -> str | None:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def profiled(pid: int, name: str, rate: int = 200) -> Iterator[None]:
    """Record ``pid`` with py-spy while the block runs (only if BENCH_PROFILE is set)."""
    tool = _py_spy() if os.environ.get("BENCH_PROFILE") else None
    if tool is None:
        if os.environ.get("BENCH_PROFILE"):
            print("BENCH_PROFILE: py-spy not installed (.venv/bin/pip install py-spy)")
        yield
        return
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.txt"
    cmd = [tool, "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", str(path)]
    if os.environ.get("BENCH_PROFILE") == "gil":
        # Only the thread holding the GIL: Python CPU by frame. Without it, a thread
        # waiting inside C (librdkafka's poll, a flush) may be sampled as busy.
        cmd.append("--gil")
    spy = subprocess.Popen(
        [*cmd, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
        if path.exists():
            print(f"profile {name} ({path.relative_to(ROOT)}):")
            print(top_frames(path))


def _short(frame: str) -> str:
    """``handle (streams/agents/x.py:12)`` -> ``handle (agents/x.py)``."""
    func, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/streams/", "/lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{func} ({where})" if where else func


def top_frames(path: Path, n: int = 12) -> str:
    """The ``n`` functions with the most samples on the stack (inclusive) and on top (self)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [_short(f) for f in stack.split(";") if f]
        total += samples
        if frames:
            own[frames[-1]] += samples
        for f in set(frames[1:]):  # the thread's root frame is on every stack
            inclusive[f] += samples
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples; top self:"]
    lines += [f"    {c / total:6.1%}  {f}" for f, c in own.most_common(n)]
    lines.append("  top inclusive:")
    lines += [f"    {c / total:6.1%}  {f}" for f, c in inclusive.most_common(n)]
    return "\n".join(lines)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(arg)
        print(top_frames(Path(arg), int(os.environ.get("TOP", "15"))))
