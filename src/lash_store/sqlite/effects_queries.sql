-- Every SQL statement of the effect journal on SQLite, by name (see lash_store.core.queries).
-- The service in lash_store.service.effects runs these; rows have the columns of
-- lash_store.service.effects.journal.EFFECT_COLUMNS.  BEGIN IMMEDIATE already holds the file's write lock,
-- so lock_effect needs no statement; other processes notice commits through PRAGMA data_version, so
-- notify_effect needs none either.

-- name: lock_effect

-- name: notify_effect

-- name: effect_row
SELECT scope_identity, replay_key, scope_kind, scope_id, envelope_hash, status, outcome, error, lease_owner_id,
       lease_token, lease_expires_at_ms, due_at_ms, attempts, created_at_ms, updated_at_ms
FROM effect_journal WHERE scope_identity = :scope_identity AND replay_key = :replay_key

-- name: insert_effect
INSERT INTO effect_journal (scope_identity, replay_key, scope_kind, scope_id, envelope_hash, status, lease_owner_id,
                            lease_token, lease_expires_at_ms, due_at_ms, attempts, created_at_ms, updated_at_ms)
VALUES (:scope_identity, :replay_key, :scope_kind, :scope_id, :envelope_hash, 'in_progress', :owner_id,
        :lease_token, :expires_at_ms, :due_at_ms, 1, :now_ms, :now_ms)
ON CONFLICT (scope_identity, replay_key) DO NOTHING

-- name: insert_finished_effect
INSERT INTO effect_journal (scope_identity, replay_key, scope_kind, scope_id, envelope_hash, status, outcome, error,
                            lease_owner_id, lease_token, lease_expires_at_ms, due_at_ms, attempts, created_at_ms,
                            updated_at_ms)
VALUES (:scope_identity, :replay_key, :scope_kind, :scope_id, :envelope_hash, :status, :outcome, :error,
        NULL, NULL, 0, NULL, 1, :now_ms, :now_ms)
ON CONFLICT (scope_identity, replay_key) DO NOTHING

-- name: take_over_effect
UPDATE effect_journal
SET status = 'in_progress', lease_owner_id = :owner_id, lease_token = :lease_token,
    lease_expires_at_ms = :expires_at_ms, due_at_ms = :due_at_ms, attempts = attempts + 1, updated_at_ms = :now_ms
WHERE scope_identity = :scope_identity AND replay_key = :replay_key
  AND (status = 'released' OR (status = 'in_progress' AND lease_expires_at_ms <= :now_ms))

-- name: finalize_effect
UPDATE effect_journal
SET status = :status, outcome = :outcome, error = :error, lease_owner_id = NULL, lease_token = NULL,
    lease_expires_at_ms = 0, updated_at_ms = :now_ms
WHERE scope_identity = :scope_identity AND replay_key = :replay_key AND envelope_hash = :envelope_hash
  AND lease_token = :lease_token AND status = 'in_progress'

-- name: renew_effect
UPDATE effect_journal SET lease_expires_at_ms = :expires_at_ms
WHERE scope_identity = :scope_identity AND replay_key = :replay_key AND lease_token = :lease_token
  AND status = 'in_progress'

-- name: release_effect
UPDATE effect_journal
SET status = 'released', lease_owner_id = NULL, lease_token = NULL, lease_expires_at_ms = 0, updated_at_ms = :now_ms
WHERE scope_identity = :scope_identity AND replay_key = :replay_key AND lease_token = :lease_token
  AND status = 'in_progress'

-- name: list_effects
SELECT scope_identity, replay_key, scope_kind, scope_id, envelope_hash, status, outcome, error, lease_owner_id,
       lease_token, lease_expires_at_ms, due_at_ms, attempts, created_at_ms, updated_at_ms
FROM effect_journal
WHERE (:status IS NULL OR status = :status) AND (:scope_identity IS NULL OR scope_identity = :scope_identity)
ORDER BY updated_at_ms, scope_identity, replay_key LIMIT :limit

-- name: count_prunable_effects
SELECT count(*) FROM effect_journal WHERE status IN ('completed', 'failed') AND updated_at_ms < :before_ms

-- name: prune_effects
DELETE FROM effect_journal WHERE status IN ('completed', 'failed') AND updated_at_ms < :before_ms
