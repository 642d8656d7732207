"""Send each email once: a row in ``mail_sent`` per (kind, key, recipient).

``send_once`` takes a lease on the row (status ``sending``), hands the message to SMTP,
then marks it ``sent``. A second sender of the same mail finds ``sent`` and does
nothing, or a live lease and retries later (``RetryLater``), so two copies of a job
running at once never both send.

The one window left: a crash after the SMTP server accepted the message and before
the row says ``sent``. The row then keeps an expired lease, and the next attempt (the
job is redelivered because it never finished) sends again with the same Message-ID,
so the mail may arrive twice (mail clients that dedupe by Message-ID show it once);
``mail.resend_after_lease`` logs it. Never sending would instead lose mail silently.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from email.message import Message
from typing import Any, Literal

import psycopg

from streams.errors import RetryLater
from streams.mail.smtp import Mailer, PermanentMailError

log = logging.getLogger(__name__)

AsyncConn = psycopg.AsyncConnection[Any]
Outcome = Literal["sent", "already_sent", "refused"]

DEFAULT_LEASE = 120.0  # seconds; longer than one SMTP transaction can take


def message_id(kind: str, key: str, user_id: int, domain: str = "streams.local") -> str:
    """A stable Message-ID for one mail, the same on every resend."""
    return f"<{kind}.{key}.{user_id}@{domain}>"


async def _lease(
    conn: AsyncConn, kind: str, key: str, user_id: int, *, token: uuid.UUID, lease: float
) -> tuple[bool, str, int]:
    """Take the row's lease: (ours, status, attempts). One statement, so atomic on its own
    (and one round trip in the common case)."""
    cur = await conn.execute(
        "INSERT INTO mail_sent AS m (kind, key, user_id, status, token, lease_until,"
        " message_id) VALUES (%s, %s, %s, 'sending', %s,"
        " now() + make_interval(secs => %s), %s)"
        " ON CONFLICT (kind, key, user_id) DO UPDATE SET token = EXCLUDED.token,"
        " lease_until = EXCLUDED.lease_until, attempts = m.attempts + 1"
        " WHERE m.status = 'sending' AND m.lease_until < now()"
        " RETURNING attempts",
        (kind, key, user_id, token, lease, message_id(kind, key, user_id)),
    )
    row = await cur.fetchone()
    if row is not None:
        return True, "sending", int(row[0])
    cur = await conn.execute(
        "SELECT status, attempts FROM mail_sent WHERE kind = %s AND key = %s AND user_id = %s",
        (kind, key, user_id),
    )
    found = await cur.fetchone()
    if found is None:  # the holder gave the row back in between: try again later
        return False, "sending", 0
    return False, str(found[0]), int(found[1])


async def send_once(
    conn: AsyncConn,
    mailer: Mailer,
    *,
    kind: str,
    key: str,
    user_id: int,
    build: Callable[[str], Message],
    lease: float = DEFAULT_LEASE,
) -> Outcome:
    """Send the mail ``build(message_id)`` unless (kind, key, user_id) was sent already.

    ``conn`` must be in autocommit mode (each step is its own transaction). Raises
    ``RetryLater`` while another sender holds the lease, and the mailer's ``MailError``
    when the server did not take the message (the lease is released for a retry).
    """
    token = uuid.uuid4()
    ours, status, attempts = await _lease(conn, kind, key, user_id, token=token, lease=lease)
    if not ours:
        if status in {"sent", "refused"}:
            return "already_sent" if status == "sent" else "refused"
        raise RetryLater(f"mail {kind}/{key}/{user_id} is being sent by another worker", lease)
    if attempts > 1:
        log.warning(
            "mail.resend_after_lease",
            extra={"kind": kind, "key": key, "user_id": user_id, "attempts": attempts},
        )
    try:
        await mailer.send(build(message_id(kind, key, user_id)), kind=kind)
    # A cancellation (deadline) keeps the lease, as a crash would: the send may still
    # complete in its thread, so only the lease's expiry lets a retry send again.
    except PermanentMailError as exc:
        await _finish(conn, token, "refused", str(exc))
        log.warning(
            "mail.refused", extra={"kind": kind, "key": key, "user_id": user_id, "error": str(exc)}
        )
        return "refused"
    except Exception:
        # Not accepted: give the row back so the retry (this job's, or a copy's) sends it.
        await conn.execute(
            "DELETE FROM mail_sent WHERE token = %s AND status = 'sending'", (token,)
        )
        raise
    await _finish(conn, token, "sent", None)
    return "sent"


async def _finish(conn: AsyncConn, token: uuid.UUID, status: str, error: str | None) -> None:
    await conn.execute(
        "UPDATE mail_sent SET status = %s, sent_at = now(), error = %s WHERE token = %s",
        (status, error, token),
    )
