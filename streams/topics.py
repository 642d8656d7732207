"""Create and list the catalogue's topics on the cluster (idempotent)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams import catalogue, kafka_config
from streams.errors import StreamsError
from streams.settings import Settings

log = logging.getLogger(__name__)


class TopicAdminError(StreamsError, KafkaException):
    """A topic could not be created."""


@dataclass(frozen=True)
class TopicState:
    name: str
    partitions: int
    exists: bool


def admin(settings: Settings) -> AdminClient:
    return AdminClient(kafka_config.common(settings))


def create_all(
    settings: Settings, extra: list[catalogue.TopicSpec] | None = None, timeout: float = 30.0
) -> list[str]:
    """Create every catalogue topic that does not exist yet; returns the names created."""
    client = admin(settings)
    existing = set(client.list_topics(timeout=timeout).topics)
    wanted = list({t.name: t for t in [*catalogue.TOPICS.values(), *(extra or [])]}.values())
    new = [
        NewTopic(
            t.full_name(settings.topic_prefix),
            num_partitions=t.partitions,
            replication_factor=settings.replication_factor,
            config=t.config(),
        )
        for t in wanted
        if t.full_name(settings.topic_prefix) not in existing
    ]
    created: list[str] = []
    if not new:
        return created
    for name, fut in client.create_topics(new, operation_timeout=timeout).items():
        try:
            fut.result(timeout)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise TopicAdminError(f"could not create {name}: {exc}") from exc
    log.info("topics.created", extra={"topics": created})
    return created


def create_changelog(settings: Settings, name: str, partitions: int, timeout: float = 30.0) -> bool:
    """Create the compacted changelog topic ``name`` (a full name) of a table streams keeps
    itself, unless it exists; whether it was created."""
    client = admin(settings)
    if name in client.list_topics(timeout=timeout).topics:
        return False
    topic = NewTopic(
        name,
        num_partitions=partitions,
        replication_factor=settings.replication_factor,
        config={"cleanup.policy": "compact"},
    )
    for _, fut in client.create_topics([topic], operation_timeout=timeout).items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return False
            raise TopicAdminError(f"could not create {name}: {exc}") from exc
    log.info("topics.created", extra={"topics": [name]})
    return True


def list_state(settings: Settings, timeout: float = 30.0) -> list[TopicState]:
    meta = admin(settings).list_topics(timeout=timeout).topics
    out = []
    for t in catalogue.TOPICS.values():
        name = t.full_name(settings.topic_prefix)
        m = meta.get(name)
        out.append(TopicState(name, len(m.partitions) if m else 0, m is not None))
    return out
