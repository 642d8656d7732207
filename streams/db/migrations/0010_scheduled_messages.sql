-- Delayed and after-commit messages (issue 12). A row is one encoded message waiting for
-- its due time; the pump in `streams relay` publishes due rows and then deletes them
-- (rows with a dedupe id are kept, marked delivered, so a repeated schedule of the same
-- id stays a no-op until the rows are trimmed).
-- value / headers are the bytes the broker will receive: values are schema-checked and
-- encoded when they are scheduled, so the pump only moves bytes.
CREATE TABLE IF NOT EXISTS scheduled_messages (
    id bigserial PRIMARY KEY,
    due_at timestamptz NOT NULL,
    topic text NOT NULL,            -- full (prefixed) topic name
    key bytea,
    value bytea,
    header_names text[] NOT NULL DEFAULT '{}',
    header_values bytea[] NOT NULL DEFAULT '{}',
    dedupe_id text UNIQUE,
    delivered_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- The pump reads only pending rows, in due order.
CREATE INDEX IF NOT EXISTS scheduled_messages_pending_idx
    ON scheduled_messages (due_at) WHERE delivered_at IS NULL;
CREATE INDEX IF NOT EXISTS scheduled_messages_delivered_idx
    ON scheduled_messages (delivered_at) WHERE delivered_at IS NOT NULL;
