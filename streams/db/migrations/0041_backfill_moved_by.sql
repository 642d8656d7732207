-- Who moved a backfill processing state last (issue 14): a token per compare-and-set.
-- When the answer to a move is lost with its connection, the batch's retry re-reads
-- the state and learns from this token whether its own move committed (processed),
-- instead of counting the batch as stale.
ALTER TABLE outbox_backfill_state ADD COLUMN IF NOT EXISTS moved_by text;
