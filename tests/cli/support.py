"""Run the ``streams`` command as a user would, and read what it printed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLOSED = "127.0.0.1:1"  # nothing listens on port 1: connection refused at once
PASSWORD = "s3cr3t-pw"
CLOSED_DSN = f"postgresql://streams:{PASSWORD}@127.0.0.1:1/streams"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def streams(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60, stdin: str = ""
) -> Result:
    """``python -m streams ARGS`` with ``env`` over a clean environment (no stack addresses
    unless given)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMS_", "KAFKA_"))}
    base.pop("DATABASE_URL", None)
    full = {
        **base,
        "KAFKA_BOOTSTRAP_SERVERS": CLOSED,
        "DATABASE_URL": CLOSED_DSN,
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env=full,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
