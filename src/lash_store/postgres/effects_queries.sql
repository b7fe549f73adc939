-- Every SQL statement of the effect journal on PostgreSQL, by name (see lash_store.core.queries).
-- ``{schema}`` is the configured schema.  Rows have the columns of the SQLite queries of the same name.
-- Writes run under READ COMMITTED: lock_effect locks the row (when it exists), the database clock is read
-- right after it, and the primary key arbitrates first claims.

-- name: lock_effect
SELECT 1 FROM {schema}.effect_journal
WHERE scope_identity = %(scope_identity)s AND replay_key = %(replay_key)s FOR UPDATE

-- Delivered at commit to every listener (busy waiters in other processes); they read again.
-- name: notify_effect
SELECT pg_notify('lash_effects', '{schema}')

-- name: now
SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint

-- name: server_version
SELECT current_setting('server_version')

-- name: schema_version
SELECT version FROM {schema}.schema_version

-- name: effect_row
SELECT scope_identity, replay_key, scope_kind, scope_id, envelope_hash, status, outcome, error, lease_owner_id,
       lease_token, lease_expires_at_ms, due_at_ms, attempts, created_at_ms, updated_at_ms
FROM {schema}.effect_journal WHERE scope_identity = %(scope_identity)s AND replay_key = %(replay_key)s

-- name: insert_effect
INSERT INTO {schema}.effect_journal (scope_identity, replay_key, scope_kind, scope_id, envelope_hash, status,
                                     lease_owner_id, lease_token, lease_expires_at_ms, due_at_ms, attempts,
                                     created_at_ms, updated_at_ms)
VALUES (%(scope_identity)s, %(replay_key)s, %(scope_kind)s, %(scope_id)s, %(envelope_hash)s, 'in_progress',
        %(owner_id)s, %(lease_token)s, %(expires_at_ms)s, %(due_at_ms)s, 1, %(now_ms)s, %(now_ms)s)
ON CONFLICT (scope_identity, replay_key) DO NOTHING

-- name: insert_finished_effect
INSERT INTO {schema}.effect_journal (scope_identity, replay_key, scope_kind, scope_id, envelope_hash, status,
                                     outcome, error, lease_owner_id, lease_token, lease_expires_at_ms, due_at_ms,
                                     attempts, created_at_ms, updated_at_ms)
VALUES (%(scope_identity)s, %(replay_key)s, %(scope_kind)s, %(scope_id)s, %(envelope_hash)s, %(status)s,
        %(outcome)s, %(error)s, NULL, NULL, 0, NULL, 1, %(now_ms)s, %(now_ms)s)
ON CONFLICT (scope_identity, replay_key) DO NOTHING

-- name: take_over_effect
UPDATE {schema}.effect_journal
SET status = 'in_progress', lease_owner_id = %(owner_id)s, lease_token = %(lease_token)s,
    lease_expires_at_ms = %(expires_at_ms)s, due_at_ms = %(due_at_ms)s, attempts = attempts + 1,
    updated_at_ms = %(now_ms)s
WHERE scope_identity = %(scope_identity)s AND replay_key = %(replay_key)s
  AND (status = 'released' OR (status = 'in_progress' AND lease_expires_at_ms <= %(now_ms)s))

-- name: finalize_effect
UPDATE {schema}.effect_journal
SET status = %(status)s, outcome = %(outcome)s, error = %(error)s, lease_owner_id = NULL, lease_token = NULL,
    lease_expires_at_ms = 0, updated_at_ms = %(now_ms)s
WHERE scope_identity = %(scope_identity)s AND replay_key = %(replay_key)s AND envelope_hash = %(envelope_hash)s
  AND lease_token = %(lease_token)s AND status = 'in_progress'

-- name: renew_effect
UPDATE {schema}.effect_journal SET lease_expires_at_ms = %(expires_at_ms)s
WHERE scope_identity = %(scope_identity)s AND replay_key = %(replay_key)s AND lease_token = %(lease_token)s
  AND status = 'in_progress'

-- name: release_effect
UPDATE {schema}.effect_journal
SET status = 'released', lease_owner_id = NULL, lease_token = NULL, lease_expires_at_ms = 0,
    updated_at_ms = %(now_ms)s
WHERE scope_identity = %(scope_identity)s AND replay_key = %(replay_key)s AND lease_token = %(lease_token)s
  AND status = 'in_progress'

-- name: list_effects
SELECT scope_identity, replay_key, scope_kind, scope_id, envelope_hash, status, outcome, error, lease_owner_id,
       lease_token, lease_expires_at_ms, due_at_ms, attempts, created_at_ms, updated_at_ms
FROM {schema}.effect_journal
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(scope_identity)s::text IS NULL OR scope_identity = %(scope_identity)s::text)
ORDER BY updated_at_ms, scope_identity, replay_key LIMIT %(limit)s

-- name: count_prunable_effects
SELECT count(*) FROM {schema}.effect_journal
WHERE status IN ('completed', 'failed') AND updated_at_ms < %(before_ms)s

-- name: prune_effects
DELETE FROM {schema}.effect_journal WHERE status IN ('completed', 'failed') AND updated_at_ms < %(before_ms)s
