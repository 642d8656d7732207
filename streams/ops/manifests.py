"""KafkaTopics derived from the topic catalogue, and the facts others derive from it.

Topic names, partitions and configs come from the catalogue; the workers' scaling cap
is the largest partition count there, because a Faust worker beyond that many gets no
partition of any topic.
"""

from __future__ import annotations

import re
from typing import Any

from streams import catalogue

CLUSTER = "streams"  # the Strimzi Kafka resource's name (k8s/base/kafka.yaml)
BOOTSTRAP = f"{CLUSTER}-kafka-bootstrap:9092"  # Strimzi's bootstrap Service, plain listener
WORKER_SILOS = ("region", "control")


def resource_name(topic: str) -> str:
    """A Kubernetes object name for a topic (lower case, no '_')."""
    name = re.sub(r"[^a-z0-9.-]", "-", topic.lower()).strip(".-")
    return name or "topic"


def kafka_topics(prefix: str = "", replicas: int = 3) -> list[dict[str, Any]]:
    """One Strimzi ``KafkaTopic`` per catalogue topic."""
    docs = []
    for spec in catalogue.builtin_topics():
        config = dict(spec.config())
        if replicas > 1:
            # acks=all then survives one broker down without losing an acknowledged write.
            config["min.insync.replicas"] = str(min(2, replicas - 1))
        docs.append(
            {
                "apiVersion": "kafka.strimzi.io/v1",
                "kind": "KafkaTopic",
                "metadata": {
                    "name": resource_name(spec.full_name(prefix)),
                    "labels": {
                        "strimzi.io/cluster": CLUSTER,
                        "app.kubernetes.io/part-of": "streams",
                        # docs/deploy.md: the topics are applied before the workloads.
                        "streams.io/deploy-step": "topics",
                    },
                    "annotations": {"streams.io/doc": spec.doc, "streams.io/key": spec.key},
                },
                "spec": {
                    "topicName": spec.full_name(prefix),
                    "partitions": spec.partitions,
                    "replicas": replicas,
                    "config": config,
                },
            }
        )
    return docs


def max_workers() -> int:
    return max(t.partitions for t in catalogue.builtin_topics())
