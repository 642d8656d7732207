"""Connections of the lean HTTP/1.1 sender: an asyncio Protocol each, idle pools by origin.

A ``Conn`` carries one request at a time: ``send`` writes the request and returns a
future that the protocol callbacks resolve with the ``ResponseReader`` once the
response is complete, or fail with ``Disconnected``, ``BadResponse`` or
``TimeoutError``. No StreamReader, no task per connection: bytes go from
``data_received`` straight into the parser.
"""

from __future__ import annotations

import asyncio
from typing import cast

from streams.webhooks.http11_response import BadResponse, ResponseReader

PoolKey = tuple[str, str, int]  # scheme, host, port
KEEPALIVE = 15.0  # seconds an idle connection is kept (aiohttp's default)


class Disconnected(Exception):
    """The connection ended before the response was complete."""

    def __init__(self, answered: bool, cause: BaseException | None) -> None:
        self.answered = answered  # some of the response had arrived
        if not answered and cause is None:
            text = "ServerDisconnectedError: Server disconnected"
        elif cause is None:
            text = "ClientPayloadError: Response payload is not completed"
        else:
            text = f"ClientOSError: {cause}"
        super().__init__(text)


class Conn(asyncio.Protocol):
    """One HTTP/1.1 connection; see the module docstring."""

    def __init__(self, pool: Pool, key: PoolKey, max_body: int) -> None:
        self.key = key
        self.closed = False
        self.idle_since = 0.0
        self._pool = pool
        self._max_body = max_body
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[ResponseReader] | None = None
        self._reader = ResponseReader(max_body)
        self._answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def send(self, loop: asyncio.AbstractEventLoop, data: bytes) -> asyncio.Future[ResponseReader]:
        """Write one request; the future resolves when its response is complete."""
        waiter: asyncio.Future[ResponseReader] = loop.create_future()
        self._reader = ResponseReader(self._max_body)
        self._answered = False
        if self.closed or self._transport is None:
            waiter.set_exception(Disconnected(False, None))
            return waiter
        self._waiter = waiter
        self._transport.write(data)
        return waiter

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # Bytes nobody asked for: the stream is out of step, it cannot be reused.
            self.abort()
            return
        self._answered = True
        reader = self._reader
        try:
            reader.feed(data)
        except BadResponse as exc:
            self._waiter = None
            waiter.set_exception(exc)
            self.abort()
            return
        if reader.done:
            self._waiter = None
            waiter.set_result(reader)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is None:
            self._pool.forget(self)
        elif not waiter.done():
            if self._reader.close_reached():
                waiter.set_result(self._reader)
            else:
                waiter.set_exception(Disconnected(self._answered, exc))

    def expire(self) -> None:
        """The request's deadline passed: fail it and close the connection."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError())
        self.abort()

    def abort(self) -> None:
        """Close at once, dropping anything unsent: the connection is not reusable."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()


class Pool:
    """Idle connections by origin, newest last; at most ``limit`` idle in all."""

    def __init__(self, limit: int, max_body: int) -> None:
        self._limit = limit
        self._max_body = max_body
        self._idle: dict[PoolKey, list[Conn]] = {}
        self._count = 0
        self._next_sweep = 0.0

    @property
    def idle_count(self) -> int:
        return self._count

    def new_conn(self, key: PoolKey) -> Conn:
        return Conn(self, key, self._max_body)

    def take(self, key: PoolKey, now: float) -> Conn | None:
        """The most recently used idle connection to ``key`` that is still open."""
        if now >= self._next_sweep:
            self._sweep(now)
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            self._count -= 1
            if not conn.closed and now - conn.idle_since < KEEPALIVE:
                return conn
            conn.abort()
        return None

    def put(self, conn: Conn, now: float) -> None:
        if self._count >= self._limit:
            conn.abort()
            return
        conn.idle_since = now
        self._idle.setdefault(conn.key, []).append(conn)
        self._count += 1

    def forget(self, conn: Conn) -> None:
        """An idle connection was closed (by the server): it leaves its pool."""
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
            self._count -= 1

    def _sweep(self, now: float) -> None:
        # Idle connections to origins no longer posted to would otherwise stay open.
        self._next_sweep = now + KEEPALIVE
        for key, idle in list(self._idle.items()):
            keep = [c for c in idle if not c.closed and now - c.idle_since < KEEPALIVE]
            for conn in idle:
                if conn not in keep:
                    conn.abort()
            self._count -= len(idle) - len(keep)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    def close_all(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()
        self._count = 0
