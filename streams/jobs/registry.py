"""The jobs a process knows: declared by importing their modules."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.jobs.declare import Job

# Modules declaring built-in jobs; a worker imports them and ``STREAMS_JOB_MODULES``.
BUILTIN_JOB_MODULES: list[str] = ["streams.reports.jobs", "streams.notifications.jobs"]

_JOBS: dict[str, Job] = {}


def register(job: Job) -> None:
    """Add ``job``; a second, different job with the same name is an error."""
    existing = _JOBS.get(job.name)
    # The same declaration imported twice (module reloaded, __main__) replaces itself.
    if existing is not None and existing is not job and existing.qualname != job.qualname:
        raise ValueError(f"job {job.name!r} is already declared by {existing.qualname}")
    _JOBS[job.name] = job


def get(name: str) -> Job | None:
    """The job declared under ``name``, if this process imported it."""
    return _JOBS.get(name)


def names() -> list[str]:
    return sorted(_JOBS)


def load(modules: Iterable[str]) -> list[str]:
    """Import job modules (each declares its jobs on import); returns the known names."""
    for name in (*BUILTIN_JOB_MODULES, *modules):
        importlib.import_module(name)
    return names()
