"""A TCP proxy in front of the real PostgreSQL that loses one COMMIT's answer.

Armed, it watches each connection's client bytes for a transaction that ran a
statement containing ``marker`` and then its ``COMMIT`` (psycopg sends it as a simple
query). ``after``: the COMMIT reaches PostgreSQL and commits, its answer is read and
dropped, and both sockets are closed: the client sees a lost connection although the
transaction committed. ``before``: the COMMIT is dropped and the connection closed, so
PostgreSQL rolls the transaction back. Either way the client cannot tell which.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Literal

COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"
Mode = Literal["after", "before"]


class CommitProxy:
    """Listens on 127.0.0.1:<port>, forwards to ``target``; ``arm`` loses one COMMIT."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._lock = threading.Lock()
        self._armed: tuple[Mode, bytes, bytes] | None = None
        self.fired = threading.Event()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, mode: Mode, marker: bytes, on: bytes = COMMIT) -> None:
        """Lose the answer to (or the message of) the next ``on`` after ``marker``; ``on``
        is the COMMIT by default, or e.g. an autocommitted statement's own text."""
        with self._lock:
            self._armed = (mode, marker, on)
            self.fired.clear()

    def _take(self, seen: bytes, data: bytes) -> Mode | None:
        with self._lock:
            if self._armed is None:
                return None
            mode, marker, on = self._armed
            if marker not in seen or on not in data:
                return None
            self._armed = None
            return mode

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            answered = threading.Event()  # set: the server's answers are read and dropped
            dropped = threading.Event()  # an answer was dropped
            args = (client, server, answered, dropped)
            threading.Thread(target=self._upstream, args=args, daemon=True).start()
            threading.Thread(target=_downstream, args=args, daemon=True).start()

    def _upstream(
        self,
        client: socket.socket,
        server: socket.socket,
        mute: threading.Event,
        dropped: threading.Event,
    ) -> None:
        seen = b""  # client bytes since the last COMMIT
        try:
            while data := client.recv(65536):
                seen += data
                if (mode := self._take(seen, data)) is not None:
                    if mode == "after":
                        mute.set()
                        server.sendall(data)
                        dropped.wait(10)  # PostgreSQL committed and answered: drop it
                    self.fired.set()
                    return  # finally: both sockets closed
                if COMMIT in data:
                    seen = b""
                server.sendall(data)
        except OSError:
            pass
        finally:
            _close(client, server)

    def close(self) -> None:
        self._closed = True
        self.listener.close()


def _downstream(
    client: socket.socket, server: socket.socket, mute: threading.Event, dropped: threading.Event
) -> None:
    try:
        while data := server.recv(65536):
            if mute.is_set():
                dropped.set()
                continue
            client.sendall(data)
    except OSError:
        pass
    finally:
        _close(server, client)


def _close(*socks: socket.socket) -> None:
    for s in socks:
        # shutdown first: close() alone neither wakes a recv() blocked on the socket in
        # the other thread nor sends the FIN that tells PostgreSQL its client is gone.
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            s.close()
