-- Every SQL statement of the process registry on PostgreSQL, by name (see lash_store.core.queries).
-- ``{schema}`` is the configured schema.  Rows have the same columns, in the same order, as the SQLite
-- backend's queries of the same name; a list parameter arrives as a text[].  The registry is
-- deployment-wide: there is no session partition (``sid``) here.  Writes run under READ COMMITTED and
-- lock the process row first (lock_process); every statement after it sees everything committed before
-- the lock was granted, and the database clock is read right after it.

-- ===== locks and notifications =============================================

-- name: lock_process
SELECT 1 FROM {schema}.processes WHERE process_id = %(process_id)s FOR NO KEY UPDATE

-- A grant or an ack only needs the process to stay (not be pruned): it never waits for an append.
-- name: lock_process_shared
SELECT 1 FROM {schema}.processes WHERE process_id = %(process_id)s FOR KEY SHARE

-- Delivered at commit to every listener (waits in other processes); a payload names the schema and the
-- process ("" when the id is too long for a notification: listeners then read again).
-- name: notify_process
SELECT pg_notify('lash_processes', '{schema}:' || CASE WHEN octet_length(%(process_id)s::text) <= 7000
                                                      THEN %(process_id)s::text ELSE '' END)

-- name: now
SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint

-- name: server_version
SELECT current_setting('server_version')

-- name: schema_version
SELECT version FROM {schema}.schema_version

-- ===== processes ===========================================================

-- name: process_row
SELECT process_id, registration_hash, input, event_types, owner_session_id, owner_agent_frame_id,
       host_profile_id, caused_by, status, await_output, external_ref, last_sequence, created_at_ms, updated_at_ms
FROM {schema}.processes WHERE process_id = %(process_id)s

-- The primary key is the arbiter: a concurrent registration of the same id waits for the first to commit,
-- then inserts nothing (the service compares the hashes).
-- name: insert_process
INSERT INTO {schema}.processes (process_id, registration_hash, input, event_types, owner_session_id,
                                owner_agent_frame_id, host_profile_id, caused_by, status, last_sequence,
                                created_at_ms, updated_at_ms)
VALUES (%(process_id)s, %(registration_hash)s, %(input)s, %(event_types)s, %(owner_session_id)s,
        %(owner_agent_frame_id)s, %(host_profile_id)s, %(caused_by)s, 'running', 0, %(now_ms)s, %(now_ms)s)
ON CONFLICT (process_id) DO NOTHING

-- name: set_external_ref
UPDATE {schema}.processes SET external_ref = %(external_ref)s, updated_at_ms = %(now_ms)s
WHERE process_id = %(process_id)s

-- name: set_status
UPDATE {schema}.processes SET status = %(status)s, await_output = %(await_output)s, updated_at_ms = %(now_ms)s
WHERE process_id = %(process_id)s

-- name: advance_process
UPDATE {schema}.processes SET last_sequence = %(last_sequence)s, status = %(status)s,
                              await_output = %(await_output)s, updated_at_ms = %(now_ms)s
WHERE process_id = %(process_id)s

-- name: list_processes
SELECT process_id, registration_hash, input, event_types, owner_session_id, owner_agent_frame_id,
       host_profile_id, caused_by, status, await_output, external_ref, last_sequence, created_at_ms, updated_at_ms
FROM {schema}.processes
WHERE (%(state)s::text IS NULL OR status = %(state)s::text
       OR (%(state)s::text = 'terminal' AND status <> 'running'))
  AND (%(after)s::text IS NULL OR process_id > %(after)s::text)
ORDER BY process_id LIMIT %(limit)s

-- ===== events ==============================================================

-- name: event_by_replay_key
SELECT process_id, sequence, event_type, payload, payload_hash, idempotency_key, occurred_at_ms, semantics
FROM {schema}.process_events WHERE process_id = %(process_id)s AND idempotency_key = %(replay_key)s

-- name: insert_event
INSERT INTO {schema}.process_events (process_id, sequence, event_type, payload, payload_hash, idempotency_key,
                                     occurred_at_ms, semantics, is_wake)
VALUES (%(process_id)s, %(sequence)s, %(event_type)s, %(payload)s, %(payload_hash)s, %(replay_key)s,
        %(occurred_at_ms)s, %(semantics)s, %(is_wake)s)

-- name: events_after
SELECT process_id, sequence, event_type, payload, payload_hash, idempotency_key, occurred_at_ms, semantics
FROM {schema}.process_events WHERE process_id = %(process_id)s AND sequence > %(after_sequence)s
ORDER BY sequence LIMIT %(limit)s

-- name: wake_events_after
SELECT e.process_id, e.sequence, e.event_type, e.payload, e.payload_hash, e.idempotency_key, e.occurred_at_ms,
       e.semantics
FROM {schema}.process_events e
WHERE e.process_id = %(process_id)s AND e.sequence > %(after_sequence)s AND e.is_wake = 1
  AND NOT EXISTS (SELECT 1 FROM {schema}.process_wake_acks a
                  WHERE a.process_id = e.process_id AND a.sequence = e.sequence)
ORDER BY e.sequence

-- name: first_event_of_type
SELECT process_id, sequence, event_type, payload, payload_hash, idempotency_key, occurred_at_ms, semantics
FROM {schema}.process_events
WHERE process_id = %(process_id)s AND sequence > %(after_sequence)s AND event_type = %(event_type)s
ORDER BY sequence LIMIT 1

-- name: event_is_wake
SELECT is_wake FROM {schema}.process_events WHERE process_id = %(process_id)s AND sequence = %(sequence)s

