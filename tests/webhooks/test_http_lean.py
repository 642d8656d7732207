"""LeanSender against real servers on loopback: reuse, framing, timeouts, SSRF, TLS.

Most servers are real aiohttp applications; a few raw asyncio servers play the
misbehaviours aiohttp will not (closing a kept-alive connection as a request
arrives, bodies read to close, garbage).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from streams.webhooks.http import AiohttpSender, HttpResult, HttpSender
from streams.webhooks.http11 import LeanSender
from streams.webhooks.ssrf import SsrfGuard

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOOPBACK = SsrfGuard(allow=["127.0.0.0/8"])


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass
class Server:
    port: int
    scheme: str = "http"
    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    peers: set[int] = field(default_factory=set)  # client ports: one per connection

    def url(self, path: str = "/hook") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"


@asynccontextmanager
async def serve(
    answer: Handler | None = None, *, tls: ssl.SSLContext | None = None, keepalive: float = 75.0
) -> AsyncIterator[Server]:
    """An aiohttp server on a free loopback port that records what it receives."""
    server = Server(0, "https" if tls else "http")

    async def handle(request: web.Request) -> web.StreamResponse:
        server.bodies.append(await request.read())
        server.headers.append(dict(request.headers))
        peer = request.transport.get_extra_info("peername") if request.transport else None
        server.peers.add(peer[1] if peer else 0)
        return await answer(request) if answer else web.Response(text="ok")

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=keepalive)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    server.port = runner.addresses[0][1]
    try:
        yield server
    finally:
        await runner.cleanup()


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def test_many_posts_share_few_keep_alive_connections() -> None:
    async def scenario() -> tuple[list[HttpResult], Server, int]:
        sender = LeanSender(LOOPBACK)
        async with serve() as server:
            posts = [
                sender.post(server.url(f"/h{i}"), b'{"n": %d}' % i, {"X-Id": str(i)}, 5.0)
                for i in range(200)
            ]
            results: list[HttpResult] = []
            for start in range(0, 200, 20):  # 20 in flight at a time
                results += await asyncio.gather(*posts[start : start + 20])
            idle = sender.idle_connections
            await sender.close()
        return results, server, idle

    results, server, idle = run(scenario())
    assert [r.status for r in results] == [200] * 200
    assert all(r.error is None and r.duration > 0 for r in results)
    assert sorted(server.bodies) == sorted(b'{"n": %d}' % i for i in range(200))
    assert len(server.peers) <= 20 and idle == len(server.peers)
    first = server.headers[0]
    assert first["User-Agent"] == "streams-webhooks/1"
    assert first["Content-Length"] == str(len(server.bodies[0]))
    assert {h["X-Id"] for h in server.headers} == {str(i) for i in range(200)}


def test_chunked_and_content_length_answers_keep_the_connection() -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=202)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b"accepted", b", ", b"thanks"):
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def scenario() -> tuple[list[int | None], int]:
        sender = LeanSender(LOOPBACK)
        async with serve(chunked) as chunky, serve() as plain:
            statuses = []
            for url in (chunky.url(), plain.url(), chunky.url(), plain.url()):
                statuses.append((await sender.post(url, b"{}", {}, 5.0)).status)
            await sender.close()
        return statuses, len(chunky.peers) + len(plain.peers)

    statuses, connections = run(scenario())
    assert statuses == [202, 200, 202, 200]
    assert connections == 2


def test_a_server_closing_after_each_answer_gets_a_new_connection_each_time() -> None:
    async def closing(request: web.Request) -> web.StreamResponse:
        resp = web.Response(status=201, text="bye")
        resp.force_close()
        return resp

    async def scenario() -> tuple[list[int | None], Server, int]:
        sender = LeanSender(LOOPBACK)
        async with serve(closing) as server:
            statuses = [(await sender.post(server.url(), b"{}", {}, 5.0)).status for _ in range(5)]
            idle = sender.idle_connections
            await sender.close()
        return statuses, server, idle

    statuses, server, idle = run(scenario())
    assert statuses == [201] * 5
    assert len(server.peers) == 5 and idle == 0


@pytest.mark.parametrize("sender_class", [LeanSender, AiohttpSender])
def test_a_slow_server_hits_the_timeout_and_loses_the_connection(
    sender_class: Callable[[SsrfGuard], HttpSender],
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        if request.path == "/slow":
            await asyncio.sleep(3)
        return web.Response(text="late")

    async def scenario() -> tuple[HttpResult, HttpResult, Server]:
        sender = sender_class(LOOPBACK)
        async with serve(slow) as server:
            late = await sender.post(server.url("/slow"), b"{}", {}, 0.3)
            fast = await sender.post(server.url("/fast"), b"{}", {}, 5.0)
            await sender.close()
        return late, fast, server

    late, fast, server = run(scenario())
    assert (late.status, late.error, late.refused) == (None, "timeout after 0.3s", False)
    assert 0.3 <= late.duration < 2.0
    assert fast.status == 200
    assert len(server.peers) == 2  # the timed-out connection was not reused


def test_errors_read_as_aiohttp_s() -> None:
    """Refused port, malformed URL, SSRF refusal: the same results from both senders."""

    async def results(sender: HttpSender, port: int) -> list[tuple[Any, ...]]:
        out = []
        for url, guard_note in (
            (f"http://127.0.0.1:{port}/", "nobody listens"),
            ("http://127.0.0.1:99999/", "bad port"),
            ("http:///nohost", "no host"),
            ("http://[::1/", "bad host"),
        ):
            r = await sender.post(url, b"{}", {}, 2.0)
            out.append((guard_note, r.status, r.error, r.refused))
        await sender.close()
        return out

    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        lean = run(results(LeanSender(LOOPBACK), port))
        ours = run(results(AiohttpSender(LOOPBACK), port))
    assert lean == ours
    assert lean[0][2] == (
        f"ClientConnectorError: Cannot connect to host 127.0.0.1:{port} ssl:default "
        f"[Connect call failed ('127.0.0.1', {port})]"
    )
    assert [r[3] for r in lean] == [False, True, True, True]


class Names(AbstractResolver):
    """A DNS answering from a table: names for loopback servers, a rebinding name."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=0)
            for a in self.table[host]
        ]

    async def close(self) -> None:
        return None


