-- Outbox backfill (issue 4): re-emit outbox rows for every instance of the
-- outbox-producing tables when their replication version rises.

-- Processing state per table, moved only forward ((version, lower) never decreases)
-- by compare-and-set. lower: the next id to backfill; version: the replication version
-- being brought up to. progress: last instance written by the batch now being processed
-- (a re-delivered batch resumes after it). next_lower / next_version / scheduled_at: how
-- far the scheduler has emitted batches that are still in flight.
CREATE TABLE IF NOT EXISTS outbox_backfill_state (
    table_name text PRIMARY KEY,
    lower bigint NOT NULL DEFAULT 0,
    version integer NOT NULL DEFAULT 1,
    progress bigint,
    next_lower bigint,
    next_version integer,
    scheduled_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Operator override of the target replication version: target = min(override, coded).
-- A row here holds a table back (e.g. during a rollout) until it is raised or deleted.
CREATE TABLE IF NOT EXISTS outbox_backfill_overrides (
    table_name text PRIMARY KEY,
    target_version integer NOT NULL,
    note text NOT NULL DEFAULT '',
    set_at timestamptz NOT NULL DEFAULT now()
);

-- Backfill rows emitted per minute and silo (the budget: max rate - regular drain - these).
CREATE TABLE IF NOT EXISTS outbox_backfill_minutes (
    minute timestamptz NOT NULL,
    silo text NOT NULL,
    emitted_rows bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, silo)
);
