"""The instrumented-agent framework in a real worker, through a probe extension agent."""

from __future__ import annotations

import random
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from streams.avro.codec import MAGIC
from streams.dev.stack import free_port
from streams.dlq import replay as dlq
from streams.publisher import Publisher
from streams.settings import Settings
from streams.silo import SiloMode
from tests.support import harness
from tests.support import probe_agent as probe


@pytest.fixture(scope="module")
def probe_settings(real_stack: harness.Stack, template_db: str) -> Iterator[Settings]:
    with harness.probe_settings(real_stack, template_db) as s:
        yield s


@pytest.fixture(scope="module")
def probe_worker(
    probe_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[harness.Proc]:
    log = tmp_path_factory.mktemp("probe") / "worker.log"
    proc = harness.start_worker(probe_settings, log)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def pub(probe_settings: Settings) -> Iterator[Publisher]:
    p = Publisher(probe_settings)
    yield p
    p.close()


def effects(settings: Settings, ids: list[int]) -> dict[int, tuple[str, int, str]]:
    with psycopg.connect(settings.database_url.get()) as conn:
        try:
            rows = conn.execute(
                "SELECT id, note, attempt, traceparent FROM probe_effects WHERE id = ANY(%s)",
                (ids,),
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return {}
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def letters(settings: Settings, key_prefix: bytes) -> list[dlq.DeadLetter]:
    return [d for d in dlq.read(settings) if (d.key or b"").startswith(key_prefix)]


def test_round_trip_publish_to_agent_to_database(
    probe_worker: harness.Proc, probe_settings: Settings, pub: Publisher
) -> None:
    ids = list(range(1000, 1020))
    for i in ids:
        pub.publish(probe.TOPIC, {"id": i, "action": "ok", "note": f"n{i}"}, key=str(i))
    got = harness.wait_for(
        lambda: len(effects(probe_settings, ids)) == 20 and effects(probe_settings, ids),
        30,
        what="20 effects",
    )
    assert got[1005][0] == "n1005"
    # The handler saw the trace context the publisher put in the headers.
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", got[1005][2])


def test_malformed_payloads_all_dead_lettered_good_ones_processed(
    probe_worker: harness.Proc, probe_settings: Settings, pub: Publisher
) -> None:
    rng = random.Random(1)
    topic = probe_settings.topic_prefix + probe.TOPIC
    run = uuid.uuid4().hex[:6].encode()
    good_ids = list(range(2000, 2050))
    bad = 0
    for n in range(1000):
        kind = n % 4
        if kind == 0:
            blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
        elif kind == 1:  # right marker, unknown fingerprint
            blob = MAGIC + rng.randbytes(8) + b"\x02"
        elif kind == 2:  # known fingerprint, corrupt body
            good = pub.codec.encode(probe.TOPIC, {"id": 1, "action": "ok", "note": ""})
            blob = good[:10] + rng.randbytes(rng.randrange(0, 3)) + b"\xff" * 12
        else:
            blob = b'{"id": 1, "action": "ok"}'
        pub.send_raw(topic, blob, key=run + b"-bad-" + str(n).encode(), headers=[])
        bad += 1
        if n % 20 == 0:
            i = good_ids[n // 20]
            pub.send(probe.TOPIC, {"id": i, "action": "ok", "note": "good"}, key=str(i))
    pub.flush()
    harness.wait_for(
        lambda: len(effects(probe_settings, good_ids)) == len(good_ids),
        60,
        what="good messages processed",
    )
    dead = harness.wait_for(
        lambda: (d := letters(probe_settings, run + b"-bad-")) and len(d) >= bad and d,
        60,
        interval=1.0,
        what="1000 dead letters",
    )
    assert len(dead) == bad
    assert {d.reason for d in dead} == {"decode"}
    assert all(d.header("dlq.error_message") for d in dead)
    assert all(d.header("dlq.agent") == "probe" for d in dead)
    assert all(d.source_topic == topic for d in dead)
    assert probe_worker.alive()


def test_handler_failures_retry_then_dead_letter_with_original_bytes(
    probe_worker: harness.Proc, probe_settings: Settings, pub: Publisher
) -> None:
    key = f"fail-{uuid.uuid4().hex[:6]}".encode()
    value = {"id": 3001, "action": "fail", "note": "x"}
    pub.publish(probe.TOPIC, value, key=key)
    [letter] = harness.wait_for(lambda: letters(probe_settings, key), 30, what="dead letter")
    assert letter.reason == "handler"
    assert letter.header("dlq.error_type") == "ValueError"
    assert "asked to fail" in letter.header("dlq.error_message")
    assert pub.codec.decode(probe.TOPIC, letter.value or b"") == value
    assert letter.header("streams-message-id")  # original headers kept


def test_deadline_exceeded_is_dead_lettered(
    probe_worker: harness.Proc, probe_settings: Settings, pub: Publisher
) -> None:
    key = f"slow-{uuid.uuid4().hex[:6]}".encode()
    pub.publish(probe.TOPIC, {"id": 3002, "action": "slow", "note": ""}, key=key)
    [letter] = harness.wait_for(lambda: letters(probe_settings, key), 30, what="dead letter")
    assert letter.reason == "deadline"
    pub.publish(probe.TOPIC, {"id": 3003, "action": "ok", "note": "after"}, key=b"3003")
    harness.wait_for(lambda: effects(probe_settings, [3003]), 20, what="next message")


def test_dlq_replay_reprocesses_a_fixed_message_once(
    probe_worker: harness.Proc, probe_settings: Settings, pub: Publisher, tmp_path: Path
) -> None:
    key = f"row-{uuid.uuid4().hex[:6]}".encode()
    pub.publish(probe.TOPIC, {"id": 4001, "action": "needs_row", "note": "late"}, key=key)
    [letter] = harness.wait_for(lambda: letters(probe_settings, key), 30, what="dead letter")
    assert letter.reason == "retry_exhausted"
    assert not effects(probe_settings, [4001])
    with psycopg.connect(probe_settings.database_url.get()) as conn:
        conn.execute("INSERT INTO probe_rows (id) VALUES (4001)")
    env = harness.env_for(probe_settings)
    cmd = [
        "dlq",
        "replay",
        "--topic",
        probe.TOPIC,
        "--reason",
        "retry_exhausted",
        "--key",
        key.decode(),
    ]
    proc = harness.spawn(cmd, env, tmp_path / "replay.log")
    assert proc.popen.wait(60) == 0, proc.output()
    assert "replayed 1 dead letters" in proc.output()
    got = harness.wait_for(lambda: effects(probe_settings, [4001]), 30, what="replayed effect")
    assert got[4001][0] == "late"
    # Replaying again re-publishes nothing: the replay was recorded.
    again = harness.spawn(cmd, env, tmp_path / "replay2.log")
    assert again.popen.wait(60) == 0
    assert "replayed 0 dead letters" in again.output()
    listing = harness.spawn(["dlq", "list", "--topic", probe.TOPIC], env, tmp_path / "list.log")
    assert listing.popen.wait(60) == 0
    assert "retry_exhausted" in listing.output()


def test_metrics_endpoint_shows_real_agent_values(
    probe_worker: harness.Proc, probe_settings: Settings, pub: Publisher
) -> None:
    pub.publish(probe.TOPIC, {"id": 5001, "action": "ok", "note": ""}, key=b"5001")
    harness.wait_for(lambda: effects(probe_settings, [5001]), 20, what="effect")
    status, body = probe_worker.get("/metrics")
    text = body.decode()
    assert status == 200

    def sample(name: str, **labels: str) -> float:
        sel = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith(name + "{"):
                got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
                if all(got.get(k) == v for k, v in labels.items()):
                    return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name}{{{sel}}} not in metrics")

    assert sample("streams_agent_messages_total", agent="probe", outcome="success") >= 1
    assert sample("streams_agent_duration_seconds_count", agent="probe") >= 1
    assert sample("streams_agent_duration_seconds_sum", agent="probe") > 0
    assert sample("streams_agent_memory_delta_bytes_count", agent="probe") >= 1


def test_wrong_silo_agent_is_not_started(
    probe_settings: Settings, tmp_path: Path, processes: list[harness.Proc]
) -> None:
    control = probe_settings.with_(
        silo_mode=SiloMode.CONTROL,
        web_port=free_port(),
        app_id=probe_settings.app_id + "-control",
    )
    proc = harness.start_worker(control, tmp_path / "control.log", ready=False)
    processes.append(proc)
    health = harness.wait_for(lambda: _health(proc), 40, 0.25, "control worker web")
    assert health["silo"] == "control"
    assert "probe" in health["skipped_agents"]
    assert "probe" not in health["agents"]
    time.sleep(0.5)
    assert proc.alive()


def _health(proc: harness.Proc) -> dict[str, object] | None:
    try:
        return proc.health() or None
    except OSError:
        return None
