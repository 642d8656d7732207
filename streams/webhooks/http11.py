"""A lean HTTP/1.1 ``HttpSender``: one asyncio Protocol per connection, keep-alive pools.

aiohttp's client builds a request object, a response object, a stream reader, header
multidicts and several timers per POST: the largest single cost of the webhook
worker. A webhook POST needs little of that, so ``LeanSender`` writes each request
as one pre-built buffer and reads the answer with an incremental parser
(``http11_response``) that keeps only the status.

- One idle pool per (scheme, host, port), most recently used first; idle connections
  are dropped after ``KEEPALIVE`` seconds, when the server closes them, or when more
  than ``limit`` are idle. At most ``limit`` requests are in flight (aiohttp's limit).
- A pooled connection that the server closed while idle is retried once, on a fresh
  connection, only when nothing of the response arrived.
- The timeout covers waiting for a slot, connecting, writing and the whole response;
  on timeout the connection is closed.
- SSRF: the host is resolved at connect time, every address is checked with
  ``SsrfGuard.check_address`` and the connection goes to a checked address, so a name
  that re-resolves to an internal address (DNS rebinding) is refused.
- https uses a verified default SSL context, with the URL's host as server name.
- Redirects are not followed; nothing raises: every failure is an ``HttpResult``
  with the error texts ``AiohttpSender`` gives.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

import yarl
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver

from streams.webhooks.http import MAX_RESPONSE_BYTES, USER_AGENT, HttpResult
from streams.webhooks.http11_pool import Conn, Disconnected, Pool, PoolKey
from streams.webhooks.http11_response import BadResponse
from streams.webhooks.ssrf import SsrfGuard, SsrfRefused

log = logging.getLogger(__name__)

DNS_SECONDS = 10.0  # as AiohttpSender's ttl_dns_cache
MAX_TARGETS = 10_000  # parsed URLs kept; webhook URLs repeat
# Framing is ours: a caller's value for these would contradict the bytes we send.
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_AGENT = f"User-Agent: {USER_AGENT}\r\n"


class _Malformed(ValueError):
    """A request that cannot be sent as asked; ``str`` is the reported error (refused)."""


class _Failed(Exception):
    """A request that got no usable response; ``str`` is the reported error."""


@dataclass(frozen=True, slots=True)
class _Target:
    key: PoolKey
    host: str  # as connected to and checked: IDNA-encoded, IPv6 without brackets
    port: int
    tls: bool
    head: bytes  # request line and Host header


class LeanSender:
    """POSTs over pooled HTTP/1.1 connections; see the module docstring."""

    def __init__(
        self,
        guard: SsrfGuard,
        *,
        limit: int = 256,
        ssl_context: ssl.SSLContext | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._guard = guard
        self._ssl = ssl_context
        self._resolver = resolver
        self._slots = asyncio.Semaphore(limit)
        self._pool = Pool(limit, MAX_RESPONSE_BYTES)
        self._targets: dict[str, _Target] = {}
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}

    @property
    def idle_connections(self) -> int:
        """How many connections wait in the pools (for tests and metrics)."""
        return self._pool.idle_count

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> HttpResult:
        started = time.perf_counter()
        try:
            target = self._targets.get(url) or self._parse(url)
            data = _request(target.head, body, headers)
        except _Malformed as exc:
            return HttpResult(None, time.perf_counter() - started, str(exc), refused=True)
        loop = asyncio.get_running_loop()
        try:
            status = await self._send(loop, target, data, loop.time() + timeout)
        except TimeoutError:
            return HttpResult(None, time.perf_counter() - started, f"timeout after {timeout}s")
        except SsrfRefused as exc:
            return HttpResult(None, time.perf_counter() - started, str(exc), refused=True)
        except _Failed as exc:
            return HttpResult(None, time.perf_counter() - started, str(exc))
        except Exception as exc:  # the contract: a result, never an exception
            log.warning("webhooks.http.unexpected_error", extra={"url": url}, exc_info=True)
            error = f"{type(exc).__name__}: {exc}"
            return HttpResult(None, time.perf_counter() - started, error)
        return HttpResult(status, time.perf_counter() - started)

    async def close(self) -> None:
        self._pool.close_all()
        await asyncio.sleep(0)

    def _parse(self, url: str) -> _Target:
        try:
            parsed = yarl.URL(url)
            port = parsed.port
        except ValueError as exc:
            raise _Malformed(f"malformed URL: InvalidUrlClientError: {url}") from exc
        if parsed.scheme not in ("http", "https"):
            # aiohttp calls this a client error (retried); it is never deliverable.
            raise _Malformed(f"malformed URL: NonHttpUrlClientError: {url}")
        host = parsed.raw_host
        if not host or port is None:
            raise _Malformed(f"malformed URL: InvalidUrlClientError: {url}")
        tls = parsed.scheme == "https"
        line = f"POST {parsed.raw_path_qs} HTTP/1.1\r\nHost: {parsed.host_port_subcomponent}\r\n"
        target = _Target((parsed.scheme, host, port), host, port, tls, line.encode("ascii"))
        if len(self._targets) >= MAX_TARGETS:
            self._targets.clear()
        self._targets[url] = target
        return target

    async def _send(
        self, loop: asyncio.AbstractEventLoop, target: _Target, data: bytes, deadline: float
    ) -> int:
        if self._slots.locked():
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        else:
            await self._slots.acquire()
        try:
            conn = self._pool.take(target.key, loop.time())
            if conn is not None:
                try:
                    return await self._exchange(loop, conn, data, deadline)
                except Disconnected as exc:
                    if exc.answered:
                        raise _Failed(str(exc)) from None
                    # Closed by the server while idle, before it read this request.
            conn = await self._connect(loop, target, deadline)
            try:
                return await self._exchange(loop, conn, data, deadline)
            except Disconnected as exc:
                raise _Failed(str(exc)) from None
        finally:
            self._slots.release()

    async def _exchange(
        self, loop: asyncio.AbstractEventLoop, conn: Conn, data: bytes, deadline: float
    ) -> int:
        waiter = conn.send(loop, data)
        timer = loop.call_at(deadline, conn.expire)
        try:
            reader = await waiter
        except BadResponse as exc:
            raise _Failed(f"ClientResponseError: {exc}") from None
        except BaseException:
            conn.abort()  # cancelled or failed mid-exchange: the stream is out of step
            raise
        finally:
            timer.cancel()
        if reader.keep_alive and not conn.closed:
            self._pool.put(conn, loop.time())
        else:
            conn.abort()
        return reader.status

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, target: _Target, deadline: float
    ) -> Conn:
        host, port = target.host, target.port
        context = (self._ssl or _default_context()) if target.tls else None
        error: OSError | None = None
        async with asyncio.timeout_at(deadline):
            for address in await self._addresses(host, port):
                try:
                    _, conn = await loop.create_connection(
                        lambda: self._pool.new_conn(target.key),
                        address,
                        port,
                        ssl=context,
                        server_hostname=host if context else None,
                    )
                    return conn
                except ssl.SSLCertVerificationError as exc:
                    raise _Failed(
                        f"ClientConnectorCertificateError: Cannot connect to host {host}:{port}"
                        f" ssl:True [{type(exc).__name__}: {exc.args}]"
                    ) from None
                except OSError as exc:
                    error = exc
        assert error is not None  # _addresses returns at least one address
        raise _Failed(f"ClientConnectorError: {_cannot_connect(host, port, error)}")

    async def _addresses(self, host: str, port: int) -> list[str]:
        """The host's addresses, each checked by the guard (a literal is its own)."""
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
            addresses = [host]
        except OSError:
            addresses = await self._resolve(host, port)
        for address in addresses:
            self._guard.check_address(host, address)
        return addresses

    async def _resolve(self, host: str, port: int) -> list[str]:
        now = time.monotonic()
        hit = self._dns.get((host, port))
        if hit is not None and hit[0] > now:
            return hit[1]
        resolver = self._resolver or ThreadedResolver()
        try:
            results = await resolver.resolve(host, port, socket.AF_UNSPEC)
        except OSError as exc:
            raise _Failed(f"ClientConnectorDNSError: {_cannot_connect(host, port, exc)}") from None
        addresses = [r["host"] for r in results]
        if not addresses:
            raise _Failed(f"ClientConnectorDNSError: {host} resolves to no address")
        if len(self._dns) >= MAX_TARGETS:
            self._dns.clear()
        self._dns[(host, port)] = (now + DNS_SECONDS, addresses)
        return addresses


