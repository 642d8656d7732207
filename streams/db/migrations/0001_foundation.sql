-- Foundation: a record of dead-letter replays, so `streams dlq replay` re-publishes a
-- dead letter once (replaying twice would duplicate work downstream).
CREATE TABLE IF NOT EXISTS streams_dlq_replays (
    dlq_topic text NOT NULL,
    dlq_partition integer NOT NULL,
    dlq_offset bigint NOT NULL,
    source_topic text NOT NULL,
    replayed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);
