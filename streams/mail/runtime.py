"""What mail-sending jobs share in one worker process: a database pool and a mailer.

Job handlers receive no worker runtime, so they take these from here: opened on first
use from ``get_settings()`` (read once), one per process and event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from streams.db.pool import async_pool
from streams.mail.smtp import SmtpConfig, SmtpMailer
from streams.settings import Settings, get_settings


@dataclass
class MailRuntime:
    settings: Settings
    pool: AsyncConnectionPool
    mailer: SmtpMailer

    @property
    def sender(self) -> str:
        return self.settings.smtp_sender


_runtime: MailRuntime | None = None
_lock: asyncio.Lock | None = None
_loop: Any = None


async def mail_runtime() -> MailRuntime:
    """The process's pool and mailer, opened on first use."""
    global _runtime, _lock, _loop
    loop = asyncio.get_running_loop()
    if _loop is not loop:  # a new event loop (tests, restarts): the old pool is unusable
        _runtime, _lock, _loop = None, asyncio.Lock(), loop
    assert _lock is not None
    async with _lock:
        if _runtime is None:
            settings = get_settings()
            config = SmtpConfig.from_url(settings.smtp_url.get(), timeout=settings.smtp_timeout)
            pool = await async_pool(settings, max_size=4)
            _runtime = MailRuntime(settings, pool, SmtpMailer(config))
    return _runtime
