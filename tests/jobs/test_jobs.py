"""Jobs end to end: a worker running the jobs agent and a relay pumping delayed runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from streams import client
from streams.dlq.headers import H_REASON
from streams.publisher import Publisher
from streams.settings import Settings
from tests.jobs import sample_jobs
from tests.relay.support import TopicReader, start_relay
from tests.support import harness

JOBS_ONLY = {"STREAMS_AGENTS": "jobs", "STREAMS_JOB_MODULES": "tests.jobs.sample_jobs"}


@pytest.fixture
def jobs_stack(
    settings: Settings,
    publisher: Publisher,
    processes: list[harness.Proc],
    tmp_path: Path,
    worker: Callable[..., harness.Proc],
) -> Iterator[str]:
    dsn = settings.database_url.get()
    with psycopg.connect(dsn) as conn:
        conn.execute(sample_jobs.TABLE)
    client.set_publisher(publisher)
    start_relay(settings, processes, tmp_path / "relay.log")
    worker(**JOBS_ONLY)
    try:
        yield dsn
    finally:
        client.set_publisher(None)


def runs(dsn: str, job: str, run: str) -> list[tuple[str, int, str | None]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT job_id, attempt, parent_id FROM job_runs WHERE job = %s AND run = %s"
            " ORDER BY id",
            (job, run),
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def test_bad_arguments_raise_type_error_before_anything_is_sent() -> None:
    flaky = sample_jobs.flaky
    with pytest.raises(TypeError, match="fail_times"):
        flaky.delay(run="x", fail_times="2")
    with pytest.raises(TypeError, match="run"):
        flaky.delay(fail_times=2)
    with pytest.raises(TypeError, match=r"bogus.*unknown field"):
        flaky.delay(run="x", fail_times=2, bogus=1)
    with pytest.raises(TypeError, match="set"):
        flaky.apply_async({"run": {"a"}, "fail_times": 1}, countdown=5)
    with pytest.raises(ValueError, match="maximum delay"):
        flaky.apply_async({"run": "x", "fail_times": 1}, countdown=90 * 86400)


def test_a_job_that_fails_twice_then_succeeds_schedules_its_next_task_exactly_once(
    jobs_stack: str,
) -> None:
    dsn = jobs_stack
    sample_jobs.flaky.delay(run="a", fail_times=2)
    harness.wait_for(lambda: runs(dsn, "test.next", "a"), 30, 0.2, "the follow-on ran")
    time.sleep(2.0)  # a second follow-on would have come by now (0.2 s countdown)
    attempts = runs(dsn, "test.flaky", "a")
    assert [a for _, a, _ in attempts] == [1, 2, 3]
    follow_ons = runs(dsn, "test.next", "a")
    assert len(follow_ons) == 1
    parent = attempts[0][0]
    assert follow_ons[0] == (f"{parent}.1", 1, parent)


def test_a_job_that_never_works_is_dead_lettered_and_schedules_nothing(
    jobs_stack: str, settings: Settings
) -> None:
    dsn = jobs_stack
    reader = TopicReader(settings, ["dead-letters"])
    try:
        sample_jobs.hopeless.delay(run="b")
        dead = reader.wait_for(lambda rs: len(rs) >= 1, 30, "a dead letter")
        # RetryPolicy.decide's reason: the handler raised on every attempt.
        assert dead[0].headers[H_REASON] == b"handler"
        assert b"'test.hopeless' failed after 2 attempts" in b" ".join(dead[0].headers.values())
        assert [a for _, a, _ in runs(dsn, "test.hopeless", "b")] == [1, 2]
        time.sleep(1.0)
        assert runs(dsn, "test.next", "b") == []
    finally:
        reader.close()


def test_an_unknown_job_is_dead_lettered_with_its_name(
    jobs_stack: str, settings: Settings, publisher: Publisher
) -> None:
    reader = TopicReader(settings, ["dead-letters"])
    try:
        rec = {"job": "no.such.job", "job_id": "x1", "attempt": 1, "args": b"", "parent_id": None}
        publisher.publish("jobs", rec, key="x1")
        dead = reader.wait_for(lambda rs: len(rs) >= 1, 30, "a dead letter")
        assert b"unknown job 'no.such.job'" in b" ".join(dead[0].headers.values())
    finally:
        reader.close()


def test_apply_async_with_a_connection_runs_only_after_commit(jobs_stack: str) -> None:
    dsn = jobs_stack
    with psycopg.connect(dsn) as conn:
        sample_jobs.next_step.apply_async({"run": "rolled-back"}, conn=conn)
        conn.rollback()
        sample_jobs.next_step.apply_async({"run": "c"}, conn=conn, countdown=1.0)
        conn.commit()
    harness.wait_for(lambda: runs(dsn, "test.next", "c"), 30, 0.2, "the committed run")
    assert runs(dsn, "test.next", "rolled-back") == []
