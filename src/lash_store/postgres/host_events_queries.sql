-- Every SQL statement of the host-event store on PostgreSQL, by name (see lash_store.core.queries).
-- ``{schema}`` is the configured schema; rows have the columns of the SQLite queries of the same name.
-- Writes run under READ COMMITTED; primary keys arbitrate concurrent records and reservations, and the
-- lock_* queries lock the row a read-modify-write changes.

-- name: lock_subscription
SELECT 1 FROM {schema}.host_event_subscriptions
WHERE session_id = %(session_id)s AND handle = %(handle)s FOR UPDATE

-- name: lock_occurrence
SELECT 1 FROM {schema}.host_event_occurrences WHERE occurrence_id = %(occurrence_id)s FOR UPDATE

-- name: lock_delivery
SELECT 1 FROM {schema}.host_event_deliveries
WHERE occurrence_id = %(occurrence_id)s AND subscription_id = %(subscription_id)s FOR UPDATE

-- The handle counter: a sequence, never reused.
-- name: next_subscription_number
SELECT nextval('{schema}.host_event_subscription_seq')

-- name: now
SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint

-- name: server_version
SELECT current_setting('server_version')

-- name: schema_version
SELECT version FROM {schema}.schema_version

-- name: insert_subscription
INSERT INTO {schema}.host_event_subscriptions (subscription_id, handle, seq, session_id, name, source_type, source_key, enabled, source, event_ty,
    module_ref, required_surface_ref, process_ref, process_name, input_template, created_at_ms,
    updated_at_ms)
VALUES (%(subscription_id)s, %(handle)s, %(seq)s, %(session_id)s, %(name)s, %(source_type)s, %(source_key)s,
        true, %(source)s, %(event_ty)s, %(module_ref)s, %(required_surface_ref)s, %(process_ref)s,
        %(process_name)s, %(input_template)s, %(now_ms)s, %(now_ms)s)

-- name: list_subscriptions
SELECT s.subscription_id, s.handle, s.seq, s.session_id, s.name, s.source_type, s.source_key, s.enabled,
       s.source, s.event_ty, s.module_ref, s.required_surface_ref, s.process_ref, s.process_name,
       s.input_template, s.created_at_ms, s.updated_at_ms
FROM {schema}.host_event_subscriptions s
WHERE (%(session_id)s::text IS NULL OR s.session_id = %(session_id)s::text)
  AND (%(handle)s::text IS NULL OR s.handle = %(handle)s::text)
  AND (%(name)s::text IS NULL OR s.name = %(name)s::text)
  AND (%(source_type)s::text IS NULL OR s.source_type = %(source_type)s::text)
  AND (%(source_key)s::text IS NULL OR s.source_key = %(source_key)s::text)
  AND (%(enabled)s::int IS NULL OR s.enabled = %(enabled)s::int::boolean)
  AND (%(has_target)s::int = 0 OR (s.module_ref = %(module_ref)s::text AND s.required_surface_ref = %(required_surface_ref)s::text
                               AND s.process_ref = %(process_ref)s::text AND s.process_name = %(process_name)s::text))
ORDER BY s.session_id, s.seq

-- name: disable_subscription
UPDATE {schema}.host_event_subscriptions SET enabled = false, updated_at_ms = %(now_ms)s
WHERE session_id = %(session_id)s AND handle = %(handle)s AND enabled = true

-- name: disable_session_subscriptions
UPDATE {schema}.host_event_subscriptions SET enabled = false, updated_at_ms = %(now_ms)s
WHERE session_id = %(session_id)s AND enabled = true

-- name: matching_subscriptions
SELECT s.subscription_id, s.handle, s.seq, s.session_id, s.name, s.source_type, s.source_key, s.enabled,
       s.source, s.event_ty, s.module_ref, s.required_surface_ref, s.process_ref, s.process_name,
       s.input_template, s.created_at_ms, s.updated_at_ms
FROM {schema}.host_event_subscriptions s
WHERE s.source_type = %(source_type)s AND s.source_key = %(source_key)s AND s.enabled = true
ORDER BY s.session_id, s.seq

-- name: insert_occurrence
INSERT INTO {schema}.host_event_occurrences (occurrence_id, source_type, source_key, idempotency_key, request_hash, payload,
                                    source, occurred_at_ms)
VALUES (%(occurrence_id)s, %(source_type)s, %(source_key)s, %(idempotency_key)s, %(request_hash)s, %(payload)s,
        %(source)s, %(now_ms)s)
ON CONFLICT (occurrence_id) DO NOTHING

