"""Weekly reports as jobs: a weekly schedule enqueues one fan-out job; the fan-out
enqueues one report job per active organization; each report job mails its members.

Every step is at least once and idempotent: the schedule slot is claimed once, the
fan-out's report jobs carry stable job ids (a second fan-out of the same week schedules
nothing new), and the sent-mail ledger sends each (organization, week, member) once.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from streams.agents.base import RetryPolicy
from streams.jobs.declare import job
from streams.mail.runtime import mail_runtime
from streams.reports.build import Week, active_organizations
from streams.reports.send import send_report
from streams.schedules.crontab import Crontab
from streams.schedules.model import Run, Schedule
from streams.schedules.spec import parse_spec
from streams.settings import Settings
from streams.silo import REGION_ONLY

log = logging.getLogger(__name__)

SCHEDULE = "reports.weekly"
RETRY = RetryPolicy(times=8, delay=5.0, backoff=2.0, max_delay=600.0)


def report_job_id(organization_id: int, week: Week) -> str:
    return f"weekly-report.{organization_id}.{week.key}"


@job(
    "reports.weekly.fan_out",
    args={"week_end": "string"},
    silos=REGION_ONLY,
    retry=RETRY,
    deadline=600.0,
)
async def fan_out(ctx: Any, week_end: str) -> None:
    """Enqueue one report job per organization active in the week ending ``week_end``,
    all in one transaction (after its commit the relay publishes them)."""
    week = Week.ending(dt.datetime.fromisoformat(week_end))
    rt = await mail_runtime()
    async with rt.pool.connection() as conn:
        orgs = await active_organizations(conn, week)
        for org in orgs:
            await report.aapply_async(
                {"organization_id": org, "week_end": week_end},
                conn=conn,
                job_id=report_job_id(org, week),
            )
        await conn.commit()
    log.info("reports.weekly.fan_out", extra={"week": week.key, "organizations": len(orgs)})


@job(
    "reports.weekly.organization",
    args={"organization_id": "long", "week_end": "string"},
    silos=REGION_ONLY,
    retry=RETRY,
    deadline=120.0,
)
async def report(ctx: Any, organization_id: int, week_end: str) -> None:
    """Build one organization's report and mail it to its members (each once)."""
    week = Week.ending(dt.datetime.fromisoformat(week_end))
    rt = await mail_runtime()
    async with rt.pool.connection() as conn:
        await conn.set_autocommit(True)
        try:
            await send_report(conn, rt.mailer, organization_id, week, sender=rt.sender)
        finally:
            await conn.set_autocommit(False)


async def fire_weekly(conn: Any, run: Run) -> None:
    """The weekly schedule's run: one fan-out job for the week ending at the slot,
    enqueued in the slot's claiming transaction."""
    week_end = run.slot.astimezone(dt.UTC).isoformat()
    await fan_out.aapply_async(
        {"week_end": week_end}, conn=conn, job_id=f"weekly-fan-out.{Week.ending(run.slot).key}"
    )


def schedules(settings: Settings) -> list[Schedule]:
    """The weekly-report schedule (``STREAMS_WEEKLY_REPORTS_SCHEDULE``)."""
    spec = parse_spec(settings.weekly_reports_schedule)
    return [
        Schedule(
            SCHEDULE,
            fire_weekly,
            interval=spec if isinstance(spec, float) else None,
            crontab=spec if isinstance(spec, Crontab) else None,
            silos=REGION_ONLY,
            description="one report job per active organization, emailed to its members",
        )
    ]
