"""SMTP sending with smtplib, in worker threads, reusing connections.

``STREAMS_SMTP_URL`` is ``smtp://[user:password@]host[:port]`` (``?starttls=1`` to
upgrade) or ``smtps://...`` (TLS from the first byte). A connection is kept open
between sends and reopened once if the server dropped it; anything else is raised to
the caller, which decides whether to retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import smtplib
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from email.header import Header
from email.message import Message
from typing import Protocol

from streams import metrics
from streams.errors import ConfigurationError, StreamsError
from streams.settings import Secret

log = logging.getLogger(__name__)

SENT = metrics.counter(
    "streams_mail_sent_total",
    "Emails handed to the SMTP server, by kind and outcome.",
    ("kind", "outcome"),
)
SEND_SECONDS = metrics.histogram("streams_mail_send_seconds", "One SMTP transaction.", ("kind",))


def header(text: str) -> str:
    """A header value: as it is when ASCII, else RFC 2047 encoded (UTF-8)."""
    return text if text.isascii() else Header(text, "utf-8").encode()


class MailError(StreamsError):
    """The SMTP server did not accept a message."""


class PermanentMailError(MailError):
    """The server refused the message for good (5xx): retrying cannot help."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    use_tls: bool = False  # smtps://
    starttls: bool = False
    username: str | None = None
    password: Secret | None = None
    timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str, timeout: float = 30.0) -> SmtpConfig:
        """Parse ``smtp://`` / ``smtps://`` URLs; ``ConfigurationError`` when malformed."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ConfigurationError(f"SMTP URL must be smtp://host[:port] or smtps://...: {url!r}")
        query = urllib.parse.parse_qs(parts.query)
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if tls else 25),
            use_tls=tls,
            starttls=query.get("starttls", ["0"])[0] in {"1", "true", "yes"},
            username=urllib.parse.unquote(parts.username) if parts.username else None,
            password=Secret(urllib.parse.unquote(parts.password)) if parts.password else None,
            timeout=timeout,
        )


class Mailer(Protocol):
    """What senders of mail need: hand one message to the mail system."""

    async def send(self, message: Message, *, kind: str) -> None: ...


class SmtpMailer:
    """Sends through an SMTP server; idle connections are reused across threads."""

    def __init__(self, config: SmtpConfig, max_idle: int = 4) -> None:
        self.config = config
        self._idle: list[smtplib.SMTP] = []
        self._lock = threading.Lock()
        self._max_idle = max_idle

    async def send(self, message: Message, *, kind: str) -> None:
        """Send ``message`` (its To/Cc are the recipients); raises ``MailError``."""
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self.send_sync, message)
        except PermanentMailError:
            SENT.labels(kind, "refused").inc()
            raise
        except MailError:
            SENT.labels(kind, "failed").inc()
            raise
        SENT.labels(kind, "sent").inc()
        SEND_SECONDS.labels(kind).observe(time.perf_counter() - started)

    def send_sync(self, message: Message) -> None:
        """The blocking send, for threads and synchronous callers."""
        conn = self._take()
        try:
            try:
                conn.send_message(message)
            except smtplib.SMTPServerDisconnected:
                # An idle connection the server closed: one fresh attempt.
                _quietly_close(conn)
                conn = self._open()
                conn.send_message(message)
        except smtplib.SMTPResponseException as exc:
            _quietly_close(conn)
            cls = PermanentMailError if 500 <= exc.smtp_code < 600 else MailError
            raise cls(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
        except smtplib.SMTPRecipientsRefused as exc:
            self._give_back(conn)
            raise PermanentMailError(f"recipients refused: {sorted(exc.recipients)}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            _quietly_close(conn)
            raise MailError(f"SMTP send failed: {exc!r}") from exc
        self._give_back(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _quietly_close(conn)

    def _take(self) -> smtplib.SMTP:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            return self._open()
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(
                f"cannot connect to SMTP {self.config.host}:{self.config.port}: {exc!r}"
            ) from exc

    def _give_back(self, conn: smtplib.SMTP) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        _quietly_close(conn)

    def _open(self) -> smtplib.SMTP:
        c = self.config
        conn: smtplib.SMTP
        if c.use_tls:
            conn = smtplib.SMTP_SSL(
                c.host, c.port, timeout=c.timeout, context=ssl.create_default_context()
            )
        else:
            conn = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
            if c.starttls:
                conn.starttls(context=ssl.create_default_context())
        if c.username and c.password is not None:
            conn.login(c.username, c.password.get())
        return conn


def _quietly_close(conn: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError, smtplib.SMTPException):
        conn.quit()
    with contextlib.suppress(OSError):
        conn.close()