-- name: occurrence_row
SELECT o.occurrence_id, o.source_type, o.source_key, o.idempotency_key, o.request_hash, o.payload, o.source,
       o.occurred_at_ms
FROM {schema}.host_event_occurrences o WHERE o.occurrence_id = %(occurrence_id)s

-- name: list_occurrences
SELECT o.occurrence_id, o.source_type, o.source_key, o.idempotency_key, o.request_hash, o.payload, o.source,
       o.occurred_at_ms
FROM {schema}.host_event_occurrences o ORDER BY o.occurred_at_ms, o.occurrence_id LIMIT %(limit)s

-- name: insert_delivery
INSERT INTO {schema}.host_event_deliveries (occurrence_id, subscription_id, process_id, state, created_at_ms)
VALUES (%(occurrence_id)s, %(subscription_id)s, %(process_id)s, 'reserved', %(now_ms)s)
ON CONFLICT (occurrence_id, subscription_id) DO NOTHING

-- name: delivery_row
SELECT occurrence_id, subscription_id, process_id, state, created_at_ms, started_at_ms
FROM {schema}.host_event_deliveries WHERE occurrence_id = %(occurrence_id)s AND subscription_id = %(subscription_id)s

-- name: start_delivery
UPDATE {schema}.host_event_deliveries SET state = 'started', started_at_ms = %(now_ms)s
WHERE occurrence_id = %(occurrence_id)s AND subscription_id = %(subscription_id)s AND state = 'reserved'

-- name: pending_deliveries
SELECT d.occurrence_id, d.subscription_id, d.process_id, d.state, d.created_at_ms, d.started_at_ms,
       o.occurrence_id, o.source_type, o.source_key, o.idempotency_key, o.request_hash, o.payload, o.source,
       o.occurred_at_ms,
       s.subscription_id, s.handle, s.seq, s.session_id, s.name, s.source_type, s.source_key, s.enabled,
       s.source, s.event_ty, s.module_ref, s.required_surface_ref, s.process_ref, s.process_name,
       s.input_template, s.created_at_ms, s.updated_at_ms
FROM {schema}.host_event_deliveries d
JOIN {schema}.host_event_occurrences o ON o.occurrence_id = d.occurrence_id
JOIN {schema}.host_event_subscriptions s ON s.subscription_id = d.subscription_id
WHERE d.state = 'reserved'
ORDER BY d.created_at_ms, d.occurrence_id, s.seq LIMIT %(limit)s

-- name: deliveries_of_occurrence
SELECT d.occurrence_id, d.subscription_id, d.process_id, d.state, d.created_at_ms, d.started_at_ms,
       o.occurrence_id, o.source_type, o.source_key, o.idempotency_key, o.request_hash, o.payload, o.source,
       o.occurred_at_ms,
       s.subscription_id, s.handle, s.seq, s.session_id, s.name, s.source_type, s.source_key, s.enabled,
       s.source, s.event_ty, s.module_ref, s.required_surface_ref, s.process_ref, s.process_name,
       s.input_template, s.created_at_ms, s.updated_at_ms
FROM {schema}.host_event_deliveries d
JOIN {schema}.host_event_occurrences o ON o.occurrence_id = d.occurrence_id
JOIN {schema}.host_event_subscriptions s ON s.subscription_id = d.subscription_id
WHERE d.occurrence_id = %(occurrence_id)s
ORDER BY s.seq

-- Old occurrences whose deliveries have all started, and those deliveries.
-- name: count_prunable
SELECT count(*), sum((SELECT count(*) FROM {schema}.host_event_deliveries d WHERE d.occurrence_id = o.occurrence_id))
FROM {schema}.host_event_occurrences o
WHERE o.occurred_at_ms < %(before_ms)s
  AND NOT EXISTS (SELECT 1 FROM {schema}.host_event_deliveries d WHERE d.occurrence_id = o.occurrence_id AND d.state = 'reserved')

-- name: prune_deliveries
DELETE FROM {schema}.host_event_deliveries
WHERE occurrence_id IN (
    SELECT o.occurrence_id FROM {schema}.host_event_occurrences o
    WHERE o.occurred_at_ms < %(before_ms)s
      AND NOT EXISTS (SELECT 1 FROM {schema}.host_event_deliveries r
                      WHERE r.occurrence_id = o.occurrence_id AND r.state = 'reserved'))

-- name: prune_occurrences
DELETE FROM {schema}.host_event_occurrences AS o
WHERE o.occurred_at_ms < %(before_ms)s
  AND NOT EXISTS (SELECT 1 FROM {schema}.host_event_deliveries d WHERE d.occurrence_id = o.occurrence_id)
