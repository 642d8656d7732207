"""An activity notification as an email (plain text)."""

from __future__ import annotations

from email.mime.text import MIMEText
from email.utils import formatdate
from typing import TYPE_CHECKING

from streams.mail.smtp import header

if TYPE_CHECKING:
    from streams.notifications.send import Activity

_VERBS = {
    "note": "commented on",
    "assigned": "assigned",
    "unassigned": "unassigned",
    "set_resolved": "resolved",
    "set_unresolved": "reopened",
}


def render(activity: Activity, to: str, *, sender: str, message_id: str) -> MIMEText:
    """The mail telling ``to`` about ``activity``."""
    verb = _VERBS.get(activity.type, activity.type)
    title = activity.issue_title or f"issue #{activity.group_id}"
    lines = [f"{activity.actor} {verb} {title} in {activity.project}."]
    text = activity.data.get("text")
    if activity.type == "note" and isinstance(text, str):
        lines += ["", text]
    lines += ["", "You receive this because you participate in this issue."]
    msg = MIMEText("\n".join(lines) + "\n", "plain", "utf-8")
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = header(f"[{activity.project}] {activity.actor} {verb} {title}")
    msg["Message-ID"] = message_id
    msg["Date"] = formatdate(usegmt=True)
    msg["X-Streams-Kind"] = "activity"
    msg["X-Streams-Activity"] = str(activity.id)
    return msg
