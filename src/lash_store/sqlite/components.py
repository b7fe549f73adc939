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

#: name -> (version, DDL, tables) of every component after the registry.
COMPONENTS: dict[str, tuple[int, str, frozenset[str]]] = {
    EFFECTS: (EFFECTS_VERSION, EFFECTS_DDL, EFFECT_TABLES),
}
