-- Every SQL statement of the host-event store on SQLite, by name (see lash_store.core.queries).
-- Rows have the columns of lash_store.service.host_events.service (SUBSCRIPTION_COLUMNS, OCCURRENCE_COLUMNS,
-- DELIVERY_COLUMNS; a delivery listing is a delivery, its occurrence and its subscription side by side).
-- BEGIN IMMEDIATE holds the file's write lock: the lock_* blocks need no statement.

-- name: lock_subscription

-- name: lock_occurrence

-- name: lock_delivery

-- The handle counter: numbers are never reused (they survive reopen and retention).
-- name: next_subscription_number
INSERT INTO host_event_counters (name, value) VALUES ('subscription', 1)
ON CONFLICT (name) DO UPDATE SET value = value + 1
RETURNING value

-- name: insert_subscription
INSERT INTO host_event_subscriptions (subscription_id, handle, seq, session_id, name, source_type, source_key, enabled, source, event_ty,
    module_ref, required_surface_ref, process_ref, process_name, input_template, created_at_ms,
    updated_at_ms)
VALUES (:subscription_id, :handle, :seq, :session_id, :name, :source_type, :source_key, 1, :source,
        :event_ty, :module_ref, :required_surface_ref, :process_ref, :process_name, :input_template, :now_ms,
        :now_ms)

-- name: list_subscriptions
SELECT s.subscription_id, s.handle, s.seq, s.session_id, s.name, s.source_type, s.source_key, s.enabled,
       s.source, s.event_ty, s.module_ref, s.required_surface_ref, s.process_ref, s.process_name,
       s.input_template, s.created_at_ms, s.updated_at_ms
FROM host_event_subscriptions s
WHERE (:session_id IS NULL OR s.session_id = :session_id)
  AND (:handle IS NULL OR s.handle = :handle)
  AND (:name IS NULL OR s.name = :name)
  AND (:source_type IS NULL OR s.source_type = :source_type)
  AND (:source_key IS NULL OR s.source_key = :source_key)
  AND (:enabled IS NULL OR s.enabled = :enabled)
  AND (:has_target = 0 OR (s.module_ref = :module_ref AND s.required_surface_ref = :required_surface_ref
                               AND s.process_ref = :process_ref AND s.process_name = :process_name))
ORDER BY s.session_id, s.seq

-- name: disable_subscription
UPDATE host_event_subscriptions SET enabled = 0, updated_at_ms = :now_ms
WHERE session_id = :session_id AND handle = :handle AND enabled = 1

-- name: disable_session_subscriptions
UPDATE host_event_subscriptions SET enabled = 0, updated_at_ms = :now_ms
WHERE session_id = :session_id AND enabled = 1

-- name: matching_subscriptions
SELECT s.subscription_id, s.handle, s.seq, s.session_id, s.name, s.source_type, s.source_key, s.enabled,
       s.source, s.event_ty, s.module_ref, s.required_surface_ref, s.process_ref, s.process_name,
       s.input_template, s.created_at_ms, s.updated_at_ms
FROM host_event_subscriptions s
WHERE s.source_type = :source_type AND s.source_key = :source_key AND s.enabled = 1
ORDER BY s.session_id, s.seq

-- name: insert_occurrence
INSERT INTO host_event_occurrences (occurrence_id, source_type, source_key, idempotency_key, request_hash, payload,
                                    source, occurred_at_ms)
VALUES (:occurrence_id, :source_type, :source_key, :idempotency_key, :request_hash, :payload,
        :source, :now_ms)
ON CONFLICT (occurrence_id) DO NOTHING

-- name: occurrence_row
SELECT o.occurrence_id, o.source_type, o.source_key, o.idempotency_key, o.request_hash, o.payload, o.source,
       o.occurred_at_ms
FROM host_event_occurrences o WHERE o.occurrence_id = :occurrence_id

