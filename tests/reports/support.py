"""A real SMTP server on loopback (aiosmtpd) and helpers for mail tests."""

from __future__ import annotations

import email
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller

from streams.dev.stack import free_port
from tests.support import harness


@dataclass
class Received:
    envelope_to: list[str]
    message: Message


@dataclass
class Sink:
    """Messages an aiosmtpd server on 127.0.0.1 accepted, in arrival order."""

    port: int = 0
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    refuse: bool = False  # answer DATA with 550

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return "550 mailbox unavailable"
        msg = email.message_from_bytes(envelope.original_content or envelope.content)
        with self.lock:
            self.messages.append(Received(list(envelope.rcpt_tos), msg))
        return "250 OK"

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.messages)


@contextmanager
def smtp_sink() -> Iterator[Sink]:
    """An SMTP server on a free loopback port for the duration of the block."""
    sink = Sink(port=free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} ([0-9.e+-]+)$")


def metric(proc: harness.Proc, name: str, **labels: str) -> float:
    """Sum of a worker's samples of ``name`` whose labels include ``labels``."""
    status, body = proc.get("/metrics")
    if status != 200:
        return 0.0
    total = 0.0
    for line in body.decode().splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total
