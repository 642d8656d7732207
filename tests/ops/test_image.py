"""`make image` builds an image that runs `streams` as a non-root user and migrates a database.

The image is built by k8s/image/build.sh, which returns at once when the image under
the tag already holds the same wheels. Containers run with buildah's chroot isolation,
which shares the host's network: the embedded PostgreSQL on 127.0.0.1 is reachable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tomllib
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from streams.db.migrate import discover
from streams.settings import Settings
from tests.ops.conftest import ROOT, require_tool
from tests.support import harness

pytestmark = pytest.mark.slow

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
TAG = f"streams:{VERSION}"
ENV = {**os.environ, "STORAGE_DRIVER": os.environ.get("STORAGE_DRIVER", "vfs")}


def buildah(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["buildah", *args], env=ENV, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def image() -> dict[str, Any]:
    """The image's OCI configuration, after building it if its wheels changed."""
    require_tool("buildah")
    require_tool("debootstrap")
    build = subprocess.run(
        [str(ROOT / "k8s" / "image" / "build.sh")],
        env={**ENV, "PYTHON": str(ROOT / ".venv" / "bin" / "python"), "IMAGE_TAG": TAG},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-1000:] + build.stderr[-3000:]
    inspected = buildah("inspect", "--type", "image", TAG)
    assert inspected.returncode == 0, inspected.stderr
    config: dict[str, Any] = json.loads(inspected.stdout)["OCIv1"]["config"]
    return config


@pytest.fixture
def container(image: dict[str, Any]) -> Iterator[str]:
    made = buildah("from", "--name", f"streams-test-{uuid.uuid4().hex[:8]}", TAG)
    assert made.returncode == 0, made.stderr
    name = made.stdout.strip()
    try:
        yield name
    finally:
        buildah("rm", name)


def run_in(container: str, *command: str, env: dict[str, str] | None = None) -> str:
    """Run a command in the container as its configured user; its output."""
    flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
    done = buildah("run", "--isolation", "chroot", *flags, container, "--", *command)
    assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


def test_the_image_runs_streams_as_a_non_root_user(image: dict[str, Any], container: str) -> None:
    assert image["Entrypoint"] == ["streams"]
    assert image["User"] == "10001:10001"
    assert image["Labels"]["org.opencontainers.image.version"] == VERSION
    # What a container runtime starts: the entrypoint with the default arguments.
    assert "usage: streams" in run_in(container, *image["Entrypoint"], *image["Cmd"])
    assert run_in(container, "id", "-u").strip() == "10001"
    # The schemas come from the installed wheel, not from a checkout.
    where = run_in(
        container,
        "python",
        "-c",
        "from streams.avro.store import default_store, default_schema_dir;"
        "print(default_schema_dir(), len(default_store().subjects()))",
    )
    directory, subjects = where.split()
    assert directory == "/opt/streams/lib/python3.11/site-packages/streams/_schemas"
    assert int(subjects) == len([p for p in (ROOT / "schemas").iterdir() if p.is_dir()])


def test_the_image_migrates_the_database(
    container: str, real_stack: harness.Stack, image: dict[str, Any]
) -> None:
    name = f"image_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(real_stack.admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        dsn = harness.dsn_for(real_stack.admin_dsn, name)
        # What the migration Job gets from the ConfigMap and the Secret.
        env = {"DATABASE_URL": dsn, "KAFKA_BOOTSTRAP_SERVERS": real_stack.bootstrap}
        run_in(container, *image["Entrypoint"], "db", "migrate", env=env)
        with psycopg.connect(dsn) as conn:
            applied = conn.execute("SELECT version FROM streams_migrations ORDER BY 1").fetchall()
            outbox = conn.execute("SELECT to_regclass('outbox_backfill_state')").fetchone()
        assert [v for (v,) in applied] == [m.version for m in discover()]
        assert outbox is not None and outbox[0] is not None
    finally:
        harness.drop_database(real_stack.admin_dsn, name)


def health(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            answer: dict[str, Any] = json.loads(r.read())
            return answer
    except OSError:
        return {}


def test_a_worker_in_the_image_becomes_ready(
    container: str, settings: Settings, image: dict[str, Any], tmp_path: Path
) -> None:
    """The image's main workload: a worker joins the session's broker and takes partitions."""
    env = {
        k: v
        for k, v in harness.env_for(settings).items()
        if k.startswith(("STREAMS_", "KAFKA_", "DATABASE_URL"))
    }
    env["STREAMS_STATE_DIR"] = "/var/lib/streams"  # the image's writable home
    flags = [f"--env={k}={v}" for k, v in env.items()]
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                "buildah",
                "run",
                "--isolation",
                "chroot",
                *flags,
                container,
                "--",
                *image["Entrypoint"],
                "worker",
            ],
            env=ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # buildah and the worker under it stop together
        )
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            return health(settings.web_port).get("status") == "ready"

        harness.wait_for(ready, timeout=180, interval=0.5, what="the worker in the image")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
