-- A flush mark also keeps the timestamp of the record just below it (offset
-- next_offset - 1), as the log stores it. A new log (broker restarted, topic
-- recreated) that has grown past an old mark before a worker looked has another
-- record there: the mark is recognised as another log's and voided, where the
-- "beyond the end" check alone would skip the new increments as already applied.
-- NULL: written by a worker before 0.2.0 (only the end check applies).
ALTER TABLE buffer_flush_marks
    ADD COLUMN IF NOT EXISTS last_timestamp_ms bigint;
