-- Version 3: the work queue's poison bookkeeping (see PoisonPolicy).  attempts counts claims; retry_at_ms is
-- when a failed attempt's batch may be offered again; the last claim's owner and instant and the last error
-- a worker gave are kept for the dead-letter list; dead_at_ms marks a dead letter (NULL: live).  Additive and
-- idempotent; the FIFO index is replaced by one over live batches.
ALTER TABLE {schema}.queued_work_batches ADD COLUMN IF NOT EXISTS attempts bigint NOT NULL DEFAULT 0;
ALTER TABLE {schema}.queued_work_batches ADD COLUMN IF NOT EXISTS retry_at_ms bigint NOT NULL DEFAULT 0;
ALTER TABLE {schema}.queued_work_batches ADD COLUMN IF NOT EXISTS last_owner_id text;
ALTER TABLE {schema}.queued_work_batches ADD COLUMN IF NOT EXISTS last_claimed_at_ms bigint;
ALTER TABLE {schema}.queued_work_batches ADD COLUMN IF NOT EXISTS last_error text;
ALTER TABLE {schema}.queued_work_batches ADD COLUMN IF NOT EXISTS dead_at_ms bigint;
CREATE INDEX IF NOT EXISTS queued_work_live ON {schema}.queued_work_batches (session_id, queue_session_id, enqueue_seq)
    WHERE dead_at_ms IS NULL;
CREATE INDEX IF NOT EXISTS queued_work_dead ON {schema}.queued_work_batches (session_id, queue_session_id, enqueue_seq)
    WHERE dead_at_ms IS NOT NULL;
DROP INDEX IF EXISTS {schema}.queued_work_fifo;
