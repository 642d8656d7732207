"""Which schedules a process knows: built-in ones and those of extension modules.

A module declares schedules at import time (``streams.schedules.model.every`` /
``cron``), or through a ``schedules(settings)`` function when they depend on settings.
The worker (``streams.agents.schedules``) and ``streams schedules list`` load the same
modules, so they agree on the list.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Protocol

from streams.schedules.model import REGISTRY, Schedule
from streams.silo import SiloMode


class _Settings(Protocol):
    # The parts of ``streams.settings.Settings`` used here (no import: settings parses
    # schedule specs with this package, and packages must not import each other).
    @property
    def agent_modules(self) -> tuple[str, ...]: ...
    @property
    def silo_mode(self) -> SiloMode: ...


# Modules that declare built-in schedules (imported by name, so no layering edge).
BUILTIN_SCHEDULE_MODULES: list[str] = ["streams.reports.jobs"]


def load(settings: _Settings, extra: Iterable[str] = ()) -> list[Schedule]:
    """Import the schedule modules; the schedules of this silo, by name."""
    for name in (*BUILTIN_SCHEDULE_MODULES, *settings.agent_modules, *extra):
        module = importlib.import_module(name)
        declare = getattr(module, "schedules", None)
        if callable(declare):
            for schedule in declare(settings):
                REGISTRY.add(schedule)
    return sorted(REGISTRY.for_silo(settings.silo_mode), key=lambda s: s.name)
