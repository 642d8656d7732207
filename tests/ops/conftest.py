"""Paths and tools the ops tests share."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
SCHEMAS = Path(os.environ.get("STREAMS_K8S_SCHEMAS", ROOT.parent / "shared" / "k8s-schemas"))


def require_tool(name: str) -> str:
    """The tool's path; in CI a missing tool fails the test, elsewhere it skips it."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (`make promtool` installs prometheus + promtool)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
