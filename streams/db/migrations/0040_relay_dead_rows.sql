-- Relay dead letters too large for the dead-letter topic (issue 14): the outbox row is
-- kept whole here, with its reason, in the transaction that deletes it from its outbox
-- table, instead of a dead letter cut to fit. `streams dlq list` shows these rows and
-- `streams dlq replay --to-outbox` puts them back (once: restored_at).
CREATE TABLE IF NOT EXISTS relay_dead_rows (
    outbox_table text NOT NULL,
    outbox_id bigint NOT NULL,
    row_json jsonb NOT NULL,          -- the row as the relay's dead letter would carry it
    reason text NOT NULL,
    error_type text NOT NULL,
    error_message text NOT NULL,
    size_bytes bigint NOT NULL,       -- the dead letter's size that did not fit
    dead_at timestamptz NOT NULL DEFAULT now(),
    restored_at timestamptz,
    PRIMARY KEY (outbox_table, outbox_id)
);
CREATE INDEX IF NOT EXISTS relay_dead_rows_unrestored
    ON relay_dead_rows (dead_at) WHERE restored_at IS NULL;
