"""The wheel alone works: built with `pip wheel`, installed in a clean venv, it publishes.

The venv is created without system site-packages and gets the wheel and its
dependencies from the package index pip is configured with here (about 40 s), so
nothing from the checkout or from the project's own .venv can hide a missing file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams import kafka_config
from streams.avro.codec import SingleObjectCodec
from streams.avro.store import default_store
from streams.settings import Settings
from tests.support import harness

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"

PUBLISH = """
import json, streams
from streams.client import publish
value = {"action": "created", "sender": "Group", "instance_id": 41,
         "organization_id": 7, "occurred_at": 0}
d = publish("resource-changes", value, key=7)
print(json.dumps({"file": streams.__file__, "topic": d.topic,
                  "partition": d.partition, "offset": d.offset}))
"""


def build_wheel(out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        timeout=120,
    )
    (wheel,) = out.glob("streams-*.whl")
    return wheel


def test_the_wheel_carries_every_schema(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"streams/_schemas/{p.relative_to(SCHEMAS)}" for p in SCHEMAS.rglob("*.avsc")}
    assert expected, "no schemas in the checkout"
    assert expected <= names, sorted(expected - names)
    assert any(n.startswith("streams/db/migrations/") and n.endswith(".sql") for n in names)


def read_one(settings: Settings, topic: str, partition: int, offset: int) -> bytes:
    consumer = Consumer(kafka_config.consumer(settings, f"wheel-{uuid.uuid4()}"))
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        for _ in range(20):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                return msg.value() or b""
        raise AssertionError(f"nothing at {topic}[{partition}]@{offset}")
    finally:
        consumer.close()


@pytest.mark.slow
def test_the_wheel_installed_in_a_clean_venv_publishes(tmp_path: Path, settings: Settings) -> None:
    wheel = build_wheel(tmp_path / "dist")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    env = harness.env_for(settings)
    # Nothing may lead back to the checkout: no PYTHONPATH, no schema override, cwd elsewhere.
    for name in ("PYTHONPATH", "STREAMS_SCHEMA_DIR", "VIRTUAL_ENV"):
        env.pop(name, None)
    run = subprocess.run(
        [str(python), "-c", PUBLISH],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    delivered = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(delivered["file"]).is_relative_to(venv), delivered["file"]
    assert not Path(delivered["file"]).is_relative_to(ROOT)
    assert delivered["topic"] == settings.topic_prefix + "resource-changes"
    value = read_one(settings, delivered["topic"], delivered["partition"], delivered["offset"])
    decoded = SingleObjectCodec(default_store()).decode("resource-changes", value)
    assert decoded["instance_id"] == 41
    assert decoded["organization_id"] == 7
