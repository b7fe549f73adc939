-- Every SQL statement of the process registry on SQLite, by name (see lash_store.core.queries).
-- The service in lash_store.service.registry runs these; rows have the columns listed in each SELECT
-- (the column lists of lash_store.core.registry.rows).  A list parameter arrives as one JSON array.
-- Blocks left empty are steps SQLite needs no statement for: BEGIN IMMEDIATE already holds the
-- file's one write lock, so there are no rows to lock, and nobody to notify but this process.

-- ===== locks and notifications =============================================

-- name: lock_process

-- name: lock_process_shared

-- name: notify_process

-- ===== processes ===========================================================

-- name: process_row
SELECT process_id, registration_hash, input, event_types, owner_session_id, owner_agent_frame_id,
       host_profile_id, caused_by, status, await_output, external_ref, last_sequence, created_at_ms, updated_at_ms
FROM processes WHERE process_id = :process_id

-- name: insert_process
INSERT INTO processes (process_id, registration_hash, input, event_types, owner_session_id, owner_agent_frame_id,
                       host_profile_id, caused_by, status, last_sequence, created_at_ms, updated_at_ms)
VALUES (:process_id, :registration_hash, :input, :event_types, :owner_session_id, :owner_agent_frame_id,
        :host_profile_id, :caused_by, 'running', 0, :now_ms, :now_ms)
ON CONFLICT (process_id) DO NOTHING

-- name: set_external_ref
UPDATE processes SET external_ref = :external_ref, updated_at_ms = :now_ms WHERE process_id = :process_id

-- name: set_status
UPDATE processes SET status = :status, await_output = :await_output, updated_at_ms = :now_ms
WHERE process_id = :process_id

-- name: advance_process
UPDATE processes SET last_sequence = :last_sequence, status = :status, await_output = :await_output,
                     updated_at_ms = :now_ms
WHERE process_id = :process_id

-- Keyset pagination by process id; :state is NULL (all), a status, or 'terminal' (every status but running).
-- name: list_processes
SELECT process_id, registration_hash, input, event_types, owner_session_id, owner_agent_frame_id,
       host_profile_id, caused_by, status, await_output, external_ref, last_sequence, created_at_ms, updated_at_ms
FROM processes
WHERE (:state IS NULL OR status = :state OR (:state = 'terminal' AND status <> 'running'))
  AND (:after IS NULL OR process_id > :after)
ORDER BY process_id LIMIT :limit

-- ===== events ==============================================================

-- name: event_by_replay_key
SELECT process_id, sequence, event_type, payload, payload_hash, idempotency_key, occurred_at_ms, semantics
FROM process_events WHERE process_id = :process_id AND idempotency_key = :replay_key

-- name: insert_event
INSERT INTO process_events (process_id, sequence, event_type, payload, payload_hash, idempotency_key,
                            occurred_at_ms, semantics, is_wake)
VALUES (:process_id, :sequence, :event_type, :payload, :payload_hash, :replay_key, :occurred_at_ms, :semantics,
        :is_wake)

-- name: events_after
SELECT process_id, sequence, event_type, payload, payload_hash, idempotency_key, occurred_at_ms, semantics
FROM process_events WHERE process_id = :process_id AND sequence > :after_sequence
ORDER BY sequence LIMIT :limit

-- name: wake_events_after
SELECT e.process_id, e.sequence, e.event_type, e.payload, e.payload_hash, e.idempotency_key, e.occurred_at_ms,
       e.semantics
FROM process_events e
WHERE e.process_id = :process_id AND e.sequence > :after_sequence AND e.is_wake = 1
  AND NOT EXISTS (SELECT 1 FROM process_wake_acks a WHERE a.process_id = e.process_id AND a.sequence = e.sequence)
ORDER BY e.sequence

-- name: first_event_of_type
SELECT process_id, sequence, event_type, payload, payload_hash, idempotency_key, occurred_at_ms, semantics
FROM process_events WHERE process_id = :process_id AND sequence > :after_sequence AND event_type = :event_type
ORDER BY sequence LIMIT 1

-- name: event_is_wake
SELECT is_wake FROM process_events WHERE process_id = :process_id AND sequence = :sequence

-- name: ack_wake
INSERT INTO process_wake_acks (process_id, sequence, acked_at_ms) VALUES (:process_id, :sequence, :now_ms)
ON CONFLICT DO NOTHING

-- ===== handle grants =======================================================

-- name: upsert_grant
INSERT INTO process_handle_grants (scope_id, process_id, session_id, descriptor)
VALUES (:scope_id, :process_id, :session_id, :descriptor)
ON CONFLICT (scope_id, process_id) DO UPDATE SET session_id = excluded.session_id, descriptor = excluded.descriptor

-- name: delete_grant
DELETE FROM process_handle_grants WHERE scope_id = :scope_id AND process_id = :process_id

-- name: grant_descriptor
SELECT descriptor FROM process_handle_grants WHERE scope_id = :scope_id AND process_id = :process_id

