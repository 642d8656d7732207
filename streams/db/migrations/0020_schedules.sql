-- Periodic schedules (issue 12). One row per claimed slot: the primary key makes a slot
-- run at most once across every worker and restart, and the row is written in the same
-- transaction as the work the run enqueues, so a crash never loses or doubles a slot.
-- kind: 'run' (on time), 'catch_up' (stands for missed slots), 'skipped' (missed, not run).
CREATE TABLE IF NOT EXISTS schedule_run (
    schedule text NOT NULL,
    slot timestamptz NOT NULL,
    kind text NOT NULL CHECK (kind IN ('run', 'catch_up', 'skipped')),
    missed integer NOT NULL DEFAULT 0,
    claimed_by text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    duration_ms double precision,
    PRIMARY KEY (schedule, slot)
);

-- Failed runs (the claim rolled back with the run): the last error, for `schedules list`.
CREATE TABLE IF NOT EXISTS schedule_failure (
    schedule text PRIMARY KEY,
    failures bigint NOT NULL DEFAULT 0,
    last_failed_at timestamptz NOT NULL,
    last_slot timestamptz NOT NULL,
    last_error text NOT NULL
);
