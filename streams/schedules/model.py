"""Periodic schedules declared in code: when they are due and what a run enqueues.

A schedule has slots (its due times): every ``interval`` seconds counted from the Unix
epoch, or the minutes a crontab matches (UTC), so every worker computes the same slots.
A run is ``fire(conn, run)`` called inside the transaction that claims the slot in
PostgreSQL: whatever it enqueues there (a job through the ``conn=`` form, an outbox
row, a table row) commits together with the claim, or not at all.

Slots older than ``grace`` when a worker first sees them were missed (every worker was
down, or stuck); ``catch_up`` decides what happens to them: ``once`` runs the newest
of them once, ``skip`` runs none, ``all`` runs each.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from streams.errors import ConfigurationError
from streams.schedules.crontab import Crontab
from streams.silo import ALL_SILOS, SiloMode

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


class CatchUp(enum.StrEnum):
    ONCE = "once"
    SKIP = "skip"
    ALL = "all"


@dataclass(frozen=True)
class Run:
    """One claimed slot, as ``fire`` sees it."""

    schedule: str
    slot: dt.datetime
    catch_up: bool  # True when this run stands for missed slots
    missed: int  # slots it stands for that were not run (0 for a regular run)


# ``conn`` is the claiming transaction's psycopg AsyncConnection (typed Any so that
# schedule modules need not import psycopg's generic types).
Fire = Callable[[Any, Run], Awaitable[None]]


@dataclass(frozen=True)
class Schedule:
    """A periodic schedule: exactly one of ``interval`` (seconds) or ``crontab``."""

    name: str
    fire: Fire
    interval: float | None = None
    crontab: Crontab | None = None
    # None: the process default (``STREAMS_SCHEDULE_CATCH_UP`` / ``_GRACE``).
    catch_up: CatchUp | None = None
    grace: float | None = None
    silos: frozenset[SiloMode] = ALL_SILOS
    description: str = ""
    max_catch_up: int = 100  # ``all``: slots run per tick at most, oldest first

    def __post_init__(self) -> None:
        if (self.interval is None) == (self.crontab is None):
            raise ConfigurationError(f"schedule {self.name!r}: give interval or crontab")
        if self.interval is not None and not self.interval >= 0.1:
            raise ConfigurationError(f"schedule {self.name!r}: interval must be >= 0.1 s")
        if self.grace is not None and self.grace < 0:
            raise ConfigurationError(f"schedule {self.name!r}: grace must be >= 0")

    def with_defaults(self, catch_up: CatchUp, grace: float) -> Schedule:
        """This schedule with the process defaults filled in where it sets none.

        The default grace is at most one interval: a slot not run before the next one
        was due counts as missed (so an outage of a 2 s schedule runs once, not 30 times).
        """
        if self.catch_up is not None and self.grace is not None:
            return self
        if self.interval is not None:
            grace = min(grace, self.interval)
        return replace(
            self,
            catch_up=self.catch_up if self.catch_up is not None else catch_up,
            grace=self.grace if self.grace is not None else grace,
        )

    @property
    def catch_up_policy(self) -> CatchUp:
        return self.catch_up if self.catch_up is not None else CatchUp.ONCE

    @property
    def grace_seconds(self) -> float:
        return self.grace if self.grace is not None else 60.0

    @property
    def spec(self) -> str:
        """``every 2s`` or the crontab text, for listings."""
        return f"every {self.interval:g}s" if self.interval is not None else f"cron {self.crontab}"

    def latest_slot(self, now: dt.datetime) -> dt.datetime | None:
        """The newest slot at or before ``now``."""
        if self.crontab is not None:
            return self.crontab.latest_at_or_before(now)
        assert self.interval is not None
        k = math.floor((now - EPOCH).total_seconds() / self.interval)
        return EPOCH + dt.timedelta(seconds=k * self.interval)

    def next_slot(self, after: dt.datetime) -> dt.datetime | None:
        """The first slot strictly after ``after``."""
        if self.crontab is not None:
            return self.crontab.next_after(after)
        assert self.interval is not None
        k = math.floor((after - EPOCH).total_seconds() / self.interval) + 1
        return EPOCH + dt.timedelta(seconds=k * self.interval)

    def slots_between(
        self, after: dt.datetime, until: dt.datetime, limit: int
    ) -> list[dt.datetime]:
        """Slots in ``(after, until]``, oldest first, at most ``limit`` (the newest kept)."""
        found: list[dt.datetime] = []
        slot = self.latest_slot(until)
        while slot is not None and slot > after and len(found) < limit:
            found.append(slot)
            slot = self.latest_slot(slot - dt.timedelta(microseconds=1))
        return found[::-1]


@dataclass
class Registry:
    """Schedules by name; modules declare theirs at import time."""

    schedules: dict[str, Schedule] = field(default_factory=dict)

    def add(self, schedule: Schedule) -> Schedule:
        # A name declared twice (a module imported again) keeps the newest declaration.
        self.schedules[schedule.name] = schedule
        return schedule

    def for_silo(self, silo: SiloMode) -> list[Schedule]:
        return [s for s in self.schedules.values() if silo.allows(s.silos)]


REGISTRY = Registry()


def every(
    name: str,
    seconds: float,
    fire: Fire,
    *,
    catch_up: CatchUp | None = None,
    grace: float | None = None,
    silos: frozenset[SiloMode] = ALL_SILOS,
    description: str = "",
) -> Schedule:
    """Declare (and register) an interval schedule."""
    return REGISTRY.add(
        Schedule(
            name,
            fire,
            interval=seconds,
            catch_up=catch_up,
            grace=grace,
            silos=silos,
            description=description,
        )
    )


def cron(
    name: str,
    expression: str,
    fire: Fire,
    *,
    catch_up: CatchUp | None = None,
    grace: float | None = None,
    silos: frozenset[SiloMode] = ALL_SILOS,
    description: str = "",
) -> Schedule:
    """Declare (and register) a crontab schedule (5 fields, UTC)."""
    return REGISTRY.add(
        Schedule(
            name,
            fire,
            crontab=Crontab.parse(expression),
            catch_up=catch_up,
            grace=grace,
            silos=silos,
            description=description,
        )
    )
