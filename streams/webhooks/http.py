"""The HTTP sender seam: one POST, one result, never an exception.

``HttpSender`` is the Protocol the delivery logic talks to (unit tests use a fake).
Two real ones: ``streams.webhooks.http11.LeanSender``, the default (a lean HTTP/1.1
client: about a third of aiohttp's CPU per POST), and ``AiohttpSender``, on the
aiohttp that Faust already brings, with one keep-alive connection pool per worker
and the SSRF guard in its resolver (literal addresses are left to
``SsrfGuard.check_url``, which the deliverer runs first).
Redirects are not followed: a redirect could point at an internal address.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from streams.webhooks.ssrf import GuardedResolver, SsrfGuard, refused_in

USER_AGENT = "streams-webhooks/1"
# Enough of a response body to keep the connection reusable; the rest is not ours.
MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class HttpResult:
    """What came back: a status code, or an error when no response did."""

    status: int | None
    duration: float
    error: str | None = None
    refused: bool = False  # the SSRF guard refused the connection


class HttpSender(Protocol):
    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> HttpResult: ...

    async def close(self) -> None: ...


class AiohttpSender:
    """POSTs with aiohttp; the session is opened on first use, inside the running loop."""

    def __init__(self, guard: SsrfGuard, *, limit: int = 256) -> None:
        self._guard = guard
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._timeout: aiohttp.ClientTimeout | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limit,
            resolver=GuardedResolver(self._guard),
            ttl_dns_cache=10,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT},
            # Never carry one target's cookies to another (nor spend time on them).
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self._session

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> HttpResult:
        session = self._session or self._open()
        if self._timeout is None or self._timeout.total != timeout:
            self._timeout = aiohttp.ClientTimeout(total=timeout)
        started = time.perf_counter()
        try:
            async with session.post(
                url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                await resp.content.read(MAX_RESPONSE_BYTES)
                return HttpResult(resp.status, time.perf_counter() - started)
        except (aiohttp.InvalidURL, ValueError) as exc:
            # A URL the client cannot use fails the same way at every attempt: refused,
            # not retried as a connection error.
            error = f"malformed URL: {type(exc).__name__}: {exc}"
            return HttpResult(None, time.perf_counter() - started, error, refused=True)
        except TimeoutError:
            return HttpResult(None, time.perf_counter() - started, f"timeout after {timeout}s")
        except (aiohttp.ClientError, OSError) as exc:
            refused = refused_in(exc)
            error = str(refused) if refused else f"{type(exc).__name__}: {exc}"
            return HttpResult(None, time.perf_counter() - started, error, refused is not None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await asyncio.sleep(0)
