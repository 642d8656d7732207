"""Deployments, Services, PodDisruptionBudgets and PodMonitors of streams' processes.

One definition per component, stamped out per silo: a Faust worker and an outbox
relay for each silo, and one lag exporter. Settings come from the ConfigMap
``streams-config`` and the Secret ``streams-secrets`` (``DATABASE_URL``); only what
differs per silo is set on the container. Pods that use the database run
``streams db migrate`` in an init container first: it is idempotent and serialised by
an advisory lock, so pods starting together are safe, and every rollout of a new
image migrates before its code runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from streams.agents import DIRECT_AGENTS
from streams.ops import alerts, manifests
from streams.ops.manifests import WORKER_SILOS

# What `make image` tags; the overlay's `images:` names the real registry and tag.
IMAGE = f"streams:{version('streams')}"
PART_OF = {"app.kubernetes.io/part-of": "streams"}
STATE_DIR = "/var/lib/streams"
LAG_THRESHOLD = 1000  # messages of lag per worker replica before KEDA adds one


@dataclass(frozen=True)
class Component:
    name: str  # app.kubernetes.io/component
    args: tuple[str, ...]
    port_name: str
    port: int
    ready_path: str
    live_path: str
    job: str  # Prometheus job label the PodMonitor gives
    replicas: int
    cpu: str
    memory: str
    memory_limit: str
    startup_seconds: int = 60
    grace_seconds: int = 30
    migrates: bool = True  # uses the database: run the migrations before it starts


WORKER = Component(
    "worker",
    ("worker", "--loglevel", "info"),
    "web",
    6066,
    "/health",
    "/health",
    alerts.WORKER_JOB,
    replicas=2,
    cpu="500m",
    memory="512Mi",
    memory_limit="1Gi",
    # Table recovery from changelogs happens before the web server answers.
    startup_seconds=180,
    grace_seconds=60,
)
RELAY = Component(
    "relay",
    ("relay",),
    "metrics",
    9300,
    "/metrics",
    "/metrics",
    alerts.RELAY_JOB,
    replicas=2,  # shard claims use FOR UPDATE SKIP LOCKED: relays share the work safely
    cpu="200m",
    memory="256Mi",
    memory_limit="512Mi",
)
EXPORTER = Component(
    "lag-exporter",
    ("lag-exporter",),
    "metrics",
    9308,
    "/health",  # 503 until the first poll of the cluster succeeded
    "/metrics",  # stays 200 while the broker is away: restarting would not help
    alerts.EXPORTER_JOB,
    replicas=1,
    cpu="100m",
    memory="128Mi",
    memory_limit="256Mi",
    migrates=False,
)


def _name(c: Component, silo: str | None) -> str:
    return f"streams-{c.name}" + (f"-{silo}" if silo else "")


def _labels(c: Component, silo: str | None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": "streams", "app.kubernetes.io/component": c.name}
    if silo:
        labels["streams.io/silo"] = silo
    return labels


def _probe(c: Component, path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": c.port_name},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _env(c: Component, silo: str | None) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "STREAMS_PRODUCER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    if silo:
        env.append({"name": "STREAMS_SILO_MODE", "value": silo})
    if c is WORKER and silo:
        # One consumer group per silo: the silos run different agents.
        env.append({"name": "STREAMS_APP_ID", "value": f"streams-{silo}"})
    if c is WORKER:
        # Faust announces this URL to the group; a project-config request that lands on
        # the wrong pod is forwarded to the partition owner's URL, so it must be the
        # pod's own address, not the 0.0.0.0 it binds.
        env += [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE_CANONICAL_URL", "value": f"http://$(POD_IP):{c.port}"},
        ]
    return env


# Settings for every container: the ConfigMap, then the Secret holding DATABASE_URL.
ENV_FROM = [
    {"configMapRef": {"name": "streams-config"}},
    {"secretRef": {"name": "streams-secrets"}},
]
SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
VOLUME_MOUNTS = [
    {"name": "state", "mountPath": STATE_DIR},
    {"name": "tmp", "mountPath": "/tmp"},
]


def _container(c: Component, silo: str | None) -> dict[str, Any]:
    return {
        "name": c.name,
        "image": IMAGE,
        "command": ["streams"],
        "args": list(c.args),
        "envFrom": ENV_FROM,
        "env": _env(c, silo),
        "ports": [{"name": c.port_name, "containerPort": c.port, "protocol": "TCP"}],
        "startupProbe": _probe(c, c.live_path, 2, c.startup_seconds // 2),
        "readinessProbe": _probe(c, c.ready_path, 10, 3),
        "livenessProbe": _probe(c, c.live_path, 15, 4),
        "resources": {
            "requests": {"cpu": c.cpu, "memory": c.memory},
            "limits": {"memory": c.memory_limit},
        },
        "securityContext": SECURITY_CONTEXT,
        "volumeMounts": VOLUME_MOUNTS,
    }


def migrate_container() -> dict[str, Any]:
    """The init container: ``streams db migrate`` against the Secret's DATABASE_URL."""
    return {
        "name": "migrate",
        "image": IMAGE,
        "command": ["streams"],
        "args": ["db", "migrate"],
        "envFrom": ENV_FROM,
        "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": SECURITY_CONTEXT,
        "volumeMounts": VOLUME_MOUNTS,
    }


