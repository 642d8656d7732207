"""The sent-mail ledger on a real PostgreSQL, and SmtpMailer against a real aiosmtpd."""

from __future__ import annotations

import asyncio
from email.message import Message
from email.mime.text import MIMEText
from typing import Any

import psycopg
import pytest

from streams.errors import RetryLater
from streams.mail.ledger import send_once
from streams.mail.smtp import MailError, PermanentMailError, SmtpConfig, SmtpMailer
from tests.reports.support import smtp_sink


class FakeMailer:
    """A ``Mailer`` that records messages; it can fail or wait before accepting."""

    def __init__(self, fail: BaseException | None = None, pause: float = 0.0) -> None:
        self.sent: list[Message] = []
        self.fail = fail
        self.pause = pause

    async def send(self, message: Message, *, kind: str) -> None:
        await asyncio.sleep(self.pause)
        if self.fail is not None:
            raise self.fail
        self.sent.append(message)


def _mail(message_id: str) -> Message:
    msg = MIMEText("hello")
    msg["To"] = "u@example.com"
    msg["Message-ID"] = message_id
    return msg


async def _send(dsn: str, mailer: Any, **kw: Any) -> str:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return await send_once(
            conn, mailer, kind="weekly_report", key="7:2026-11-23", user_id=1, build=_mail, **kw
        )


def _rows(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT status, attempts, message_id FROM mail_sent").fetchall()


def test_a_mail_is_sent_once_however_often_it_is_asked_for(database: str) -> None:
    mailer = FakeMailer()
    assert asyncio.run(_send(database, mailer)) == "sent"
    assert asyncio.run(_send(database, mailer)) == "already_sent"
    assert len(mailer.sent) == 1
    assert _rows(database) == [("sent", 1, "<weekly_report.7:2026-11-23.1@streams.local>")]


def test_two_senders_at_once_send_one_mail(database: str) -> None:
    slow = FakeMailer(pause=0.5)

    async def both() -> list[Any]:
        return list(
            await asyncio.gather(
                _send(database, slow), _send(database, slow), return_exceptions=True
            )
        )

    outcomes = asyncio.run(both())
    assert len(slow.sent) == 1
    assert "sent" in outcomes
    assert [type(o) for o in outcomes if o != "sent"] == [RetryLater]


def test_a_failed_handover_gives_the_row_back_for_the_retry(database: str) -> None:
    with pytest.raises(MailError):
        asyncio.run(_send(database, FakeMailer(fail=MailError("421 try later"))))
    assert _rows(database) == []
    mailer = FakeMailer()
    assert asyncio.run(_send(database, mailer)) == "sent"
    assert len(mailer.sent) == 1


def test_a_refused_mail_is_not_retried(database: str) -> None:
    assert asyncio.run(_send(database, FakeMailer(fail=PermanentMailError("550")))) == "refused"
    assert asyncio.run(_send(database, FakeMailer())) == "refused"
    assert [r[0] for r in _rows(database)] == ["refused"]


def test_a_crash_after_the_handover_resends_once_the_lease_expired(database: str) -> None:
    # What a crash between SMTP acceptance and the 'sent' record leaves behind.
    with psycopg.connect(database) as conn:
        conn.execute(
            "INSERT INTO mail_sent (kind, key, user_id, status, token, lease_until, message_id)"
            " VALUES ('weekly_report', '7:2026-11-23', 1, 'sending', gen_random_uuid(),"
            " now() + interval '1 hour', '<weekly_report.7:2026-11-23.1@streams.local>')"
        )
    with pytest.raises(RetryLater):  # the lease is live: maybe someone is sending right now
        asyncio.run(_send(database, FakeMailer()))
    with psycopg.connect(database) as conn:
        conn.execute("UPDATE mail_sent SET lease_until = now() - interval '1 second'")
    mailer = FakeMailer()
    assert asyncio.run(_send(database, mailer)) == "sent"
    assert mailer.sent[0]["Message-ID"] == "<weekly_report.7:2026-11-23.1@streams.local>"
    assert _rows(database) == [("sent", 2, "<weekly_report.7:2026-11-23.1@streams.local>")]


def test_smtp_mailer_reuses_its_connection_and_maps_refusals() -> None:
    with smtp_sink() as sink:
        mailer = SmtpMailer(SmtpConfig.from_url(sink.url))
        for n in range(3):
            mailer.send_sync(_mail(f"<{n}@x>"))
        assert sink.count() == 3
        refusing = SmtpMailer(SmtpConfig.from_url(sink.url))
        sink.refuse = True
        with pytest.raises(PermanentMailError, match="550"):
            refusing.send_sync(_mail("<r@x>"))
        mailer.close()
    with pytest.raises(MailError, match="cannot connect"):
        SmtpMailer(SmtpConfig.from_url(sink.url, timeout=2)).send_sync(_mail("<late@x>"))


def test_smtp_urls() -> None:
    c = SmtpConfig.from_url("smtps://bob:s%40cret@mail.example.com")
    assert (c.host, c.port, c.use_tls, c.username) == ("mail.example.com", 465, True, "bob")
    assert c.password is not None and c.password.get() == "s@cret" and "s@cret" not in repr(c)
    assert SmtpConfig.from_url("smtp://h:2525?starttls=1").starttls
    with pytest.raises(ValueError, match="smtp://"):
        SmtpConfig.from_url("http://h")
