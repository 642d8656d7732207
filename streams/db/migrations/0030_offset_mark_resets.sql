-- Offset marks that outlive their log (issue 14).
-- A broker restart (embedded Tansu) or a topic deleted and recreated starts every
-- partition at offset 0 again while PostgreSQL keeps its marks. A mark found beyond
-- its partition's true end is voided (set back to 0) and the void is recorded here,
-- so the increments of the new log are applied instead of skipped as "already applied".
ALTER TABLE buffer_flush_marks
    ADD COLUMN IF NOT EXISTS resets integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS reset_from bigint,          -- the voided mark
    ADD COLUMN IF NOT EXISTS reset_log_end bigint,       -- the partition's end then
    ADD COLUMN IF NOT EXISTS reset_at timestamptz;

-- A replayed dead letter is identified by its offset *and* its timestamp: the same
-- (partition, offset) in a new log is another letter, to be replayed too.
ALTER TABLE streams_dlq_replays
    ADD COLUMN IF NOT EXISTS dlq_timestamp_ms bigint;
