"""Every manifest under k8s/ validates offline, agrees with the code, and is up to date."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from typing import Any

import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft7Validator

from streams import catalogue
from streams.agents import DIRECT_AGENTS
from streams.cli import build_parser
from streams.ops import k8s, manifests
from streams.settings import Settings
from tests.ops.conftest import K8S, SCHEMAS

KUBERNETES_VERSION = "1.32.0"
CUSTOM_GROUPS = ("kafka.strimzi.io", "keda.sh", "monitoring.coreos.com")


def base_documents() -> Iterator[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    for rel in kustomization["resources"]:
        yield from (d for d in yaml.safe_load_all((K8S / "base" / rel).read_text()) if d)


def overlay_documents() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (for `kubectl kustomize`) is not installed")
    built = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / "example")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(built) if d]


@cache
def crd_validator(api_version: str, kind: str) -> Draft7Validator:
    group, version = api_version.split("/")
    path = SCHEMAS / group / f"{kind.lower()}_{version}.json"
    if not SCHEMAS.is_dir():
        pytest.skip(f"no CRD schemas at {SCHEMAS} (set STREAMS_K8S_SCHEMAS)")
    assert path.exists(), f"no schema for {api_version} {kind} at {path}"
    return Draft7Validator(json.loads(path.read_text()))


def validate(doc: dict[str, Any]) -> None:
    api, kind, name = doc["apiVersion"], doc["kind"], doc["metadata"]["name"]
    if api.split("/")[0] in CUSTOM_GROUPS:
        errors = sorted(crd_validator(api, kind).iter_errors(doc), key=str)
        assert not errors, f"{kind}/{name}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
        )
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_generated_files_are_up_to_date() -> None:
    assert k8s.stale() == [], "run `python -m streams.ops.k8s` and commit the result"


def test_every_base_manifest_validates() -> None:
    docs = list(base_documents())
    assert len(docs) > 20
    for doc in docs:
        validate(doc)


def test_the_example_overlay_builds_and_validates() -> None:
    docs = overlay_documents()
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "Secret", "Kafka", "KafkaNodePool", "KafkaTopic", "Deployment"} <= kinds
    assert {"PodMonitor", "PrometheusRule", "ScaledObject", "PodDisruptionBudget"} <= kinds
    for doc in docs:
        validate(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "streams"


def test_a_broken_manifest_is_refused() -> None:
    """The validators are strict: a typo'd field or a wrong type does not slip through."""
    topic = manifests.kafka_topics()[0]
    topic["spec"]["partitionz"] = 3
    with pytest.raises(AssertionError):
        validate(topic)
    deployment = next(d for d in base_documents() if d["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    deployment["spec"]["replicas"] = 2
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def test_kafka_topics_equal_the_catalogue() -> None:
    topics = {
        d["spec"]["topicName"]: d["spec"] for d in base_documents() if d["kind"] == "KafkaTopic"
    }
    assert set(topics) == {t.full_name() for t in catalogue.builtin_topics()}
    for t in catalogue.builtin_topics():
        spec = topics[t.full_name()]
        assert spec["partitions"] == t.partitions
        assert t.config().items() <= spec["config"].items()


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in base_documents() if d["kind"] == kind}


def test_workloads_agree_with_each_other_and_with_the_code() -> None:
    deployments, config = by_kind("Deployment"), by_kind("ConfigMap")["streams-config"]["data"]
    # The ConfigMap is a valid environment for Settings (only DATABASE_URL is secret).
    settings = Settings.from_env({**config, "DATABASE_URL": "postgresql://x@db/x"})
    assert settings.web_host == "0.0.0.0"
    for name, d in deployments.items():
        pod = d["spec"]["template"]
        assert d["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        (container,) = pod["spec"]["containers"]
        # The container's arguments are a valid `streams` command line.
        assert build_parser().parse_args(container["args"]).func, name
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] in ports, f"{name} {probe}"
        assert container["resources"]["requests"], name
        env = {e["name"]: e.get("value") for e in container["env"]}
        if container["args"][0] == "worker":
            assert ports["web"] == settings.web_port
            assert env["STREAMS_APP_ID"] == f"streams-{env['STREAMS_SILO_MODE']}"
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    for kind in ("Service", "PodDisruptionBudget", "PodMonitor"):
        for name, doc in by_kind(kind).items():
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            assert any(selector.items() <= p.items() for p in pods), f"{kind}/{name} selects no pod"


def test_workers_scale_on_their_own_group_capped_at_the_partition_count() -> None:
    deployments = by_kind("Deployment")
    config = by_kind("ConfigMap")["streams-config"]["data"]
    for name, so in by_kind("ScaledObject").items():
        target = deployments[so["spec"]["scaleTargetRef"]["name"]]
        (container,) = target["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        triggers = so["spec"]["triggers"]
        # Faust's group, then one group per direct agent of the silo (<app id>.<agent>).
        silo = env["STREAMS_SILO_MODE"]
        direct = [a for a, silos in DIRECT_AGENTS.items() if silo in silos]
        assert [t["metadata"]["consumerGroup"] for t in triggers] == [
            env["STREAMS_APP_ID"],
            *(f"{env['STREAMS_APP_ID']}.{a}" for a in direct),
        ], name
        for trigger in triggers:
            assert trigger["type"] == "kafka"
            assert trigger["metadata"]["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
            assert trigger["metadata"]["allowIdleConsumers"] == "false"
        assert so["spec"]["maxReplicaCount"] == max(
            t.partitions for t in catalogue.builtin_topics()
        )
