"""confluent-kafka client configuration derived from settings, in one place."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message

from streams.settings import Settings

OnDelivery = Callable[[KafkaError | None, Message], None]

# Errors after which a producer instance never delivers again: build a new one
# (docs/broker.md: Tansu fences an idempotent producer for good after a message timeout).
PRODUCER_BROKEN = frozenset(
    {
        KafkaError._FATAL,
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError.UNKNOWN_PRODUCER_ID,
    }
)


class RawSender(Protocol):
    """Sends bytes as they are (``streams.publisher.Publisher.send_raw``): dead letters,
    their replay and the delayed pump, whose values were encoded when they were made."""

    def send_raw(
        self,
        full_topic: str,
        value: bytes | None,
        *,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        on_delivery: OnDelivery | None = None,
    ) -> None: ...


# librdkafka's own log lines (connection failures, ...) go through Python logging, so they
# carry the one streams format (JSON lines too) instead of raw text on stderr. Not under
# "streams.": they describe the client library, not a failure streams swallowed.
LIBRDKAFKA_LOG = logging.getLogger("librdkafka")


def common(settings: Settings) -> dict[str, Any]:
    """Settings every confluent-kafka client of streams shares."""
    return {"bootstrap.servers": settings.kafka_bootstrap_servers, "logger": LIBRDKAFKA_LOG}


def producer(settings: Settings, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        **common(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,
        "compression.type": "none",
        "client.id": f"{settings.app_id}-{settings.producer_name}",
    }
    cfg.update(overrides)
    return cfg


def consumer(settings: Settings, group: str, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        **common(settings),
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": int(settings.kafka_session_timeout * 1000),
        "heartbeat.interval.ms": int(settings.kafka_heartbeat_interval * 1000),
    }
    cfg.update(overrides)
    return cfg
