-- Schema version 6 of lash-store on PostgreSQL: the effect journal and the host-event store.
-- ``{schema}`` is the configured schema.  (Versions 3 to 5 belong to other components being merged; this
-- file is self-contained and depends only on version 2.)
--
-- Deployment-wide tables like the registry's: interpreted fields are columns, opaque values canonical
-- JSON text.  The journal's primary key arbitrates two first claims of one effect (INSERT ... ON CONFLICT
-- DO NOTHING; the loser then locks and reads the winner's row); every other write locks the row first
-- (SELECT ... FOR UPDATE) and reads the database clock after the lock, so leases never depend on a
-- worker's wall clock.

CREATE TABLE IF NOT EXISTS {schema}.effect_journal (
    scope_identity text COLLATE "C" NOT NULL,
    replay_key text COLLATE "C" NOT NULL,
    scope_kind text NOT NULL,
    scope_id text NOT NULL,
    envelope_hash text NOT NULL,
    status text NOT NULL CHECK (status IN ('in_progress', 'released', 'completed', 'failed')),
    outcome text,
    error text,
    lease_owner_id text,
    lease_token text,
    lease_expires_at_ms bigint NOT NULL,
    due_at_ms bigint,
    attempts integer NOT NULL CHECK (attempts >= 1),
    created_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL,
    PRIMARY KEY (scope_identity, replay_key)
) WITH (fillfactor = 80);
CREATE INDEX IF NOT EXISTS effect_journal_age ON {schema}.effect_journal (status, updated_at_ms);

-- The host-event store.  Handles number from a sequence (never reused); an occurrence's id is derived from
-- (source type, source key, idempotency key), so its primary key is the idempotency arbiter per source;
-- the (occurrence, subscription) primary key hands each delivery out once, as 'reserved', until it is
-- marked 'started' (the transactional outbox).
CREATE SEQUENCE IF NOT EXISTS {schema}.host_event_subscription_seq;

CREATE TABLE IF NOT EXISTS {schema}.host_event_subscriptions (
    subscription_id text COLLATE "C" PRIMARY KEY,
    handle text COLLATE "C" NOT NULL,
    seq bigint NOT NULL UNIQUE,
    session_id text COLLATE "C" NOT NULL,
    name text,
    source_type text NOT NULL,
    source_key text NOT NULL,
    enabled boolean NOT NULL,
    source text NOT NULL,
    event_ty text NOT NULL,
    module_ref text NOT NULL,
    required_surface_ref text NOT NULL,
    process_ref text NOT NULL,
    process_name text NOT NULL,
    input_template text NOT NULL,
    created_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL,
    UNIQUE (session_id, handle)
);
CREATE INDEX IF NOT EXISTS host_event_subscriptions_source
    ON {schema}.host_event_subscriptions (source_type, source_key, enabled, session_id, seq);
CREATE INDEX IF NOT EXISTS host_event_subscriptions_session ON {schema}.host_event_subscriptions (session_id, seq);

CREATE TABLE IF NOT EXISTS {schema}.host_event_occurrences (
    occurrence_id text COLLATE "C" PRIMARY KEY,
    source_type text NOT NULL,
    source_key text NOT NULL,
    idempotency_key text NOT NULL,
    request_hash text NOT NULL,
    payload text NOT NULL,
    source text NOT NULL,
    occurred_at_ms bigint NOT NULL,
    UNIQUE (source_type, source_key, idempotency_key)
);
CREATE INDEX IF NOT EXISTS host_event_occurrences_age ON {schema}.host_event_occurrences (occurred_at_ms);

CREATE TABLE IF NOT EXISTS {schema}.host_event_deliveries (
    occurrence_id text COLLATE "C" NOT NULL,
    subscription_id text COLLATE "C" NOT NULL,
    process_id text NOT NULL,
    state text NOT NULL CHECK (state IN ('reserved', 'started')),
    created_at_ms bigint NOT NULL,
    started_at_ms bigint,
    PRIMARY KEY (occurrence_id, subscription_id)
);
CREATE INDEX IF NOT EXISTS host_event_deliveries_pending ON {schema}.host_event_deliveries (state, created_at_ms);
CREATE INDEX IF NOT EXISTS host_event_deliveries_process ON {schema}.host_event_deliveries (process_id);
