"""Writes the due table's changelog with librdkafka, batched, instead of Faust's producer.

Faust's changelog path (``send_soon`` -> aiokafka) cost about 60 us of worker CPU per
record and a produce request per record at light linger: with one entry and one
tombstone per countdown window it was the largest cost of a recompute. The records
are the ones Faust would write (JSON key and value on the table's changelog topic and
the request's partition), so Faust's table recovery reads them back unchanged.

Durability: ``flush`` waits for every record sent so far; the request agent calls it
before its batch is acknowledged (through Faust: a direct worker holds its windows
through the request offsets instead and writes only tombstones of older entries), so a
request's offset is never committed before its window is in the changelog. A record
the broker refused is sent again (in order per partition); after ``ATTEMPTS`` the flush
raises and the batch is retried by the agent.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from json.encoder import encode_basestring_ascii
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streams import kafka_config
from streams.errors import PublishError
from streams.projectconfigs.debounce import record_json
from streams.settings import Settings

log = logging.getLogger(__name__)

ATTEMPTS = 5
UNASSIGNED = -1  # a record's partition left to the producer's partitioner
POLL_EVERY = 500  # records queued between two polls for delivery reports
Record = tuple[int, bytes, bytes | None]  # (partition, key, value or None: a tombstone)


class ChangelogWriter:
    """A librdkafka producer for one changelog topic; ``flush`` re-sends refused records."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        name: str = "invalidation",
        partitioner: str = "consistent_random",
    ) -> None:
        """``partitioner`` places the records sent with partition ``UNASSIGNED``."""
        self.topic = topic
        # Not idempotent: Tansu fences an idempotent producer for good after a message
        # timeout (docs/broker.md). One request in flight keeps each partition in order.
        self._producer = Producer(
            kafka_config.producer(
                settings,
                **{
                    "enable.idempotence": False,
                    "max.in.flight.requests.per.connection": 1,
                    # Flushed before a batch is acknowledged, and a flush sends at once:
                    # the linger only gathers the records queued meanwhile.
                    "linger.ms": 20,
                    "client.id": f"{settings.app_id}-{name}-changelog",
                    # Reports of refused records only, to one callback: a per-record
                    # callback doubled the cost of a produce call and added a Python
                    # call per acknowledged record.
                    "on_delivery": self._delivered,
                    "delivery.report.only.error": True,
                    "partitioner": partitioner,
                },
            )
        )
        self._failed: list[Record] = []
        self._lock = threading.Lock()
        self._queued = 0

    def send(self, partition: int, key: str, value: Any) -> None:
        """Queue one record (``value`` None: a tombstone); JSON like Faust's serializer."""
        raw = None if value is None else record_json(value)
        # A str's JSON as json.dumps writes it, without its encoder's Python layers.
        self._produce((partition, encode_basestring_ascii(key).encode(), raw))

    def send_raw(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Queue one record as bytes (a table with the raw serializers)."""
        self._produce((partition, key, value))

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        # Called for refused records only: the record to send again is read back from
        # the message.
        if err is not None:
            with self._lock:
                self._failed.append((msg.partition() or 0, msg.key() or b"", msg.value()))

    def _produce(self, record: Record) -> None:
        partition, key, value = record
        while True:
            try:
                self._producer.produce(self.topic, value, key, partition)  # positional: faster
                break
            except BufferError:
                self._producer.poll(0.05)  # the local queue is full: let it drain
        self._queued += 1
        if self._queued >= POLL_EVERY:  # serve delivery reports now and then; flush does too
            self._queued = 0
            self._producer.poll(0)

    def flush_blocking(self, timeout: float = 30.0) -> None:
        """Wait until every record is acknowledged, re-sending refused ones."""
        for attempt in range(1, ATTEMPTS + 1):
            left = self._producer.flush(timeout)
            with self._lock:
                failed, self._failed = self._failed, []
            if not failed and not left:
                return
            log.warning(
                "invalidation.changelog.retry",
                extra={"topic": self.topic, "refused": len(failed), "unacked": left},
            )
            for record in failed:
                self._produce(record)
            if attempt == ATTEMPTS:
                break
        raise PublishError(f"{self.topic}: changelog records not acknowledged")

    async def flush(self) -> None:
        """``flush_blocking`` in a thread, unless nothing is waiting for its acknowledgement."""
        if len(self._producer) == 0 and not self._failed:
            return
        await asyncio.to_thread(self.flush_blocking)

    def close(self) -> None:
        self._producer.flush(10)
