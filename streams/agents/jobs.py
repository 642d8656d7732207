"""The jobs agent: runs declared jobs from the ``jobs`` topic.

Topic ``jobs`` (key: job id) -> look the job up by name -> decode its arguments ->
run its handler under its deadline -> on success, store its follow-ons; on a failure
its retry policy allows, store the next attempt (a delayed message); otherwise, or for
an unknown job, a dead letter. Retries wait in ``scheduled_messages``, not in this
worker, so a long retry delay never holds up the partition.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from streams import tracing
from streams.agents.base import AgentSpec, RetryPolicy, attach
from streams.delayed.store import Prepared, insert_many_async
from streams.errors import DecodeError, PermanentFailure, RetryLater
from streams.jobs import registry
from streams.jobs.context import JobContext
from streams.jobs.declare import Job, RetryLike
from streams.jobs.metrics import RUNS
from streams.runtime import Runtime
from streams.silo import ALL_SILOS

log = logging.getLogger(__name__)

# The wrapper retries only what escapes a run: database or broker trouble while storing
# follow-ons or retries (the run is then repeated; follow-on ids make that harmless).
STORE_RETRY = RetryPolicy(times=8, delay=0.5, backoff=2.0, max_delay=30.0)
DEFAULT_RETRY = RetryPolicy()


class JobRunner:
    """Runs one ``jobs`` record: dispatch by name, retry policy, deadline, follow-ons."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def handle(self, msg: Any) -> None:
        rec = msg.value
        job = self._job(rec["job"])
        try:
            kwargs = job.decode_args(rec["args"])
        except DecodeError as exc:
            raise PermanentFailure(f"job {job.name!r}: arguments do not decode: {exc}") from exc
        ctx = JobContext(job, rec["job_id"], rec["attempt"], rec.get("parent_id"))
        retry: RetryLike = job.retry or DEFAULT_RETRY
        retryable: tuple[type[BaseException], ...] = (TimeoutError, RetryLater, *retry.on)
        try:
            await asyncio.wait_for(job.call(ctx, kwargs), job.deadline)
        except retry.ignore:
            RUNS.labels(job.name, "ignored").inc()
            return
        except PermanentFailure:
            RUNS.labels(job.name, "failure").inc()
            raise
        except retryable as exc:
            await self._failed(job, rec, retry, exc)
            return
        await self._store(
            [(f.record, f.delay, f"job:{f.record['job_id']}") for f in ctx.follow_ons]
        )
        RUNS.labels(job.name, "success").inc()

    def _job(self, name: str) -> Job:
        job = registry.get(name)
        if job is None:
            raise PermanentFailure(
                f"unknown job {name!r}: not declared in this worker "
                f"(known: {', '.join(registry.names()) or 'none'}; see STREAMS_JOB_MODULES)"
            )
        silo = self.runtime.settings.silo_mode
        if not silo.allows(job.silos):
            raise PermanentFailure(f"job {name!r} does not run in the {silo.value} silo")
        return job

    async def _failed(
        self, job: Job, rec: dict[str, Any], retry: RetryLike, exc: BaseException
    ) -> None:
        attempt = int(rec["attempt"])
        reason = (
            f"exceeded its {job.deadline}s deadline" if isinstance(exc, TimeoutError) else repr(exc)
        )
        if attempt > retry.times:
            RUNS.labels(job.name, "failure").inc()
            raise PermanentFailure(
                f"job {job.name!r} failed after {attempt} attempts: {reason}"
            ) from exc
        delay = retry.delay_for(attempt)
        if isinstance(exc, RetryLater) and exc.delay is not None:
            delay = exc.delay
        nxt = {**rec, "attempt": attempt + 1}
        await self._store([(nxt, delay, f"job:{rec['job_id']}#{attempt + 1}")])
        RUNS.labels(job.name, "retry").inc()
        log.warning(
            "jobs.run.retry",
            extra={
                "job": job.name,
                "job_id": rec["job_id"],
                "attempt": attempt,
                "delay": delay,
                "error": reason,
            },
        )

    async def _store(self, items: list[tuple[dict[str, Any], float, str]]) -> None:
        """Store runs to send later, in one transaction (deduplicated by id)."""
        if not items:
            return
        msgs: list[tuple[Prepared, float, str | None]] = [
            (self._prepare(r), d, i) for r, d, i in items
        ]
        pool = await self.runtime.pool()
        async with pool.connection() as conn:
            await insert_many_async(conn, msgs)

    def _prepare(self, rec: dict[str, Any]) -> Prepared:
        # The trace context of this run is current: follow-ons become its child spans.
        headers = tracing.metadata_headers(self.runtime.settings.producer_name, rec["attempt"])
        value = self.runtime.codec.encode("jobs", rec)
        return Prepared(self.runtime.topic("jobs"), value, rec["job_id"].encode(), headers)


def install(app: Any, runtime: Runtime) -> None:
    """Load the job modules and attach the jobs agent."""
    known = registry.load(runtime.settings.job_modules)
    log.info("jobs.loaded", extra={"jobs": known})
    runner = JobRunner(runtime)
    attach(
        app,
        runtime,
        AgentSpec(
            name="jobs",
            topic="jobs",
            silos=ALL_SILOS,
            handler=runner.handle,
            retry=STORE_RETRY,
            deadline=None,
        ),
    )
