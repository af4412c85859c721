-- One query per stream (its key: the stream's name), progress tied to the checkpoint that
-- made it, ownership by the highest attempt, explicit checkpoint resets, future events.

-- The stream's single query replaces "<stream>_aggregates" under the stream's own name.
UPDATE stream_progress SET query_name = left(query_name, -length('_aggregates'))
 WHERE query_name LIKE '%\_aggregates';
UPDATE stream_batches SET query_name = left(query_name, -length('_aggregates'))
 WHERE query_name LIKE '%\_aggregates';

-- checkpoint_id: Spark's id of the checkpoint whose batches last_batch_id counts (its
-- <checkpoint>/metadata); NULL before the first claim. A checkpoint of another id is
-- refused until a reset names where it starts (stream_checkpoint_resets).
-- checkpoint_start: the starting offsets of that checkpoint's first batch (Spark reads them
-- only while the checkpoint has no offsets of its own).
-- owner_attempt: the supervisor's attempt number of the owning run; a lower one never claims.
ALTER TABLE stream_progress
    ADD COLUMN checkpoint_id text,
    ADD COLUMN checkpoint_start text,
    ADD COLUMN owner_attempt integer NOT NULL DEFAULT 0;

ALTER TABLE stream_batches ADD COLUMN checkpoint_id text, ADD COLUMN phases jsonb;
ALTER TABLE stream_batches DROP CONSTRAINT stream_batches_pkey;
CREATE UNIQUE INDEX stream_batches_checkpoint_batch
    ON stream_batches (query_name, COALESCE(checkpoint_id, ''), batch_id);
CREATE INDEX stream_batches_committed ON stream_batches (committed_at);

-- A reset: "the next new checkpoint of this query starts here". Written by
-- `python -m spotlake.stream_reset`, consumed (checkpoint_id, consumed_at) by the first run
-- that claims the query with a new checkpoint. The previous position stays on record.
CREATE TABLE stream_checkpoint_resets (
    reset_id               bigserial PRIMARY KEY,
    query_name             text NOT NULL,
    starting_from          text NOT NULL,   -- committed, earliest, latest or offsets
    starting_offsets       text NOT NULL,   -- what Spark's startingOffsets gets
    requested_by           text NOT NULL,
    requested_at           timestamptz NOT NULL DEFAULT now(),
    previous_checkpoint_id text,
    previous_last_batch_id bigint,
    checkpoint_id          text,
    consumed_at            timestamptz
);
CREATE INDEX stream_checkpoint_resets_pending ON stream_checkpoint_resets (query_name) WHERE consumed_at IS NULL;

ALTER TABLE click_dead_letters DROP CONSTRAINT click_dead_letters_reason_check;
ALTER TABLE click_dead_letters ADD CONSTRAINT click_dead_letters_reason_check
    CHECK (reason IN ('bad_json', 'missing_field', 'wrong_type', 'unknown_schema_version', 'future_event_time'));