def test_internal_addresses_are_refused_at_connect_time() -> None:
    names = Names(
        {"rebind.example.com": ["93.184.215.14", "127.0.0.1"], "hooks.test": ["127.0.0.1"]}
    )

    async def scenario() -> tuple[list[HttpResult], Server]:
        async with serve() as server:
            strict = LeanSender(SsrfGuard(), resolver=names)
            refused = [
                await strict.post(server.url(), b"{}", {}, 2.0),  # a loopback literal
                await strict.post(f"http://rebind.example.com:{server.port}/", b"{}", {}, 2.0),
            ]
            allowed = LeanSender(SsrfGuard(allow=["hooks.test"]), resolver=names)
            ok = await allowed.post(f"http://hooks.test:{server.port}/", b"{}", {}, 2.0)
            for sender in (strict, allowed):
                await sender.close()
        return [*refused, ok], server

    (literal, rebound, ok), server = run(scenario())
    assert literal.refused and literal.error == "127.0.0.1 is a loopback address; not allow-listed"
    assert rebound.refused and rebound.status is None
    assert (
        rebound.error
        == "rebind.example.com resolves to 127.0.0.1, a loopback address; not allow-listed"
    )
    assert ok.status == 200 and server.headers[0]["Host"] == f"hooks.test:{server.port}"
    assert len(server.bodies) == 1  # nothing reached the server from the refused ones


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made by openssl."""
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    args = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"]
    names = "subjectAltName=IP:127.0.0.1,DNS:localhost"
    subprocess.run(
        ["openssl", *args, "-keyout", str(key), "-out", str(cert), "-addext", names],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_verifies_the_server_certificate(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def scenario() -> tuple[list[HttpResult], HttpResult, Server]:
        async with serve(tls=server_side) as server:
            sender = LeanSender(LOOPBACK, ssl_context=trusting)
            trusted = [await sender.post(server.url(), b"{}", {}, 5.0) for _ in range(3)]
            default = LeanSender(LOOPBACK)
            untrusted = await default.post(server.url(), b"{}", {}, 5.0)
            for s in (sender, default):
                await s.close()
        return trusted, untrusted, server

    trusted, untrusted, server = run(scenario())
    assert [r.status for r in trusted] == [200] * 3
    assert len(server.peers) == 1  # one TLS connection, kept alive
    assert untrusted.status is None and not untrusted.refused
    assert "CERTIFICATE_VERIFY_FAILED" in (untrusted.error or "")
    assert len(server.bodies) == 3  # the untrusted client sent nothing


@pytest.mark.parametrize("chunked", [False, True])
def test_a_large_answer_is_not_read_and_its_connection_is_closed(chunked: bool) -> None:
    big = b"x" * (1024 * 1024)

    async def large(request: web.Request) -> web.StreamResponse:
        if request.path == "/small":
            return web.Response(text="ok")
        resp = web.StreamResponse(status=200)
        if chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = len(big)
        await resp.prepare(request)
        await resp.write(big)
        await resp.write_eof()
        return resp

    async def scenario() -> tuple[list[int | None], Server]:
        sender = LeanSender(LOOPBACK)
        async with serve(large) as server:
            statuses = []
            for path in ("/small", "/large", "/small", "/small"):
                statuses.append((await sender.post(server.url(path), b"{}", {}, 5.0)).status)
            await sender.close()
        return statuses, server

    statuses, server = run(scenario())
    assert statuses == [200] * 4
    assert len(server.peers) == 2  # the large answer's connection was given up
