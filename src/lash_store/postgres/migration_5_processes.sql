-- Schema version 5 of lash-store on PostgreSQL: the process registry.  ``{schema}`` is the configured schema.
-- One self-contained, additive and idempotent migration (IF NOT EXISTS): renumbering it only changes its key
-- in ``schema._MIGRATIONS``, and it commutes with the other additive migrations.
--
-- Unlike the session tables, these are deployment-wide: every worker of every session shares them, and
-- their leading key is the process id (distribute by process_id).  Interpreted fields are columns;
-- opaque values are canonical JSON *text*, not jsonb, so that what is read back is exactly what was
-- hashed (jsonb would rewrite numbers and drop duplicate keys).  Arbiters are unique constraints;
-- every write to a process first locks its row (SELECT ... FOR NO KEY UPDATE), and its event sequence is
-- read and advanced under that lock.  No foreign keys: retention deletes a process's rows explicitly.
-- Ids are ordered byte by byte (COLLATE "C"), as on SQLite, whatever the database's locale: listings and
-- their keyset pages come out in the same order on every backend.

CREATE TABLE IF NOT EXISTS {schema}.processes (
    process_id text COLLATE "C" PRIMARY KEY,
    registration_hash text NOT NULL,
    input text NOT NULL,
    event_types text NOT NULL,
    owner_session_id text NOT NULL,
    owner_agent_frame_id text,
    host_profile_id text NOT NULL,
    caused_by text,
    status text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
    await_output text,
    external_ref text,
    last_sequence bigint NOT NULL DEFAULT 0 CHECK (last_sequence >= 0),
    created_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL
) WITH (fillfactor = 80);
CREATE INDEX IF NOT EXISTS processes_by_status ON {schema}.processes (status, process_id);
CREATE INDEX IF NOT EXISTS processes_terminal_age ON {schema}.processes (updated_at_ms) WHERE status <> 'running';

CREATE TABLE IF NOT EXISTS {schema}.process_events (
    process_id text COLLATE "C" NOT NULL,
    sequence bigint NOT NULL CHECK (sequence >= 1),
    event_type text NOT NULL,
    payload text NOT NULL,
    payload_hash text NOT NULL,
    idempotency_key text,
    occurred_at_ms bigint NOT NULL,
    semantics text NOT NULL,
    is_wake smallint NOT NULL,
    PRIMARY KEY (process_id, sequence)
);
-- The arbiter of replay keys: one event per key and process.
CREATE UNIQUE INDEX IF NOT EXISTS process_events_replay ON {schema}.process_events (process_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS {schema}.process_wake_acks (
    process_id text COLLATE "C" NOT NULL,
    sequence bigint NOT NULL,
    acked_at_ms bigint NOT NULL,
    PRIMARY KEY (process_id, sequence)
);

CREATE TABLE IF NOT EXISTS {schema}.process_handle_grants (
    scope_id text COLLATE "C" NOT NULL,
    process_id text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    descriptor text NOT NULL,
    PRIMARY KEY (scope_id, process_id)
);
CREATE INDEX IF NOT EXISTS process_handle_grants_session ON {schema}.process_handle_grants (session_id);
CREATE INDEX IF NOT EXISTS process_handle_grants_process ON {schema}.process_handle_grants (process_id);

-- The lease of a process; the fencing counter survives releases.  Renewals rewrite this narrow row only.
CREATE TABLE IF NOT EXISTS {schema}.process_leases (
    process_id text COLLATE "C" PRIMARY KEY,
    lease_owner_id text,
    lease_token text,
    fencing_token bigint NOT NULL CHECK (fencing_token >= 0),
    claimed_at_ms bigint NOT NULL,
    expires_at_ms bigint NOT NULL
) WITH (fillfactor = 50);
