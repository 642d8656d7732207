"""The jobs agent: runs declared jobs from the ``jobs`` topic.

Topic ``jobs`` (key: job id) -> look the job up by name -> decode its arguments ->
run its handler under its deadline -> on success, store its follow-ons; on a failure,
its retry policy decides (``RetryPolicy.decide``, as for every agent): store the next
attempt (a delayed message), ignore, or dead-letter with the decision's reason
(``handler``, ``deadline``, ``retry_exhausted``, ``permanent``); an unknown job is
dead-lettered too. Retries wait in ``scheduled_messages``, not in this worker, so a
long retry delay never holds up the partition. Follow-ons and retries carry
deterministic dedupe ids (``job:<id>.<n>``, ``job:<id>#<attempt>``): a run repeated
after a crash stores neither twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from streams.agents.base import AgentSpec, DeadLetter, Ignore, Message, Retry, RetryPolicy, attach
from streams.agents.batch_io import dead_letter
from streams.agents.deferred import Later, store_later
from streams.errors import DeadlineExceeded, DecodeError, PermanentFailure
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

    async def handle(self, msg: Message) -> None:
        rec = msg.value
        job = self._job(rec["job"])
        try:
            kwargs = job.decode_args(rec["args"])
        except DecodeError as exc:
            raise PermanentFailure(f"job {job.name!r}: arguments do not decode: {exc}") from exc
        ctx = JobContext(job, rec["job_id"], rec["attempt"], rec.get("parent_id"))
        try:
            await asyncio.wait_for(job.call(ctx, kwargs), job.deadline)
        except TimeoutError as exc:  # reported as the deadline it is
            await self._failed(job, msg, _past_deadline(job, exc))
            return
        except Exception as exc:
            await self._failed(job, msg, exc)
            return
        # Deterministic ids: a run repeated after a crash stores its follow-ons once.
        follow_ons = [
            Later("jobs", f.record, f.record["job_id"], f.delay, f"job:{f.record['job_id']}")
            for f in ctx.follow_ons
        ]
        traced = [dataclasses.replace(f, trace=msg.trace) for f in follow_ons]
        await store_later(self.runtime, traced)
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

    async def _failed(self, job: Job, msg: Message, exc: Exception) -> None:
        """What the job's retry policy decides for a failed attempt; its follow-ons are
        dropped (a failed run schedules nothing)."""
        rec = msg.value
        attempt = int(rec["attempt"])
        retry: RetryLike = job.retry or DEFAULT_RETRY
        decision = retry.decide(exc, attempt)
        if isinstance(decision, Ignore):
            RUNS.labels(job.name, "ignored").inc()
            return
        if isinstance(decision, Retry):
            nxt = {**rec, "attempt": attempt + 1}
            dedupe = f"job:{rec['job_id']}#{attempt + 1}"
            later = Later("jobs", nxt, rec["job_id"], decision.delay, dedupe, attempt + 1)
            await store_later(self.runtime, [dataclasses.replace(later, trace=msg.trace)])
            RUNS.labels(job.name, "retry").inc()
            log.warning(
                "jobs.run.retry",
                extra={
                    "job": job.name,
                    "job_id": rec["job_id"],
                    "attempt": attempt,
                    "delay": decision.delay,
                    "error": repr(exc),
                },
            )
            return
        if not isinstance(decision, DeadLetter):
            raise TypeError(f"job {job.name!r}: retry policy decided {decision!r}")
        RUNS.labels(job.name, "failure").inc()
        failure = decision.failure
        text = f"job {job.name!r} failed after {attempt} attempts: {failure.message}"
        await dead_letter(self.runtime, "jobs", msg, dataclasses.replace(failure, message=text))


def _past_deadline(job: Job, exc: TimeoutError) -> Exception:
    """The run's deadline as the failure (dead-letter reason ``deadline`` when spent)."""
    if isinstance(exc, DeadlineExceeded) or job.deadline is None:
        return exc
    return DeadlineExceeded(job.deadline)


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
