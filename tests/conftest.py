"""Session-wide real broker + PostgreSQL; per-test topic prefix, consumer group, database."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.publisher import Publisher
from streams.settings import Settings
from tests.support import harness


@pytest.fixture(scope="session")
def real_stack() -> Iterator[harness.Stack]:
    s = harness.start_stack()
    try:
        yield s
    finally:
        harness.stop_stack(s)


@pytest.fixture(scope="session")
def template_db(real_stack: harness.Stack) -> str:
    return harness.create_template(real_stack.admin_dsn)


@pytest.fixture
def database(real_stack: harness.Stack, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test; its DSN."""
    name = harness.create_database(real_stack.admin_dsn, template_db)
    try:
        yield harness.dsn_for(real_stack.admin_dsn, name)
    finally:
        harness.drop_database(real_stack.admin_dsn, name)


@pytest.fixture
def settings(real_stack: harness.Stack, database: str) -> Settings:
    """Settings isolated to this test: own topic prefix, app id (group), web port, database."""
    from streams import topics

    s = harness.make_settings(real_stack.bootstrap, database)
    topics.create_all(s)
    return s


@pytest.fixture
def publisher(settings: Settings) -> Iterator[Publisher]:
    p = Publisher(settings)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[harness.Proc]]:
    """Processes started by the test; all stopped by PID at teardown."""
    procs: list[harness.Proc] = []
    yield procs
    for p in procs:
        p.stop()


@pytest.fixture
def worker(
    settings: Settings,
    processes: list[harness.Proc],
    tmp_path: Path,
) -> Callable[..., harness.Proc]:
    """Start a ``streams worker`` for this test's settings; waits until it is ready."""
    counter = [0]

    def start(s: Settings | None = None, **kw: Any) -> harness.Proc:
        counter[0] += 1
        proc = harness.start_worker(s or settings, tmp_path / f"worker-{counter[0]}.log", **kw)
        processes.append(proc)
        return proc

    return start


class _ErrorCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def no_swallowed_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test when an error was logged in this process (e.g. a swallowed task error)."""
    collector = _ErrorCollector()
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        yield
    finally:
        root.removeHandler(collector)
    if request.node.get_closest_marker("allow_errors"):
        return
    ours = [r for r in collector.records if r.name.startswith(("streams", "asyncio"))]
    if ours:
        pytest.fail("errors were logged: " + "; ".join(r.getMessage() for r in ours[:5]))
