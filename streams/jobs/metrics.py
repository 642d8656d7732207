"""Metrics of job runs (the jobs agent's own metrics come from the agent wrapper)."""

from __future__ import annotations

from streams.metrics import counter

RUNS = counter(
    "streams_jobs_runs_total",
    "Job runs by job and outcome (success, retry, failure, ignored).",
    ("job", "outcome"),
)
