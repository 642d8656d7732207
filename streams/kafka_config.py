"""confluent-kafka client configuration derived from settings, in one place."""

from __future__ import annotations

import logging
from typing import Any

from streams.settings import Settings

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