-- A grant with its process (grants of a process that does not exist are not listed).
-- name: grants_of_scope
SELECT g.session_id, g.descriptor,
       p.process_id, p.registration_hash, p.input, p.event_types, p.owner_session_id, p.owner_agent_frame_id,
       p.host_profile_id, p.caused_by, p.status, p.await_output, p.external_ref, p.last_sequence, p.created_at_ms,
       p.updated_at_ms
FROM process_handle_grants g JOIN processes p ON p.process_id = g.process_id
WHERE g.scope_id = :scope_id AND (:running_only = 0 OR p.status = 'running')
ORDER BY g.process_id

-- name: grants_of_process
SELECT session_id, scope_id, descriptor FROM process_handle_grants WHERE process_id = :process_id
ORDER BY session_id, scope_id

-- Every grant a session holds (its own scope and its agent frames'), removed; the removed rows are returned.
-- Found through the key: a session's scope ids are 'session:<id>' and 'session:<id>/frame:<frame>' (';' follows
-- ':'), and session_id tells a session apart from another whose id merely looks like '<id>/frame:...'.
-- name: delete_session_grants
DELETE FROM process_handle_grants
WHERE (scope_id = 'session:' || :session_id
       OR (scope_id > 'session:' || :session_id || '/frame:' AND scope_id < 'session:' || :session_id || '/frame;'))
  AND session_id = :session_id
RETURNING scope_id, process_id

-- name: grant_counts
SELECT process_id, count(*) FROM process_handle_grants
WHERE process_id IN (SELECT value FROM json_each(:process_ids))
GROUP BY process_id

-- ===== leases ==============================================================

-- name: lease_row
SELECT lease_owner_id, lease_token, fencing_token, claimed_at_ms, expires_at_ms
FROM process_leases WHERE process_id = :process_id

-- name: put_lease
INSERT INTO process_leases (process_id, lease_owner_id, lease_token, fencing_token, claimed_at_ms, expires_at_ms)
VALUES (:process_id, :owner_id, :lease_token, :fencing_token, :claimed_at_ms, :expires_at_ms)
ON CONFLICT (process_id) DO UPDATE SET lease_owner_id = excluded.lease_owner_id,
    lease_token = excluded.lease_token, fencing_token = excluded.fencing_token,
    claimed_at_ms = excluded.claimed_at_ms, expires_at_ms = excluded.expires_at_ms

-- name: extend_lease
UPDATE process_leases SET expires_at_ms = :expires_at_ms
WHERE process_id = :process_id AND lease_token = :lease_token

-- Releasing keeps the fencing counter: the next lease's token is larger than every earlier one.
-- name: release_lease
UPDATE process_leases SET lease_owner_id = NULL, lease_token = NULL, claimed_at_ms = 0, expires_at_ms = 0
WHERE process_id = :process_id AND lease_token = :lease_token

-- ===== retention ===========================================================

-- name: prunable_processes
SELECT process_id FROM processes
WHERE status <> 'running' AND updated_at_ms <= :older_than_ms
ORDER BY updated_at_ms, process_id LIMIT :limit

-- name: prune_counts
SELECT (SELECT count(*) FROM process_events WHERE process_id IN (SELECT value FROM json_each(:process_ids))),
       (SELECT count(*) FROM process_handle_grants WHERE process_id IN (SELECT value FROM json_each(:process_ids)))

-- name: delete_processes
DELETE FROM process_events WHERE process_id IN (SELECT value FROM json_each(:process_ids));
DELETE FROM process_wake_acks WHERE process_id IN (SELECT value FROM json_each(:process_ids));
DELETE FROM process_handle_grants WHERE process_id IN (SELECT value FROM json_each(:process_ids));
DELETE FROM process_leases WHERE process_id IN (SELECT value FROM json_each(:process_ids));
DELETE FROM processes WHERE process_id IN (SELECT value FROM json_each(:process_ids)) AND status <> 'running'

-- ===== every row, undecoded (tools and tests look at the data with these) ======

-- name: all_process_rows
SELECT process_id, registration_hash, input, event_types, owner_session_id, owner_agent_frame_id,
       host_profile_id, caused_by, status, await_output, external_ref, last_sequence, created_at_ms, updated_at_ms
FROM processes ORDER BY process_id

-- name: all_event_rows
SELECT process_id, sequence, event_type, payload, payload_hash, idempotency_key, occurred_at_ms, semantics, is_wake
FROM process_events ORDER BY process_id, sequence

-- name: all_ack_rows
SELECT process_id, sequence, acked_at_ms FROM process_wake_acks ORDER BY process_id, sequence

-- name: all_grant_rows
SELECT scope_id, process_id, session_id, descriptor FROM process_handle_grants ORDER BY scope_id, process_id

-- name: all_lease_rows
SELECT process_id, lease_owner_id, lease_token, fencing_token, claimed_at_ms, expires_at_ms
FROM process_leases ORDER BY process_id
