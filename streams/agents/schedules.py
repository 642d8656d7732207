"""Periodic schedules: a timer in every worker claims and runs due slots.

No topic and no table of its own: the claimed slots live in PostgreSQL
(``schedule_run``, see ``streams.schedules.state``), so any number of workers can tick
the same schedules and each slot still runs once. Runs enqueue their work (jobs, with
the ``conn=`` form) in the claiming transaction.
"""

from __future__ import annotations

import logging
from typing import Any

from streams.runtime import Runtime
from streams.schedules.model import REGISTRY, CatchUp, Schedule
from streams.schedules.modules import load
from streams.schedules.ticker import Ticker

log = logging.getLogger(__name__)


def install(app: Any, runtime: Runtime) -> None:
    settings = runtime.settings
    catch_up, grace = CatchUp(settings.schedule_catch_up), settings.schedule_grace
    names = [s.name for s in load(settings)]

    def current() -> list[Schedule]:
        # Read each tick: extension modules installed after this one may declare more.
        return [s.with_defaults(catch_up, grace) for s in REGISTRY.for_silo(settings.silo_mode)]

    ticker = Ticker(current, runtime.pool)
    app.timer(settings.schedule_tick, name="schedules-tick")(ticker.tick)
    runtime.agents.append("schedules")
    log.info("schedules.installed", extra={"schedules": names, "worker": ticker.worker})
