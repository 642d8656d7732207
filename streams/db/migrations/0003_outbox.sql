-- Transactional outbox (issue 3). Services insert rows in the same transaction as their
-- domain change; `streams relay` publishes them to Kafka and deletes them after the ack.
-- region_outbox: written in the region silo. control_outbox: written in the control silo,
-- each row aimed at one region (region_name).
-- scheduled_from / scheduled_for: a shard whose publish fails is pushed back by doubling
-- (scheduled_for - scheduled_from); a shard is due when its oldest row is due.
-- backfill: the row was written by the outbox backfill, not by a regular change; the
-- backfill budget only subtracts regular rows.
CREATE TABLE IF NOT EXISTS region_outbox (
    id bigserial PRIMARY KEY,
    shard_scope text NOT NULL,
    shard_identifier bigint NOT NULL,
    category text NOT NULL,
    object_identifier bigint NOT NULL,
    payload jsonb,
    backfill boolean NOT NULL DEFAULT false,
    scheduled_from timestamptz NOT NULL DEFAULT now(),
    scheduled_for timestamptz NOT NULL DEFAULT now(),
    date_added timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS region_outbox_shard_object_idx
    ON region_outbox (shard_scope, shard_identifier, category, object_identifier);
CREATE INDEX IF NOT EXISTS region_outbox_shard_scheduled_idx
    ON region_outbox (shard_scope, shard_identifier, scheduled_for);
CREATE INDEX IF NOT EXISTS region_outbox_shard_id_idx
    ON region_outbox (shard_scope, shard_identifier, id);

CREATE TABLE IF NOT EXISTS control_outbox (
    id bigserial PRIMARY KEY,
    shard_scope text NOT NULL,
    shard_identifier bigint NOT NULL,
    category text NOT NULL,
    object_identifier bigint NOT NULL,
    region_name text NOT NULL,
    payload jsonb,
    backfill boolean NOT NULL DEFAULT false,
    scheduled_from timestamptz NOT NULL DEFAULT now(),
    scheduled_for timestamptz NOT NULL DEFAULT now(),
    date_added timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS control_outbox_shard_object_idx
    ON control_outbox (shard_scope, shard_identifier, category, object_identifier);
CREATE INDEX IF NOT EXISTS control_outbox_shard_scheduled_idx
    ON control_outbox (shard_scope, shard_identifier, scheduled_for);
CREATE INDEX IF NOT EXISTS control_outbox_shard_id_idx
    ON control_outbox (shard_scope, shard_identifier, id);

-- Rows the relay claimed per minute and outbox table, split into regular and backfill
-- rows: the backfill scheduler's budget is max rate minus the regular rows of this minute.
-- One row per relay slot so concurrent drains never wait on each other's counter.
CREATE TABLE IF NOT EXISTS outbox_drain_minutes (
    minute timestamptz NOT NULL,
    outbox_table text NOT NULL,
    slot text NOT NULL,
    regular_rows bigint NOT NULL DEFAULT 0,
    backfill_rows bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, outbox_table, slot)
);