-- name: list_occurrences
SELECT o.occurrence_id, o.source_type, o.source_key, o.idempotency_key, o.request_hash, o.payload, o.source,
       o.occurred_at_ms
FROM host_event_occurrences o ORDER BY o.occurred_at_ms, o.occurrence_id LIMIT :limit

-- name: insert_delivery
INSERT INTO host_event_deliveries (occurrence_id, subscription_id, process_id, state, created_at_ms)
VALUES (:occurrence_id, :subscription_id, :process_id, 'reserved', :now_ms)
ON CONFLICT (occurrence_id, subscription_id) DO NOTHING

-- name: delivery_row
SELECT occurrence_id, subscription_id, process_id, state, created_at_ms, started_at_ms
FROM host_event_deliveries WHERE occurrence_id = :occurrence_id AND subscription_id = :subscription_id

-- name: start_delivery
UPDATE host_event_deliveries SET state = 'started', started_at_ms = :now_ms
WHERE occurrence_id = :occurrence_id AND subscription_id = :subscription_id AND state = 'reserved'

-- name: pending_deliveries
SELECT d.occurrence_id, d.subscription_id, d.process_id, d.state, d.created_at_ms, d.started_at_ms,
       o.occurrence_id, o.source_type, o.source_key, o.idempotency_key, o.request_hash, o.payload, o.source,
       o.occurred_at_ms,
       s.subscription_id, s.handle, s.seq, s.session_id, s.name, s.source_type, s.source_key, s.enabled,
       s.source, s.event_ty, s.module_ref, s.required_surface_ref, s.process_ref, s.process_name,
       s.input_template, s.created_at_ms, s.updated_at_ms
FROM host_event_deliveries d
JOIN host_event_occurrences o ON o.occurrence_id = d.occurrence_id
JOIN host_event_subscriptions s ON s.subscription_id = d.subscription_id
WHERE d.state = 'reserved'
ORDER BY d.created_at_ms, d.occurrence_id, s.seq LIMIT :limit

-- name: deliveries_of_occurrence
SELECT d.occurrence_id, d.subscription_id, d.process_id, d.state, d.created_at_ms, d.started_at_ms,
       o.occurrence_id, o.source_type, o.source_key, o.idempotency_key, o.request_hash, o.payload, o.source,
       o.occurred_at_ms,
       s.subscription_id, s.handle, s.seq, s.session_id, s.name, s.source_type, s.source_key, s.enabled,
       s.source, s.event_ty, s.module_ref, s.required_surface_ref, s.process_ref, s.process_name,
       s.input_template, s.created_at_ms, s.updated_at_ms
FROM host_event_deliveries d
JOIN host_event_occurrences o ON o.occurrence_id = d.occurrence_id
JOIN host_event_subscriptions s ON s.subscription_id = d.subscription_id
WHERE d.occurrence_id = :occurrence_id
ORDER BY s.seq

-- Old occurrences whose deliveries have all started, and those deliveries.
-- name: count_prunable
SELECT count(*), sum((SELECT count(*) FROM host_event_deliveries d WHERE d.occurrence_id = o.occurrence_id))
FROM host_event_occurrences o
WHERE o.occurred_at_ms < :before_ms
  AND NOT EXISTS (SELECT 1 FROM host_event_deliveries d WHERE d.occurrence_id = o.occurrence_id AND d.state = 'reserved')

-- name: prune_deliveries
DELETE FROM host_event_deliveries
WHERE occurrence_id IN (
    SELECT o.occurrence_id FROM host_event_occurrences o
    WHERE o.occurred_at_ms < :before_ms
      AND NOT EXISTS (SELECT 1 FROM host_event_deliveries r
                      WHERE r.occurrence_id = o.occurrence_id AND r.state = 'reserved'))

-- name: prune_occurrences
DELETE FROM host_event_occurrences AS o
WHERE o.occurred_at_ms < :before_ms
  AND NOT EXISTS (SELECT 1 FROM host_event_deliveries d WHERE d.occurrence_id = o.occurrence_id)