-- name: ack_wake
INSERT INTO {schema}.process_wake_acks (process_id, sequence, acked_at_ms)
VALUES (%(process_id)s, %(sequence)s, %(now_ms)s)
ON CONFLICT DO NOTHING

-- ===== handle grants =======================================================

-- name: upsert_grant
INSERT INTO {schema}.process_handle_grants (scope_id, process_id, session_id, descriptor)
VALUES (%(scope_id)s, %(process_id)s, %(session_id)s, %(descriptor)s)
ON CONFLICT (scope_id, process_id) DO UPDATE SET session_id = EXCLUDED.session_id, descriptor = EXCLUDED.descriptor

-- name: delete_grant
DELETE FROM {schema}.process_handle_grants WHERE scope_id = %(scope_id)s AND process_id = %(process_id)s

-- name: grant_descriptor
SELECT descriptor FROM {schema}.process_handle_grants WHERE scope_id = %(scope_id)s AND process_id = %(process_id)s

-- name: grants_of_scope
SELECT g.session_id, g.descriptor,
       p.process_id, p.registration_hash, p.input, p.event_types, p.owner_session_id, p.owner_agent_frame_id,
       p.host_profile_id, p.caused_by, p.status, p.await_output, p.external_ref, p.last_sequence, p.created_at_ms,
       p.updated_at_ms
FROM {schema}.process_handle_grants g JOIN {schema}.processes p ON p.process_id = g.process_id
WHERE g.scope_id = %(scope_id)s AND (NOT %(running_only)s OR p.status = 'running')
ORDER BY g.process_id

-- name: grants_of_process
SELECT session_id, scope_id, descriptor FROM {schema}.process_handle_grants WHERE process_id = %(process_id)s
ORDER BY session_id, scope_id

-- name: delete_session_grants
DELETE FROM {schema}.process_handle_grants WHERE session_id = %(session_id)s RETURNING scope_id, process_id

-- name: grant_counts
SELECT process_id, count(*) FROM {schema}.process_handle_grants
WHERE process_id = ANY(%(process_ids)s)
GROUP BY process_id

-- ===== leases ==============================================================

-- name: lease_row
SELECT lease_owner_id, lease_token, fencing_token, claimed_at_ms, expires_at_ms
FROM {schema}.process_leases WHERE process_id = %(process_id)s

-- name: put_lease
INSERT INTO {schema}.process_leases (process_id, lease_owner_id, lease_token, fencing_token, claimed_at_ms,
                                     expires_at_ms)
VALUES (%(process_id)s, %(owner_id)s, %(lease_token)s, %(fencing_token)s, %(claimed_at_ms)s, %(expires_at_ms)s)
ON CONFLICT (process_id) DO UPDATE SET lease_owner_id = EXCLUDED.lease_owner_id,
    lease_token = EXCLUDED.lease_token, fencing_token = EXCLUDED.fencing_token,
    claimed_at_ms = EXCLUDED.claimed_at_ms, expires_at_ms = EXCLUDED.expires_at_ms

-- name: extend_lease
UPDATE {schema}.process_leases SET expires_at_ms = %(expires_at_ms)s
WHERE process_id = %(process_id)s AND lease_token = %(lease_token)s

-- name: release_lease
UPDATE {schema}.process_leases SET lease_owner_id = NULL, lease_token = NULL, claimed_at_ms = 0, expires_at_ms = 0
WHERE process_id = %(process_id)s AND lease_token = %(lease_token)s

-- ===== retention ===========================================================

-- name: prunable_processes
SELECT process_id FROM {schema}.processes
WHERE status <> 'running' AND updated_at_ms <= %(older_than_ms)s
ORDER BY updated_at_ms, process_id LIMIT %(limit)s

-- name: prune_counts
SELECT (SELECT count(*) FROM {schema}.process_events WHERE process_id = ANY(%(process_ids)s)),
       (SELECT count(*) FROM {schema}.process_handle_grants WHERE process_id = ANY(%(process_ids)s))

-- name: delete_processes
DELETE FROM {schema}.process_events WHERE process_id = ANY(%(process_ids)s);
DELETE FROM {schema}.process_wake_acks WHERE process_id = ANY(%(process_ids)s);
DELETE FROM {schema}.process_handle_grants WHERE process_id = ANY(%(process_ids)s);
DELETE FROM {schema}.process_leases WHERE process_id = ANY(%(process_ids)s);
DELETE FROM {schema}.processes WHERE process_id = ANY(%(process_ids)s) AND status <> 'running'

-- ===== every row, undecoded ================================================

-- name: all_process_rows
SELECT process_id, registration_hash, input, event_types, owner_session_id, owner_agent_frame_id,
       host_profile_id, caused_by, status, await_output, external_ref, last_sequence, created_at_ms, updated_at_ms
FROM {schema}.processes ORDER BY process_id

-- name: all_event_rows
SELECT process_id, sequence, event_type, payload, payload_hash, idempotency_key, occurred_at_ms, semantics, is_wake
FROM {schema}.process_events ORDER BY process_id, sequence

-- name: all_ack_rows
SELECT process_id, sequence, acked_at_ms FROM {schema}.process_wake_acks ORDER BY process_id, sequence

-- name: all_grant_rows
SELECT scope_id, process_id, session_id, descriptor FROM {schema}.process_handle_grants ORDER BY scope_id, process_id

-- name: all_lease_rows
SELECT process_id, lease_owner_id, lease_token, fencing_token, claimed_at_ms, expires_at_ms
FROM {schema}.process_leases ORDER BY process_id
