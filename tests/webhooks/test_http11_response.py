"""The lean sender's response reader: any split of the bytes gives the same answer."""

from __future__ import annotations

import pytest

from streams.webhooks.http11_response import BadResponse, ResponseReader

OK_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
CHUNKED = (
    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
)


def read(data: bytes, split: int, max_body: int = 1024) -> ResponseReader:
    reader = ResponseReader(max_body)
    for i in range(0, len(data), split):
        reader.feed(data[i : i + split])
        if reader.done:
            break
    return reader


@pytest.mark.parametrize("split", [1, 2, 3, 7, 10_000])
@pytest.mark.parametrize(("data", "status"), [(OK_LENGTH, 200), (CHUNKED, 201)])
def test_any_split_gives_the_status_and_a_reusable_connection(
    data: bytes, status: int, split: int
) -> None:
    reader = read(data, split)
    assert (reader.done, reader.status, reader.keep_alive) == (True, status, True)


def test_interim_100_continue_is_skipped() -> None:
    reader = read(b"HTTP/1.1 100 Continue\r\n\r\n" + OK_LENGTH, 5)
    assert (reader.done, reader.status) == (True, 200)


@pytest.mark.parametrize(
    ("data", "keep_alive"),
    [
        (b"HTTP/1.1 204 No Content\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", True),
        (OK_LENGTH + b"HTTP/1.1 200 OK\r\n", False),  # bytes nobody asked for
    ],
)
def test_connection_reuse_follows_the_server(data: bytes, keep_alive: bool) -> None:
    reader = read(data, 10_000)
    assert reader.done and reader.keep_alive is keep_alive


def test_a_body_read_to_close_ends_with_the_connection() -> None:
    reader = read(b"HTTP/1.1 502 Bad Gateway\r\n\r\nsome text", 4)
    assert not reader.done and reader.reads_to_close
    assert reader.close_reached() and reader.status == 502 and not reader.keep_alive


def test_an_incomplete_body_is_not_complete_at_close() -> None:
    reader = read(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 100)
    assert not reader.close_reached()


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n",  # known to be too large
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n" + b"x" * 4096,
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 4096,
    ],
)
def test_a_body_over_the_limit_completes_at_once_without_reuse(data: bytes) -> None:
    reader = read(data, 1000, max_body=1024)
    assert (reader.done, reader.status, reader.keep_alive) == (True, 200, False)


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n",
    ],
)
def test_bytes_that_are_not_a_response_are_refused(data: bytes) -> None:
    with pytest.raises(BadResponse):
        read(data, 10_000)


def test_an_endless_head_is_refused() -> None:
    reader = ResponseReader(1024)
    reader.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(BadResponse, match="too long"):
        for _ in range(100):
            reader.feed(b"X-Filler: " + b"y" * 1000 + b"\r\n")
