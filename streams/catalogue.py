"""The topic catalogue: every topic streams uses, declared once.

Each entry names its partitions, cleanup policy, retention, what its key means, and
which silos may publish to it. Faust topics, ``streams topics create``, the k8s
``KafkaTopic`` manifests and the lag dashboards all read this module, so a topic name
is never spelled twice. A deployment-wide prefix (``STREAMS_TOPIC_PREFIX``) is
prepended to every name, for multi-tenant clusters and for test isolation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from streams.errors import UnknownTopic
from streams.silo import ALL_SILOS, CONTROL_ONLY, REGION_ONLY, SiloMode

DAY_MS = 24 * 3600 * 1000

TopicName = Literal[
    "outbox.region",
    "outbox.control",
    "resource-changes",
    "webhook-deliveries",
    "webhook-retries",
    "project-config-invalidations",
    "project-configs",
    "buffer-increments",
    "buffer-completions",
    "outbox-backfill-batches",
    "dead-letters",
    "jobs",
]


# Bytes of a record batch around one record's value, key and headers (batch header,
# record framing, compression slack): a message must leave this much of the limit free.
RECORD_OVERHEAD = 512


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    doc: str
    partitions: int = 4
    compacted: bool = False
    retention_ms: int = 7 * DAY_MS
    publishers: frozenset[SiloMode] = field(default=ALL_SILOS)
    # Raw topics carry bytes that are not ours to decode (the dead-letter topic).
    avro: bool = True
    # The largest record the topic takes (Kafka's max.message.bytes; its default is
    # 1048588). Publishers refuse a bigger message before sending it.
    max_message_bytes: int = 1_048_576

    def fits(self, size: int) -> bool:
        """Whether a record of ``size`` bytes (value, key and headers) fits the topic."""
        return size + RECORD_OVERHEAD <= self.max_message_bytes

    def full_name(self, prefix: str = "") -> str:
        return f"{prefix}{self.name}"

    def config(self) -> dict[str, str]:
        """Broker-side topic config, as given to CreateTopics / KafkaTopic."""
        cfg = {"retention.ms": str(self.retention_ms)}
        if self.compacted:
            cfg = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
        return cfg


TOPICS: dict[str, TopicSpec] = {
    t.name: t
    for t in (
        TopicSpec(
            "outbox.region",
            key="shard: '<scope>:<shard identifier>'",
            doc="Outbox messages of the region silo, published by the relay.",
            publishers=REGION_ONLY,
        ),
        TopicSpec(
            "outbox.control",
            key="shard: '<scope>:<shard identifier>'",
            doc="Outbox messages of the control silo, published by the relay.",
            publishers=CONTROL_ONLY,
        ),
        TopicSpec(
            "resource-changes",
            key="organization id (decimal string)",
            doc="A model instance was created, updated or deleted.",
            publishers=REGION_ONLY,
        ),
        TopicSpec(
            "webhook-deliveries",
            key="target id: '<kind>:<id>'",
            doc="One HTTP delivery to one webhook target.",
            publishers=REGION_ONLY,
        ),
        TopicSpec(
            "webhook-retries",
            key="target id: '<kind>:<id>'",
            doc="Deliveries waiting for their next attempt (not-before time in the value).",
            publishers=REGION_ONLY,
        ),
        TopicSpec(
            "project-config-invalidations",
            key="organization id (decimal string)",
            doc="A request to invalidate project configs at org, project or key scope.",
            publishers=REGION_ONLY,
        ),
        TopicSpec(
            "project-configs",
            key="public key",
            doc="The computed config of one public key; compacted; a tombstone = deleted.",
            compacted=True,
            publishers=REGION_ONLY,
        ),
        TopicSpec(
            "buffer-increments",
            key="'<model>:<filters>' (all increments of one row share it)",
            doc="Counter increments for one model row.",
            publishers=REGION_ONLY,
        ),
        TopicSpec(
            "buffer-completions",
            key="'<model>:<filters>'",
            doc="signal_only increments: the completion event, nothing written.",
            publishers=REGION_ONLY,
        ),
        TopicSpec(
            "outbox-backfill-batches",
            key="table name",
            doc="One outbox backfill batch (table, id range, replication version).",
        ),
        TopicSpec(
            "jobs",
            key="job id",
            doc="Runs of declared jobs (delay / apply_async / follow-ons / retries).",
        ),
        TopicSpec(
            "dead-letters",
            key="the original message's key",
            doc="Anything that failed for good: the original bytes, with dlq.* error headers.",
            retention_ms=30 * DAY_MS,
            avro=False,
        ),
    )
}


def spec(name: TopicName) -> TopicSpec:
    """The catalogue entry of a built-in topic (a typo in ``name`` fails type-checking)."""
    return TOPICS[name]


def lookup(name: str) -> TopicSpec:
    """The catalogue entry of a name known only at run time (a message's topic, an
    extension agent's registered topic); ``UnknownTopic`` when it is not in the catalogue."""
    try:
        return TOPICS[name]
    except KeyError:
        raise UnknownTopic(f"topic {name!r} is not in the catalogue") from None


BUILTIN: frozenset[str] = frozenset(TOPICS)


def builtin_topics() -> list[TopicSpec]:
    """The topics streams itself declares (not those of extension agents), by name."""
    return sorted((TOPICS[n] for n in BUILTIN), key=lambda t: t.name)


def register(extra: TopicSpec) -> None:
    """Add a topic for an extension agent (``STREAMS_AGENT_MODULES``); names stay unique."""
    existing = TOPICS.get(extra.name)
    if existing is not None and existing != extra:
        raise ValueError(f"topic {extra.name!r} is already in the catalogue")
    TOPICS[extra.name] = extra
