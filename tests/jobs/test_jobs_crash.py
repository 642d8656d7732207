"""kill -9 of a worker running jobs with follow-ons under load: nothing lost, nothing twice.

A run can be repeated after a crash (at least once), but what it stores for later has
deterministic ids (follow-on ``<job_id>.1``, retry ``<job_id>#<attempt>``), so each
follow-on and each retry reaches the ``jobs`` topic exactly once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from streams import client
from streams.publisher import Publisher
from streams.settings import Settings
from tests.jobs import sample_jobs
from tests.jobs.test_jobs import JOBS_ONLY
from tests.relay.support import TopicReader, start_relay
from tests.support import harness

RUNS = 300


@pytest.fixture
def relay_running(
    settings: Settings, publisher: Publisher, processes: list[harness.Proc], tmp_path: Path
) -> Iterator[str]:
    dsn = settings.database_url.get()
    with psycopg.connect(dsn) as conn:
        conn.execute(sample_jobs.TABLE)
    client.set_publisher(publisher)
    start_relay(settings, processes, tmp_path / "relay.log")
    try:
        yield dsn
    finally:
        client.set_publisher(None)


def counts(dsn: str, job: str) -> Counter[str]:
    """Runs per ``run`` argument (a repeated run counts twice)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT run FROM job_runs WHERE job = %s", (job,)).fetchall()
    return Counter(r[0] for r in rows)


def parents(dsn: str) -> dict[str, str]:
    """The job id of each ``test.flaky`` run, by its ``run`` argument."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT run, job_id FROM job_runs WHERE job = 'test.flaky'").fetchall()
    return {r[0]: r[1] for r in rows}


@pytest.mark.slow  # `make test-slow` (CI runs it): a load or kill -9 test
def test_kill_9_under_load_loses_no_job_and_schedules_no_follow_on_twice(
    relay_running: str, settings: Settings, worker: Callable[..., harness.Proc]
) -> None:
    dsn = relay_running
    reader = TopicReader(settings, ["jobs"])
    try:
        first = worker(**JOBS_ONLY)
        # Every third run fails once: its retry is stored for later too.
        for n in range(RUNS):
            sample_jobs.flaky.delay(run=f"k{n}", fail_times=1 if n % 3 == 0 else 0)
        harness.wait_for(
            lambda: len(counts(dsn, "test.flaky")) >= RUNS // 5, 60, 0.05, "a fifth of the runs"
        )
        first.kill9()
        killed_at = len(counts(dsn, "test.flaky"))
        worker(**JOBS_ONLY)

        harness.wait_for(
            lambda: len(counts(dsn, "test.next")) == RUNS, 180, 0.5, "every follow-on ran"
        )
        reader.drain(2.0)  # a second copy of anything would be in by now (0.3 s delays)
    finally:
        reader.close()

    assert killed_at < RUNS  # the kill came under load, not after the work
    ids = parents(dsn)
    assert len(ids) == RUNS  # no job lost
    on_topic = Counter((r.value["job_id"], r.value["attempt"]) for r in reader.records)
    follow_ons = {ids[f"k{n}"] + ".1" for n in range(RUNS)}
    assert {k: c for k, c in on_topic.items() if k[0] in follow_ons} == {
        (f, 1): 1 for f in follow_ons
    }  # each follow-on was sent once
    retried = {ids[f"k{n}"] for n in range(0, RUNS, 3)}
    assert {k: c for k, c in on_topic.items() if k[1] == 2} == {(j, 2): 1 for j in retried}
    # Each succeeded run scheduled exactly its own follow-on (a failed attempt none).
    with psycopg.connect(dsn) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM scheduled_messages WHERE dedupe_id LIKE 'job:%%.1'"
        ).fetchone()
    assert stored == (RUNS,)
    # Runs repeated after the kill (redelivered past the last commit) are allowed: the
    # dedupe ids above are what kept their follow-ons and retries single.
    attempts = RUNS + len(retried)
    repeated = sum(counts(dsn, "test.flaky").values()) - attempts
    print(f"killed after {killed_at} of {RUNS} runs; {repeated} run attempts repeated")
