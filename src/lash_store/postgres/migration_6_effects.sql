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
