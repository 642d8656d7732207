"""The manifests deploy what `make image` builds, migrate first, and route to pod addresses."""

from __future__ import annotations

import re
import tomllib
from typing import Any

from streams.cli import build_parser
from tests.ops.conftest import K8S, ROOT
from tests.ops.test_manifests import base_documents, overlay_documents

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
BUILD_SCRIPT = (K8S / "image" / "build.sh").read_text()


def deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in base_documents() if d["kind"] == "Deployment"}


def test_pods_run_the_image_make_image_builds_as_its_user() -> None:
    match = re.search(r"^APP_UID=(\d+)$", BUILD_SCRIPT, re.M)
    assert match, "k8s/image/build.sh sets APP_UID"
    assert "TAG=${IMAGE_TAG:-streams:$VERSION}" in BUILD_SCRIPT
    for name, d in deployments().items():
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == int(match.group(1)), name
        for c in pod.get("initContainers", []) + pod["containers"]:
            assert c["image"] == f"streams:{VERSION}", (name, c["name"])
            assert c["command"] == ["streams"]


def test_pods_that_use_the_database_migrate_it_first() -> None:
    for name, d in deployments().items():
        pod = d["spec"]["template"]["spec"]
        (main,) = pod["containers"]
        if main["args"][0] == "lag-exporter":
            assert "initContainers" not in pod
            continue
        (init,) = pod["initContainers"]
        assert init["args"] == ["db", "migrate"], name
        assert build_parser().parse_args(init["args"]).func
        # The same settings as the main container: the ConfigMap and the Secret's DSN.
        assert init["envFrom"] == main["envFrom"]
        assert {"secretRef": {"name": "streams-secrets"}} in init["envFrom"]


def test_workers_announce_their_pod_address() -> None:
    for name, d in deployments().items():
        (container,) = d["spec"]["template"]["spec"]["containers"]
        if container["args"][0] != "worker":
            continue
        env = [e["name"] for e in container["env"]]
        values = {e["name"]: e for e in container["env"]}
        assert values["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        # Kubernetes expands $(POD_IP) only when POD_IP is defined earlier in the list.
        assert env.index("POD_IP") < env.index("NODE_CANONICAL_URL"), name
        port = container["ports"][0]["containerPort"]
        assert values["NODE_CANONICAL_URL"]["value"] == f"http://$(POD_IP):{port}"


def test_the_example_overlay_names_a_registry_and_the_database_secret() -> None:
    docs = overlay_documents()
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert secret["metadata"]["name"].startswith("streams-secrets")
    assert set(secret["data"]) == {"DATABASE_URL"}
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        pod = d["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            assert c["image"] == f"registry.example.com/streams:{VERSION}"
            refs = [e["secretRef"]["name"] for e in c["envFrom"] if "secretRef" in e]
            # kustomize rewrote the reference to the generated (hash-suffixed) name.
            assert refs == [secret["metadata"]["name"]]


def test_the_deploy_steps_select_the_cluster_then_the_topics() -> None:
    """docs/deploy.md applies `-l streams.io/deploy-step=kafka`, then `=topics`."""
    docs = overlay_documents()
    steps: dict[str, set[str]] = {}
    for d in docs:
        step = d["metadata"].get("labels", {}).get("streams.io/deploy-step")
        if step:
            steps.setdefault(step, set()).add(d["kind"])
    assert steps == {"kafka": {"Kafka", "KafkaNodePool"}, "topics": {"KafkaTopic"}}
    topics = [d for d in docs if d["kind"] == "KafkaTopic"]
    assert all(d["metadata"]["labels"]["streams.io/deploy-step"] == "topics" for d in topics)
    guide = (ROOT / "docs" / "deploy.md").read_text()
    for step in steps:
        assert f"-l streams.io/deploy-step={step}" in guide
