"""LeanSender against raw asyncio servers playing what aiohttp servers will not.

A kept-alive connection closed by the server as the next request arrives, a body that
ends with the connection, garbage instead of a response, a server closing while idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from streams.webhooks.http import HttpResult
from streams.webhooks.http11 import LeanSender
from streams.webhooks.ssrf import SsrfGuard

LOOPBACK = SsrfGuard(allow=["127.0.0.0/8"])
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

# What the server does with the n-th request (1-based) of a connection: bytes to
# answer with, or None to close the connection without answering.
Script = Callable[[int], bytes | None]


@dataclass
class RawServer:
    port: int = 0
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    open: set[asyncio.StreamWriter] = field(default_factory=set)


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


@asynccontextmanager
async def raw_server(script: Script, close_after: bool = False) -> AsyncIterator[RawServer]:
    state = RawServer()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        state.open.add(writer)
        n = 0
        try:
            while True:
                request = await _read_request(reader)
                state.requests.append(request)
                n += 1
                answer = script(n)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()
        state.open.discard(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for writer in list(state.open):
            writer.close()
        async with asyncio.timeout(5):  # the handlers end before the loop does
            while state.open:
                await asyncio.sleep(0.01)


async def post_all(
    script: Script, count: int, close_after: bool = False
) -> tuple[list[HttpResult], RawServer]:
    sender = LeanSender(LOOPBACK)
    async with raw_server(script, close_after) as server:
        url = f"http://127.0.0.1:{server.port}/hook"
        results = [await sender.post(url, b'{"a": 1}', {}, 5.0) for _ in range(count)]
        await sender.close()
    return results, server


def test_a_kept_connection_closed_as_the_request_arrives_is_retried_once_on_a_new_one() -> None:
    # The second request on every connection meets a close: a stale pooled connection.
    results, server = asyncio.run(post_all(lambda n: OK if n == 1 else None, 3))
    assert [r.status for r in results] == [200, 200, 200]
    assert server.connections == 3  # one new connection per retried request
    assert len(server.requests) == 5  # each request answered once, two sent twice


def test_a_fresh_connection_closed_without_answer_is_an_error_not_a_retry() -> None:
    results, server = asyncio.run(post_all(lambda n: None, 1))
    assert results[0].status is None and not results[0].refused
    assert results[0].error == "ServerDisconnectedError: Server disconnected"
    assert len(server.requests) == 1


def test_a_partial_answer_then_close_is_an_error_not_a_retry() -> None:
    partial = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    results, server = asyncio.run(post_all(lambda n: partial, 2, close_after=True))
    assert [(r.status, r.error) for r in results] == [
        (None, "ClientPayloadError: Response payload is not completed")
    ] * 2
    assert len(server.requests) == 2  # not sent twice


def test_a_body_read_to_close_is_an_answer_and_the_connection_is_not_reused() -> None:
    async def scenario() -> tuple[list[HttpResult], int]:
        sender = LeanSender(LOOPBACK)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_request(reader)
            writer.write(b"HTTP/1.0 503 Service Unavailable\r\n\r\ntry later")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        results = [await sender.post(url, b"{}", {}, 5.0) for _ in range(2)]
        idle = sender.idle_connections
        server.close()
        await sender.close()
        return results, idle

    results, idle = asyncio.run(scenario())
    assert [r.status for r in results] == [503, 503] and idle == 0


def test_garbage_instead_of_a_response_is_an_error() -> None:
    results, _ = asyncio.run(post_all(lambda n: b"SSH-2.0-OpenSSH\r\n\r\n", 1))
    assert results[0].status is None and not results[0].refused
    assert (results[0].error or "").startswith("ClientResponseError: bad status line")


def test_a_header_with_a_line_break_is_refused_and_nothing_is_sent() -> None:
    async def scenario() -> tuple[HttpResult, RawServer]:
        sender = LeanSender(LOOPBACK)
        async with raw_server(lambda n: OK) as server:
            url = f"http://127.0.0.1:{server.port}/"
            result = await sender.post(url, b"{}", {"X-Evil": "a\r\nX-Injected: 1"}, 5.0)
            await sender.close()
        return result, server

    result, server = asyncio.run(scenario())
    assert result.refused and "malformed header" in (result.error or "")
    assert server.connections == 0


def test_a_connection_the_server_closed_while_idle_leaves_the_pool() -> None:
    async def scenario() -> tuple[list[int | None], int]:
        sender = LeanSender(LOOPBACK)
        app = web.Application()
        app.router.add_post("/", _ok)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=0.2)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        first = await sender.post(url, b"{}", {}, 5.0)
        async with asyncio.timeout(5):
            while sender.idle_connections:  # the server's keep-alive ends
                await asyncio.sleep(0.01)
        second = await sender.post(url, b"{}", {}, 5.0)
        await sender.close()
        await runner.cleanup()
        return [first.status, second.status], sender.idle_connections

    statuses, idle = asyncio.run(scenario())
    assert statuses == [200, 200] and idle == 0


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")
