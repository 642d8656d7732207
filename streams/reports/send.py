"""Send one organization's weekly report to each member once."""

from __future__ import annotations

import functools
import logging
from collections import Counter
from email.message import Message
from typing import Any

import psycopg

from streams import metrics
from streams.mail.ledger import send_once
from streams.mail.smtp import Mailer
from streams.reports.build import Recipient, Report, Week, build_report
from streams.reports.render import render

log = logging.getLogger(__name__)

KIND = "weekly_report"
REPORTS = metrics.counter(
    "streams_reports_total",
    "Weekly report mails by outcome (sent, already_sent, refused, no_recipients, gone).",
    ("outcome",),
)


async def send_report(
    conn: psycopg.AsyncConnection[Any],
    mailer: Mailer,
    organization_id: int,
    week: Week,
    *,
    sender: str,
) -> Counter[str]:
    """Build the report and mail it to every member who has not opted out, each once.

    ``conn`` must be in autocommit mode. Returns outcome counts; raises on a mail that
    could not be handed over (the job retries; mails already sent are not sent again).
    """
    outcomes: Counter[str] = Counter()
    report = await build_report(conn, organization_id, week)
    if report is None:
        outcomes["gone"] += 1
    else:
        members = report.recipients
        if not members:
            outcomes["no_recipients"] += 1
        key = f"{organization_id}:{week.key}"
        for member in members:
            outcome = await send_once(
                conn,
                mailer,
                kind=KIND,
                key=key,
                user_id=member.user_id,
                build=functools.partial(_render, report, member, sender),
            )
            outcomes[outcome] += 1
    for name, n in outcomes.items():
        REPORTS.labels(name).inc(n)
    log.info(
        "reports.weekly.organization",
        extra={"organization_id": organization_id, "week": week.key, **outcomes},
    )
    return outcomes


def _render(report: Report, member: Recipient, sender: str, message_id: str) -> Message:
    return render(report, member, sender=sender, message_id=message_id)
