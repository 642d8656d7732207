"""What the status page shows: agent counters from the metrics registry, outbox
backlog and schedule runs from PostgreSQL.

Counters are read in-process from ``streams.metrics.REGISTRY`` (no scrape). Rates
come from a ``RateSampler`` that a worker timer feeds every few seconds, so the first
page view already has one. Every SQL query here is bounded (a capped count, an index
lookup, a statement timeout) so that a large backlog cannot make the page slow.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from psycopg import AsyncConnection, sql

COUNT_CAP = 100_000  # the backlog count stops here ("100000+")
OUTBOX_TABLES = ("region_outbox", "control_outbox")
# Periodic schedules' claimed runs and last failures (streams/schedules); shown if present.
SCHEDULE_TABLES = ("schedule_run", "schedule_failure")
SCHEDULE_ROWS = 20


@dataclass(frozen=True)
class AgentRow:
    agent: str
    success: float
    failure: float
    ignored: float
    retries: float
    in_flight: float
    rate: float | None  # handled messages per second, recent window; None before 2 samples


@dataclass(frozen=True)
class BacklogRow:
    table: str
    rows: int
    capped: bool  # at least ``rows`` (the count stopped at COUNT_CAP)
    oldest_age: float | None  # seconds since the oldest row was written; None if empty


@dataclass(frozen=True)
class TableRows:
    """A table shown as it is (schedule runs: their columns are the other side's)."""

    table: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


def _samples(registry: CollectorRegistry, name: str) -> Iterable[tuple[dict[str, str], float]]:
    for family in registry.collect():
        for s in family.samples:
            if s.name == name:
                yield s.labels, s.value


def agent_counters(registry: CollectorRegistry) -> dict[str, dict[str, float]]:
    """agent -> {success, failure, ignored, retries, in_flight}, from the registry."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for labels, value in _samples(registry, "streams_agent_messages_total"):
        out[labels["agent"]][labels["outcome"]] = value
    for labels, value in _samples(registry, "streams_agent_retries_total"):
        out[labels["agent"]]["retries"] = value
    for labels, value in _samples(registry, "streams_agent_in_flight"):
        out[labels["agent"]]["in_flight"] = value
    return dict(out)


def dead_letter_counters(registry: CollectorRegistry) -> list[tuple[str, str, float]]:
    """(source topic, reason, count) sent by this worker since it started."""
    rows = [
        (labels["source"], labels["reason"], value)
        for labels, value in _samples(registry, "streams_dead_letters_total")
    ]
    return sorted(rows)


def handled(counters: Mapping[str, float]) -> float:
    return sum(counters.get(k, 0.0) for k in ("success", "failure", "ignored"))


class RateSampler:
    """Handled-message totals per agent over a sliding window; rates from its ends."""

    def __init__(self, window: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self.clock = clock
        self._points: deque[tuple[float, dict[str, float]]] = deque()

    def sample(self, totals: Mapping[str, float]) -> None:
        """Record the current totals; drops points older than the window (keeps 2)."""
        now = self.clock()
        self._points.append((now, dict(totals)))
        while len(self._points) > 2 and now - self._points[1][0] >= self.window:
            self._points.popleft()

    def rate(self, agent: str) -> float | None:
        if len(self._points) < 2:
            return None
        (t0, first), (t1, last) = self._points[0], self._points[-1]
        if t1 <= t0:
            return None
        return max(0.0, last.get(agent, 0.0) - first.get(agent, 0.0)) / (t1 - t0)


def agent_rows(
    registry: CollectorRegistry, agents: Iterable[str], sampler: RateSampler
) -> list[AgentRow]:
    """One row per agent this worker runs or has counters for."""
    counters = agent_counters(registry)
    rows = []
    for name in sorted(set(agents) | set(counters)):
        c = counters.get(name, {})
        rows.append(
            AgentRow(
                name,
                c.get("success", 0.0),
                c.get("failure", 0.0),
                c.get("ignored", 0.0),
                c.get("retries", 0.0),
                c.get("in_flight", 0.0),
                sampler.rate(name),
            )
        )
    return rows


async def existing_tables(conn: AsyncConnection[Any], names: Sequence[str]) -> list[str]:
    """Those of ``names`` that exist in the current schema search path, in order."""
    cur = await conn.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relname = ANY(%s) AND c.relkind = 'r' "
        "AND pg_table_is_visible(c.oid)",
        (list(names),),
    )
    found = {str(r[0]) for r in await cur.fetchall()}
    return [n for n in names if n in found]


async def outbox_backlog(conn: AsyncConnection[Any]) -> list[BacklogRow]:
    """Rows waiting in each outbox table and the age of the oldest (by id)."""
    out = []
    for table in await existing_tables(conn, OUTBOX_TABLES):
        ident = sql.Identifier(table)
        cur = await conn.execute(
            sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT %s) AS capped").format(ident),
            (COUNT_CAP + 1,),
        )
        count_row = await cur.fetchone()
        count = int(count_row[0]) if count_row else 0
        cur = await conn.execute(
            sql.SQL(
                "SELECT extract(epoch FROM now() - date_added) FROM {} ORDER BY id LIMIT 1"
            ).format(ident)
        )
        age_row = await cur.fetchone()
        out.append(
            BacklogRow(
                table,
                min(count, COUNT_CAP),
                count > COUNT_CAP,
                float(age_row[0]) if age_row else None,
            )
        )
    return out


async def schedule_tables(conn: AsyncConnection[Any]) -> list[TableRows]:
    """The latest rows of each schedule table that exists, newest first."""
    return [await _latest_rows(conn, t) for t in await existing_tables(conn, SCHEDULE_TABLES)]


async def _latest_rows(conn: AsyncConnection[Any], table: str) -> TableRows:
    cur = await conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = %s AND table_schema = current_schema() ORDER BY ordinal_position",
        (table,),
    )
    columns = [(str(n), str(t)) for n, t in await cur.fetchall()]
    # Newest first by the first time column, else by the first column.
    order = next((n for n, t in columns if t.startswith("timestamp")), columns[0][0])
    cur = await conn.execute(
        sql.SQL("SELECT * FROM {} ORDER BY {} DESC NULLS LAST LIMIT %s").format(
            sql.Identifier(table), sql.Identifier(order)
        ),
        (SCHEDULE_ROWS,),
    )
    rows = tuple(tuple(r) for r in await cur.fetchall())
    return TableRows(table, tuple(n for n, _ in columns), rows)
