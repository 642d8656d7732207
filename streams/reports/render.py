"""A weekly report as an email (plain text)."""

from __future__ import annotations

from email.mime.text import MIMEText
from email.utils import formatdate

from streams.mail.smtp import header
from streams.reports.build import Recipient, Report


def subject(report: Report) -> str:
    return (
        f"Weekly report for {report.organization}: "
        f"{report.week.start:%b %d} - {report.week.end:%b %d, %Y}"
    )


def body(report: Report, recipient: Recipient) -> str:
    """The text of the report: one line per project, then the top issues."""
    lines = [
        f"Hello {recipient.name},",
        "",
        f"This is what happened in {report.organization} between "
        f"{report.week.start:%Y-%m-%d} and {report.week.end:%Y-%m-%d} (UTC).",
        "",
        f"{'project':<30} {'new':>6} {'resolved':>9} {'open':>6} {'events':>8}",
    ]
    lines += [
        f"{p.slug:<30} {p.new:>6} {p.resolved:>9} {p.still_open:>6} {p.events:>8}"
        for p in report.projects
    ] or ["(no projects)"]
    lines += ["", "Top issues by events:"]
    lines += [
        f"  {i.events:>8}  {i.project}: {i.title or '(untitled)'} (#{i.group_id})"
        for i in report.top_issues
    ] or ["  (no events this week)"]
    lines += [
        "",
        "You receive this because you are a member of the organization; "
        "turn weekly reports off in your account settings.",
    ]
    return "\n".join(lines) + "\n"


def render(report: Report, recipient: Recipient, *, sender: str, message_id: str) -> MIMEText:
    """The email for one recipient."""
    # MIMEText (compat32 headers): the default policy's header parsing cost 3 ms a mail.
    msg = MIMEText(body(report, recipient), "plain", "utf-8")
    msg["From"] = sender
    msg["To"] = recipient.email
    msg["Subject"] = header(subject(report))
    msg["Message-ID"] = message_id
    msg["Date"] = formatdate(usegmt=True)
    msg["X-Streams-Kind"] = "weekly_report"
    msg["X-Streams-Organization"] = str(report.organization_id)
    return msg
