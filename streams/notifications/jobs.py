"""The activity-notification job: scheduled by ``record_activity`` after its commit."""

from __future__ import annotations

from typing import Any

from streams.agents.base import RetryPolicy
from streams.jobs.declare import job
from streams.mail.runtime import mail_runtime
from streams.notifications.send import send_notifications
from streams.silo import REGION_ONLY

# SMTP outages last minutes: retry for about half an hour before dead-lettering.
RETRY = RetryPolicy(times=8, delay=5.0, backoff=2.0, max_delay=600.0)


@job(
    "notifications.activity",
    args={"activity_id": "long"},
    silos=REGION_ONLY,  # issues and their activity live in the region silo
    retry=RETRY,
    deadline=120.0,
)
async def notify_activity(ctx: Any, activity_id: int) -> None:
    """Mail the activity's participants but the actor (each once)."""
    rt = await mail_runtime()
    async with rt.pool.connection() as conn:
        await conn.set_autocommit(True)
        try:
            await send_notifications(conn, rt.mailer, activity_id, sender=rt.sender)
        finally:
            await conn.set_autocommit(False)
