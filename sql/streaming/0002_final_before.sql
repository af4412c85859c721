-- Windows starting at or before final_before are final: their distinct sets were deleted, so
-- no later event may count there, whatever allowed_lateness or late_policy a later run has.
-- Only ever moved forward, in the transaction of a committed micro-batch.
ALTER TABLE stream_progress ADD COLUMN final_before timestamptz;