def deployment(c: Component, silo: str | None = None) -> dict[str, Any]:
    labels = _labels(c, silo)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": _name(c, silo), "labels": {**labels, **PART_OF}},
        "spec": {
            "replicas": c.replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {**labels, **PART_OF}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": c.grace_seconds,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    **({"initContainers": [migrate_container()]} if c.migrates else {}),
                    "containers": [_container(c, silo)],
                    "volumes": [
                        {"name": "state", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }


def service(c: Component, silo: str | None = None) -> dict[str, Any]:
    labels = _labels(c, silo)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": _name(c, silo), "labels": {**labels, **PART_OF}},
        "spec": {
            "selector": labels,
            "ports": [{"name": c.port_name, "port": c.port, "targetPort": c.port_name}],
        },
    }


def disruption_budget(c: Component, silo: str | None = None) -> dict[str, Any]:
    # Evict one pod at a time: each worker eviction is a consumer-group rebalance.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": _name(c, silo), "labels": PART_OF},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _labels(c, silo)}},
    }


def pod_monitor(c: Component) -> dict[str, Any]:
    relabel: list[dict[str, Any]] = [{"targetLabel": "job", "replacement": c.job}]
    if c is not EXPORTER:
        relabel.append(
            {"sourceLabels": ["__meta_kubernetes_pod_label_streams_io_silo"], "targetLabel": "silo"}
        )
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": _name(c, None), "labels": PART_OF},
        "spec": {
            "selector": {"matchLabels": _labels(c, None)},
            "podMetricsEndpoints": [
                {"port": c.port_name, "path": "/metrics", "interval": "15s", "relabelings": relabel}
            ],
        },
    }


def workloads(silos: tuple[str, ...] = WORKER_SILOS) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for c in (WORKER, RELAY):
        for silo in silos:
            docs += [deployment(c, silo), service(c, silo), disruption_budget(c, silo)]
    docs += [deployment(EXPORTER), service(EXPORTER)]
    return docs


def pod_monitors() -> list[dict[str, Any]]:
    return [pod_monitor(c) for c in (WORKER, RELAY, EXPORTER)]


def worker_groups(silo: str) -> list[str]:
    """The consumer groups a worker of ``silo`` (``STREAMS_APP_ID`` = ``streams-<silo>``)
    reads in: Faust's, then one per direct agent of that silo."""
    app_id = f"streams-{silo}"
    direct = [name for name, silos in DIRECT_AGENTS.items() if silo in silos]
    return [app_id, *(f"{app_id}.{name}" for name in direct)]


def _lag_trigger(group: str) -> dict[str, Any]:
    return {
        "type": "kafka",
        "metadata": {
            "bootstrapServers": manifests.BOOTSTRAP,
            "consumerGroup": group,
            "lagThreshold": str(LAG_THRESHOLD),
            "offsetResetPolicy": "earliest",
            # Never more replicas than partitions to share.
            "allowIdleConsumers": "false",
        },
    }


def scaled_objects(silos: tuple[str, ...] = WORKER_SILOS) -> list[dict[str, Any]]:
    """A KEDA ``ScaledObject`` per worker Deployment, scaling on its group's lag."""
    return [
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {
                "name": f"streams-worker-{silo}",
                "labels": {"app.kubernetes.io/part-of": "streams"},
            },
            "spec": {
                "scaleTargetRef": {"name": f"streams-worker-{silo}"},
                "minReplicaCount": WORKER.replicas,
                "maxReplicaCount": manifests.max_workers(),
                "pollingInterval": 30,
                "cooldownPeriod": 300,
                # The worker's own group (STREAMS_APP_ID), then each direct agent's.
                "triggers": [_lag_trigger(group) for group in worker_groups(silo)],
            },
        }
        for silo in silos
    ]
