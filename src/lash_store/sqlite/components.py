"""The deployment file's components after the process registry: the effect journal and the host-event store.

Each component has a name, a version recorded in ``lash_components`` and its
DDL (``CREATE ... IF NOT EXISTS``, so that a deployment file written before
the component existed gains its tables at the next open).
"""

from __future__ import annotations

EFFECTS = "effects"
EFFECTS_VERSION = 1

EFFECTS_DDL = """
-- The effect journal: one row per (scope identity, replay key).  Statuses: in_progress (claimed: the lease
-- is live while lease_expires_at_ms is in the future), released (given up after a retryable failure:
-- claimable at once), completed and failed (final, replayed).
CREATE TABLE IF NOT EXISTS effect_journal (
    scope_identity TEXT NOT NULL,
    replay_key TEXT NOT NULL,
    scope_kind TEXT NOT NULL,
    scope_id TEXT NOT NULL,
    envelope_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('in_progress', 'released', 'completed', 'failed')),
    outcome TEXT,
    error TEXT,
    lease_owner_id TEXT,
    lease_token TEXT,
    lease_expires_at_ms INTEGER NOT NULL,
    due_at_ms INTEGER,
    attempts INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (scope_identity, replay_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS effect_journal_age ON effect_journal(status, updated_at_ms);
"""

EFFECT_TABLES = frozenset({"effect_journal"})

HOST_EVENTS = "host_events"
HOST_EVENTS_VERSION = 1

HOST_EVENTS_DDL = """
-- Counters that are never reused (the subscription handle number).
CREATE TABLE IF NOT EXISTS host_event_counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- Subscriptions: interpreted fields as columns, opaque ones as canonical JSON text; handle = 'trigger:' || seq.
CREATE TABLE IF NOT EXISTS host_event_subscriptions (
    subscription_id TEXT PRIMARY KEY,
    handle TEXT NOT NULL,
    seq INTEGER NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    name TEXT,
    source_type TEXT NOT NULL,
    source_key TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    source TEXT NOT NULL,
    event_ty TEXT NOT NULL,
    module_ref TEXT NOT NULL,
    required_surface_ref TEXT NOT NULL,
    process_ref TEXT NOT NULL,
    process_name TEXT NOT NULL,
    input_template TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    UNIQUE (session_id, handle)
);
CREATE INDEX IF NOT EXISTS host_event_subscriptions_source
    ON host_event_subscriptions(source_type, source_key, enabled, session_id, seq);
CREATE INDEX IF NOT EXISTS host_event_subscriptions_session ON host_event_subscriptions(session_id, seq);

-- Occurrences: the id is derived from (source type, source key, idempotency key), so the primary key is the
-- idempotency arbiter per source.
CREATE TABLE IF NOT EXISTS host_event_occurrences (
    occurrence_id TEXT PRIMARY KEY,
    source_type TEXT NOT NULL,
    source_key TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    payload TEXT NOT NULL,
    source TEXT NOT NULL,
    occurred_at_ms INTEGER NOT NULL,
    UNIQUE (source_type, source_key, idempotency_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS host_event_occurrences_age ON host_event_occurrences(occurred_at_ms);

-- The delivery outbox: reserved -> started.
CREATE TABLE IF NOT EXISTS host_event_deliveries (
    occurrence_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    process_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'started')),
    created_at_ms INTEGER NOT NULL,
    started_at_ms INTEGER,
    PRIMARY KEY (occurrence_id, subscription_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS host_event_deliveries_pending ON host_event_deliveries(state, created_at_ms);
CREATE INDEX IF NOT EXISTS host_event_deliveries_process ON host_event_deliveries(process_id);
"""

HOST_EVENT_TABLES = frozenset(
    {"host_event_counters", "host_event_subscriptions", "host_event_occurrences", "host_event_deliveries"}
)

#: name -> (version, DDL, tables) of every component after the registry.
COMPONENTS: dict[str, tuple[int, str, frozenset[str]]] = {
    EFFECTS: (EFFECTS_VERSION, EFFECTS_DDL, EFFECT_TABLES),
    HOST_EVENTS: (HOST_EVENTS_VERSION, HOST_EVENTS_DDL, HOST_EVENT_TABLES),
}
