-- Buffered increments (streams.buffers).
-- A flush mark is the next offset of (consumer group, topic, partition) not yet applied.
-- It is advanced in the same transaction as the counters it covers: offsets below it
-- are applied exactly once, offsets at or above it not at all.
CREATE TABLE IF NOT EXISTS buffer_flush_marks (
    consumer_group text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    prev_offset bigint NOT NULL DEFAULT 0,   -- the mark the last flush started from
    next_offset bigint NOT NULL,
    flushes bigint NOT NULL DEFAULT 0,
    increments bigint NOT NULL DEFAULT 0,    -- increments written (not signal_only)
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Summed increments that could not be applied (the row does not exist, or a value the
-- column refuses), kept in the flush's own transaction so nothing is lost or repeated.
CREATE TABLE IF NOT EXISTS buffer_parked (
    id bigserial PRIMARY KEY,
    model text NOT NULL,
    filters jsonb NOT NULL,
    columns jsonb NOT NULL,
    extra jsonb,
    increments bigint NOT NULL,
    reason text NOT NULL,
    source_topic text NOT NULL,
    source_partition integer NOT NULL,
    first_offset bigint NOT NULL,
    last_offset bigint NOT NULL,
    parked_at timestamptz NOT NULL DEFAULT now()
);
