"""What a job handler receives: its run's identity and the follow-ons it asks for."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streams.delayed.due import delay_seconds

if TYPE_CHECKING:
    from streams.jobs.declare import Job


@dataclass(frozen=True)
class FollowOn:
    """A job run to send if, and only if, the current run succeeds."""

    job: Job
    record: dict[str, Any]
    delay: float


@dataclass
class JobContext:
    """One attempt of one job run. Follow-ons are collected per attempt."""

    job: Job
    job_id: str
    attempt: int
    parent_id: str | None = None
    follow_ons: list[FollowOn] = field(default_factory=list)

    def schedule(
        self,
        job: Job,
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: dt.datetime | None = None,
    ) -> str:
        """Ask for ``job`` to run after this run succeeds (NextTask); returns its job id.

        Arguments and delay are checked now (``TypeError``/``ValueError`` fail this
        attempt). The follow-on's id is derived from this run's id and its position,
        so a run that is redelivered or retried never schedules it twice.
        """
        delay = delay_seconds(countdown, eta)
        child_id = f"{self.job_id}.{len(self.follow_ons) + 1}"
        record = job.run_record(kwargs or {}, job_id=child_id, parent_id=self.job_id)
        self.follow_ons.append(FollowOn(job, record, delay))
        return child_id
