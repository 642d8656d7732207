"""Weekly reports end to end: schedule run -> fan-out job -> one report job per active
organization -> mails received by a real SMTP server (aiosmtpd on loopback); real broker,
PostgreSQL, worker and relay."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from streams import client
from streams.publisher import Publisher
from streams.reports.jobs import fan_out, fire_weekly, report
from streams.schedules.crontab import Crontab
from streams.schedules.model import Run
from streams.settings import Settings
from tests.relay.support import start_relay
from tests.reports.seed import seed_organizations
from tests.reports.support import metric, smtp_sink
from tests.support import harness

ACTIVE, INACTIVE, OPTED_OUT = 900, 100, 20


def _sent_rows(dsn: str) -> Counter[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM mail_sent WHERE kind = 'weekly_report' GROUP BY 1"
        ).fetchall()
    return Counter({r[0]: int(r[1]) for r in rows})


async def _run_schedule(dsn: str, slot: dt.datetime) -> None:
    """What the weekly schedule's run does, in the slot-claiming transaction."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
        await fire_weekly(conn, Run("reports.weekly", slot, False, 0))


@pytest.mark.slow  # a fan-out load run: about 20 s (make test-slow)
def test_weekly_fan_out_mails_each_active_organization_once(
    settings: Settings,
    publisher: Publisher,
    processes: list[harness.Proc],
    tmp_path: Path,
) -> None:
    dsn = settings.database_url.get()
    slot = Crontab.parse("0 9 * * 1").latest_at_or_before(dt.datetime.now(dt.UTC))
    assert slot is not None
    with psycopg.connect(dsn) as conn:
        seed_organizations(
            conn, active=ACTIVE, inactive=INACTIVE, week_end=slot, opted_out_extra=OPTED_OUT
        )
    client.set_publisher(publisher)
    try:
        with smtp_sink() as sink:
            start_relay(settings, processes, tmp_path / "relay.log")
            worker = harness.start_worker(
                settings,
                tmp_path / "worker.log",
                STREAMS_AGENTS="jobs",
                STREAMS_SMTP_URL=sink.url,
                STREAMS_SMTP_SENDER="reports@streams.test",
            )
            processes.append(worker)
            asyncio.run(_run_schedule(dsn, slot))
            harness.wait_for(lambda: sink.count() >= ACTIVE, 150, 0.25, "900 mails")
            harness.wait_for(lambda: _sent_rows(dsn)["sent"] == ACTIVE, 30, 0.2, "sent records")
            first = sink.snapshot()
            assert len(first) == ACTIVE
            to = Counter(addr for m in first for addr in m.envelope_to)
            assert len(to) == ACTIVE and set(to.values()) == {1}
            assert all(a.startswith("u") for a in to), "opted-out members got nothing"
            orgs = {int(n) for n in (a[1:].split("@")[0] for a in to)}
            assert orgs == set(range(1, ACTIVE + 1)), "exactly the active organizations"
            assert all(m.message["From"] == "reports@streams.test" for m in first)

            # The same week again: the schedule run, the fan-out, and every report job
            # run a second time (as after a crash or a duplicate delivery).
            asyncio.run(_run_schedule(dsn, slot))
            fan_out.delay(week_end=slot.isoformat())
            for org in sorted(orgs):
                report.delay(organization_id=org, week_end=slot.isoformat())
            harness.wait_for(
                lambda: metric(worker, "streams_reports_total", outcome="already_sent") >= ACTIVE,
                120,
                0.5,
                "900 duplicate report jobs handled",
            )
            assert sink.count() == ACTIVE, "the second run sent nothing"
            assert _sent_rows(dsn) == Counter({"sent": ACTIVE})
    finally:
        client.set_publisher(None)