def _request(head: bytes, body: bytes, headers: Mapping[str, str]) -> bytes:
    """The whole request as one buffer: one ``write``, usually one TCP segment."""
    names = set(map(str.lower, headers))
    if names.isdisjoint(_OWN_HEADERS):
        lines = [f"{name}: {value}\r\n" for name, value in headers.items()]
    else:
        lines = [f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() not in _OWN_HEADERS]
    if "user-agent" not in names:
        lines.append(_AGENT)
    lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    block = "".join(lines)
    # A CR or LF inside a name or value would end the header early: header injection.
    if block.count("\n") != len(lines) + 1 or block.count("\r") != len(lines) + 1:
        raise _Malformed("malformed header: CR or LF in a header name or value")
    return b"".join((head, block.encode("utf-8"), body))


def _cannot_connect(host: str, port: int, exc: OSError) -> str:
    reason = exc.strerror if exc.strerror is not None else str(exc)
    return f"Cannot connect to host {host}:{port} ssl:default [{reason}]"


_CONTEXT: list[ssl.SSLContext] = []


def _default_context() -> ssl.SSLContext:
    """One verified context per process: creating one loads the CA store (milliseconds)."""
    if not _CONTEXT:
        _CONTEXT.append(ssl.create_default_context())
    return _CONTEXT[0]
