"""An incremental HTTP/1.1 response reader for the lean webhook sender.

``ResponseReader.feed`` takes the bytes as they arrive, in any split, and says when
one response is complete: its status, and whether the connection may carry another
request. Bodies are counted and dropped, never kept: a webhook target's answer is
its status code. At most ``max_body`` bytes are read; beyond that the response is
complete at once and the connection is not reused (closing costs less than reading
a large body nobody looks at).
"""

from __future__ import annotations

MAX_HEAD = 64 * 1024  # status line + headers; aiohttp's own limits are in this range


class BadResponse(Exception):
    """The bytes are not an HTTP/1.x response this reader understands."""


# Where the reader is (plain ints: this runs for every response).
HEAD = 0
LENGTH = 1  # Content-Length body
CHUNK_SIZE = 2
CHUNK_DATA = 3
CHUNK_END = 4  # the CRLF after a chunk's data
TRAILERS = 5
CLOSE = 6  # no length: the body ends when the server closes
DONE = 7


class ResponseReader:
    """Reads one response; ``done`` once it is complete (see the module docstring)."""

    __slots__ = ("_body", "_buf", "_left", "_max", "_mode", "done", "keep_alive", "status")

    def __init__(self, max_body: int) -> None:
        self.status = 0
        self.keep_alive = False
        self.done = False
        self._buf = b""
        self._mode = HEAD
        self._left = 0  # bytes left of the current body or chunk
        self._body = 0  # body bytes dropped so far
        self._max = max_body

    @property
    def reads_to_close(self) -> bool:
        """The body ends at the connection's end, so the end of the connection is success."""
        return self._mode == CLOSE

    def feed(self, data: bytes) -> None:
        """Consume ``data``; sets ``done`` when the response is complete.

        Raises ``BadResponse`` on bytes that are not a response.
        """
        buf = self._buf + data if self._buf else data
        self._buf = b""
        pos = self._step(buf, 0)
        if self.done:
            if pos < len(buf):
                # Bytes after the response (nothing was asked for): the stream is
                # out of step, so the connection is not reused.
                self.keep_alive = False
            return
        if pos < len(buf):
            self._buf = buf[pos:]
            if len(self._buf) > MAX_HEAD:
                raise BadResponse("response head or chunk line too long")

    def _step(self, buf: bytes, pos: int) -> int:
        """Advance through ``buf`` from ``pos``; returns where unread bytes begin."""
        end = len(buf)
        while not self.done:
            mode = self._mode
            if mode == HEAD:
                stop = buf.find(b"\r\n\r\n", pos)
                if stop < 0:
                    return pos
                self._head(buf[pos:stop])
                pos = stop + 4
            elif mode == CLOSE:
                self._body += end - pos
                if self._body > self._max:
                    self._finish(reusable=False)
                return end
            elif mode in (LENGTH, CHUNK_DATA):
                take = min(self._left, end - pos)
                pos += take
                self._body += take
                self._left -= take
                if self._body > self._max:
                    self._finish(reusable=False)
                elif self._left:
                    return pos
                elif mode == LENGTH:
                    self._finish(reusable=True)
                else:
                    self._mode = CHUNK_END
            else:
                stop = buf.find(b"\r\n", pos)
                if stop < 0:
                    return pos
                self._line(buf[pos:stop])
                pos = stop + 2
        return pos

    def _line(self, line: bytes) -> None:
        """One CRLF-terminated line of a chunked body: a size, a chunk's end, a trailer."""
        if self._mode == CHUNK_SIZE:
            size = line.split(b";", 1)[0].strip()
            try:
                self._left = int(size, 16)
            except ValueError:
                raise BadResponse(f"bad chunk size {size[:40]!r}") from None
            if self._left < 0:
                raise BadResponse(f"bad chunk size {size[:40]!r}")
            self._mode = CHUNK_DATA if self._left else TRAILERS
        elif self._mode == CHUNK_END:
            if line:
                raise BadResponse("chunk data longer than its size")
            self._mode = CHUNK_SIZE
        elif not line:  # the empty line after the trailers
            self._finish(reusable=True)

    def _head(self, head: bytes) -> None:
        """The status line and headers: decide how the body ends."""
        stop = head.find(b"\r\n")
        first = head if stop < 0 else head[:stop]
        parts = first.split(b" ", 2)
        version = parts[0]
        if len(parts) < 2 or version[:7] != b"HTTP/1." or not _is_status(parts[1]):
            raise BadResponse(f"bad status line {first[:80]!r}")
        status = int(parts[1])
        if 100 <= status < 200 and status != 101:
            return  # an interim answer (100 Continue): the real one follows
        # Only three headers matter; finding them in the lowered head costs less than
        # splitting every line (the answers are a handful of short headers).
        lower = head.lower()
        length = _length(lower)
        chunked = _value(lower, b"\r\ntransfer-encoding:").endswith(b"chunked")
        tokens = {t.strip() for t in _value(lower, b"\r\nconnection:").split(b",")}
        self.status = status
        if version == b"HTTP/1.1":
            self.keep_alive = b"close" not in tokens
        else:
            self.keep_alive = b"keep-alive" in tokens
        self._body_mode(status, length, chunked)

    def _body_mode(self, status: int, length: int | None, chunked: bool) -> None:
        if status in (204, 304) or status == 101:
            # 101: a protocol switch nobody asked for; the connection is not HTTP any more.
            self._finish(reusable=status != 101)
        elif chunked:
            self._mode = CHUNK_SIZE
        elif length is not None:
            if length > self._max:
                self._finish(reusable=False)
            elif length == 0:
                self._finish(reusable=True)
            else:
                self._left = length
                self._mode = LENGTH
        else:
            self.keep_alive = False
            self._mode = CLOSE

    def _finish(self, *, reusable: bool) -> None:
        self.done = True
        self._mode = DONE
        self.keep_alive = self.keep_alive and reusable

    def close_reached(self) -> bool:
        """The connection ended: True when that completes the response (read to close)."""
        if self._mode == CLOSE:
            self._finish(reusable=False)
        return self.done


def _is_status(code: bytes) -> bool:
    return len(code) == 3 and code.isdigit()


def _value(lower: bytes, name: bytes, start: int = 0) -> bytes:
    """The stripped value of the header ``name`` (with its CRLF and colon), or b""."""
    at = lower.find(name, start)
    if at < 0:
        return b""
    at += len(name)
    end = lower.find(b"\r\n", at)
    return (lower[at:] if end < 0 else lower[at:end]).strip()


def _length(lower: bytes) -> int | None:
    """The Content-Length, None without one; two different ones are refused."""
    name = b"\r\ncontent-length:"
    at = lower.find(name)
    if at < 0:
        return None
    text = _value(lower, name, at)
    if not text.isdigit():
        raise BadResponse(f"bad Content-Length {text[:40]!r}")
    again = lower.find(name, at + 1)
    if again >= 0 and _value(lower, name, again) != text:
        raise BadResponse("conflicting Content-Length headers")
    return int(text)
