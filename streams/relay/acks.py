"""The broker's answers for one batch, without a Python call per acknowledged message.

The relay's own producer reports only failures (``delivery.report.only.error``): a
batch is produced, then flushed once. A message counts as acknowledged when that flush
emptied the producer's queue and no failure was reported for it. librdkafka runs a
message's delivery callback before the message leaves the queue, so a failure is
always recorded before the flush can return 0. A producer that reports every delivery
(e.g. one handed in by a caller) works too: its success reports are simply ignored.

Dead letters go through a publisher that reports every delivery (the sink counts them
on success), so each of them counts as acknowledged only on its own success report.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Protocol

from confluent_kafka import KafkaError
from confluent_kafka import Message as KafkaMessage

from streams.kafka_config import PRODUCER_BROKEN
from streams.tracing import H_MESSAGE_ID

OnDelivery = Callable[[KafkaError | None, KafkaMessage], None]

# The relay's producer: no delivery report (and no Python call) for a successful message.
ONLY_ERRORS = {"delivery.report.only.error": True}


class Flushable(Protocol):
    def flush(self, timeout: float = ...) -> int: ...


class BatchAcks:
    """Failures reported for a batch's messages, and whether the batch's flush completed."""

    def __init__(self) -> None:
        self.errors: dict[int, str] = {}  # message index -> error
        self.fatal = False  # the outbox producer is broken for good and must be replaced
        self.letters_fatal = False  # the same, for the dead letters' producer
        self.flushed = False
        self.unplaced: str | None = None  # a failure no message could be found for
        self._letters: dict[int, bool] = {}  # dead letter index -> acknowledged
        self._pending = 0
        self._lock = threading.Lock()
        self._letters_done = threading.Event()
        self._letters_done.set()

    def on_message(self, i: int) -> OnDelivery:
        """The delivery callback of message ``i`` (called only on failure, normally)."""
        return partial(self._message, i)

    def _message(self, i: int, err: KafkaError | None, msg: KafkaMessage | None) -> None:
        if err is None:
            return  # acknowledged: known at the flush
        fatal = err.fatal() or err.code() in PRODUCER_BROKEN
        with self._lock:
            self.errors.setdefault(i, err.str())
            self.fatal = self.fatal or fatal

    def reports(self, id_stem: bytes) -> Reports:
        """One delivery callback for every message of the batch whose message ids are
        ``id_stem`` + its index as 8 hex digits (``BatchEncoder``): no callable is made
        per message (a ``partial`` per message was an eighth of the relay's samples)."""
        return Reports(self, id_stem)

    def on_letter(self, i: int) -> OnDelivery:
        """The delivery callback of dead letter ``i``, which must report its success."""
        with self._lock:
            self._letters[i] = False
            self._pending += 1
            self._letters_done.clear()
        return partial(self._letter, i)

    def _letter(self, i: int, err: KafkaError | None, msg: KafkaMessage | None) -> None:
        fatal = err is not None and (err.fatal() or err.code() in PRODUCER_BROKEN)
        with self._lock:
            if self._letters.get(i) is not False or i in self.errors:
                return  # settled already
            if err is None:
                self._letters[i] = True
            else:
                self.errors[i] = err.str()
                self.letters_fatal = self.letters_fatal or fatal
            self._pending -= 1
            if self._pending == 0:
                self._letters_done.set()

    def settle_letter(self, i: int, error: str | None) -> None:
        """Settle dead letter ``i`` at once (kept in PostgreSQL, or refused by the producer)."""
        with self._lock:
            if self._letters.get(i) is False:  # its callback was handed out: no longer wait
                self._pending -= 1
                if self._pending == 0:
                    self._letters_done.set()
            if error is None:
                self._letters[i] = True
            else:
                self._letters[i] = False
                self.errors[i] = error

    def wait(self, producer: Flushable, timeout: float) -> bool:
        """Flush the batch out; True once every message and letter has its answer."""
        deadline = time.monotonic() + timeout
        self.flushed = producer.flush(timeout) == 0
        letters = self._letters_done.wait(max(0.0, deadline - time.monotonic()))
        return self.flushed and letters

    def ok(self, i: int) -> bool:
        """Whether message (or dead letter) ``i`` was acknowledged by the broker."""
        if i in self.errors or self.unplaced is not None:
            return False
        acked = self._letters.get(i)
        return self.flushed if acked is None else acked

    def error(self, i: int) -> str:
        found = self.errors.get(i)
        if found is None and self.unplaced is not None:
            return f"a message of the batch failed: {self.unplaced}"
        return found or "no acknowledgement"


class Reports:
    """The shared delivery callback of ``BatchAcks.reports``. A failure names its message
    by the message-id header of the message librdkafka hands back. A report without a
    message, which librdkafka never makes, is taken to be about the message being handed
    to ``produce`` (``producing``: a producer that refuses inside ``produce``). A failure
    it cannot place fails the whole batch: nothing of it is deleted, and it goes again."""

    def __init__(self, acks: BatchAcks, id_stem: bytes) -> None:
        self.acks = acks
        self.id_stem = id_stem
        self.producing = -1

    def __call__(self, err: KafkaError | None, msg: KafkaMessage | None) -> None:
        if err is None:
            return  # acknowledged: known at the flush
        i = self.producing if msg is None else self._index(msg)
        if i is None or i < 0:
            with self.acks._lock:
                self.acks.unplaced = self.acks.unplaced or err.str()
                self.acks.fatal = self.acks.fatal or err.fatal() or err.code() in PRODUCER_BROKEN
            return
        self.acks._message(i, err, msg)

    def _index(self, msg: KafkaMessage) -> int | None:
        headers = msg.headers()
        found = (headers if isinstance(headers, dict) else dict(headers or ())).get(H_MESSAGE_ID)
        value = found.encode() if isinstance(found, str) else found
        stem = self.id_stem
        if value is None or len(value) != len(stem) + 8 or not value.startswith(stem):
            return None
        try:
            return int(value[len(stem) :], 16)
        except ValueError:
            return None
