"""``streams schedules list``: each schedule with its last and next run and its status."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from streams.schedules import state
from streams.schedules.model import Schedule

UTC = dt.UTC


@dataclass(frozen=True)
class Row:
    name: str
    spec: str
    last: str
    next: str
    status: str


def _when(t: dt.datetime | None) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if t is not None else "-"


def _status(
    schedule: Schedule,
    last: state.LastRun | None,
    failure: state.FailureInfo | None,
    now: dt.datetime,
) -> str:
    due = schedule.latest_slot(now)
    grace = dt.timedelta(seconds=schedule.grace_seconds)
    if failure is not None and (last is None or failure.last_failed_at > last.claimed_at):
        return f"failing ({failure.failures} failures; last: {failure.last_error[:80]})"
    if last is None:
        return "never run"
    if due is not None and due > last.slot and now - due > grace:
        return f"MISSED {_when(due)}"
    if last.kind == "catch_up":
        return "ok (caught up)"
    return "skipped missed slots" if last.kind == "skipped" else "ok"


def rows(
    conn: psycopg.Connection[Any], schedules: Sequence[Schedule], now: dt.datetime | None = None
) -> list[Row]:
    """One row per schedule, from the claimed slots in PostgreSQL."""
    now = now or dt.datetime.now(UTC)
    names = [s.name for s in schedules]
    last = state.last_runs(conn, names)
    failures = state.failures(conn, names)
    out = []
    for s in schedules:
        run = last.get(s.name)
        after = run.slot if run is not None else now
        nxt = s.next_slot(max(after, s.latest_slot(now) or after))
        last_text = "-" if run is None else f"{_when(run.slot)} ({run.kind})"
        out.append(
            Row(s.name, s.spec, last_text, _when(nxt), _status(s, run, failures.get(s.name), now))
        )
    return out


def render(table: Sequence[Row]) -> str:
    """A fixed-width text table."""
    header = Row("schedule", "when", "last run", "next run", "status")
    cells = [header, *table]
    widths = [max(len(getattr(r, f)) for r in cells) for f in ("name", "spec", "last", "next")]
    lines = [
        "  ".join(
            [
                r.name.ljust(widths[0]),
                r.spec.ljust(widths[1]),
                r.last.ljust(widths[2]),
                r.next.ljust(widths[3]),
                r.status,
            ]
        ).rstrip()
        for r in cells
    ]
    return "\n".join(lines) if table else "no schedules declared"
