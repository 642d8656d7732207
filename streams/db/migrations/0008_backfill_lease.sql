-- One scheduler of backfill batches per silo at a time (issue 15): `streams backfill`
-- holds this lease while it runs, renewing it every few seconds, and the workers'
-- scheduler timer yields while it is live, so the command's --rate is the only rate.
-- A command that dies leaves a lease that simply expires.
CREATE TABLE IF NOT EXISTS outbox_backfill_lease (
    silo text PRIMARY KEY,
    holder text NOT NULL,
    max_rate integer NOT NULL,
    expires_at timestamptz NOT NULL
);
