"""The deadline step: a handler call that runs too long is cancelled and fails."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from streams.errors import DeadlineExceeded


async def within(deadline: float | None, call: Awaitable[None]) -> None:
    """Await ``call``; cancel it and raise ``DeadlineExceeded`` after ``deadline`` s."""
    if deadline is None:
        await call
        return
    try:
        await asyncio.wait_for(call, deadline)
    except TimeoutError as exc:
        raise DeadlineExceeded(deadline) from exc
