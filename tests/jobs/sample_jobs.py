"""Jobs for the tests (loaded by the worker through STREAMS_JOB_MODULES).

Each run writes a row to ``job_runs`` in the worker's database, so the test sees what
ran, how often, and which attempt.
"""

from __future__ import annotations

import os

import psycopg

from streams.agents.base import RetryPolicy
from streams.jobs.context import JobContext
from streams.jobs.declare import job

TABLE = """
CREATE TABLE IF NOT EXISTS job_runs (
    id bigserial PRIMARY KEY, job text NOT NULL, run text NOT NULL,
    job_id text NOT NULL, attempt int NOT NULL, parent_id text
)
"""


def record(ctx: JobContext, run: str) -> None:
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        conn.execute(
            "INSERT INTO job_runs (job, run, job_id, attempt, parent_id) VALUES (%s,%s,%s,%s,%s)",
            (ctx.job.name, run, ctx.job_id, ctx.attempt, ctx.parent_id),
        )


@job("test.next", args={"run": "string"})
def next_step(ctx: JobContext, run: str) -> None:
    record(ctx, run)


@job(
    "test.flaky",
    args={"run": "string", "fail_times": "int", "note": ["null", "string"]},
    retry=RetryPolicy(times=3, delay=0.3, backoff=1.0),
    deadline=10,
)
def flaky(ctx: JobContext, run: str, fail_times: int, note: str | None) -> None:
    """Asks for its follow-on on every attempt, then fails the first ``fail_times``."""
    record(ctx, run)
    ctx.schedule(next_step, {"run": run}, countdown=0.2)
    if ctx.attempt <= fail_times:
        raise RuntimeError(f"attempt {ctx.attempt} fails on purpose")


@job("test.hopeless", args={"run": "string"}, retry=RetryPolicy(times=1, delay=0.2))
async def hopeless(ctx: JobContext, run: str) -> None:
    record(ctx, run)
    ctx.schedule(next_step, {"run": run})
    raise RuntimeError("never works")
