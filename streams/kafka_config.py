"""confluent-kafka client configuration derived from settings, in one place."""

from __future__ import annotations

from typing import Any

from streams.settings import Settings


def common(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka_bootstrap_servers}


def producer(settings: Settings, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        **common(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
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
