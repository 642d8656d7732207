"""Fixtures of the chaos suite: a private broker + PostgreSQL per module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.chaos.support import Case, PrivateStack, new_case, start_private
from tests.support import harness


@pytest.fixture(scope="module")
def private_stack() -> Iterator[PrivateStack]:
    s = start_private(harness.ROOT / ".streams" / f"chaos-{uuid.uuid4().hex[:8]}")
    try:
        yield s
    finally:
        s.stop()
        import shutil

        shutil.rmtree(s.dir, ignore_errors=True)


@pytest.fixture
def case(private_stack: PrivateStack) -> Iterator[Case]:
    yield from new_case(private_stack)
