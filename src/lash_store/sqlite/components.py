"""The deployment file's components after the process registry: the effect journal and the host-event store.

Each component has a name, a version recorded in ``lash_components`` and its
DDL (``CREATE ... IF NOT EXISTS``, so that a deployment file written before
the component existed gains its tables at the next open).

Version 2 of both (and of the registry's tables, see :mod:`lash_store.sqlite.deployment`) keeps only the
secondary indexes a query uses, and lays the tables out for what a route writes: each routed delivery
commits a journal row, a process, a grant and the closed delivery, and every b-tree a commit touches is
at least one more page in the log.  :data:`STEPS` brings version 1 up to date.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from lash_store.sqlite.schema import statements

EFFECTS = "effects"
EFFECTS_VERSION = 2

EFFECTS_DDL = """
-- The effect journal: one row per (scope identity, replay key).  Statuses: in_progress (claimed: the lease
-- is live while lease_expires_at_ms is in the future), released (given up after a retryable failure:
-- claimable at once), completed and failed (final, replayed).
-- A rowid table (version 2; version 1 was WITHOUT ROWID): a finished row carries its outcome, often more than
-- a quarter of a page, which a WITHOUT ROWID b-tree moves to an overflow page of its own.
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
);
-- Retention (count_prunable_effects, prune_effects) reads finished rows only: a claim never enters this index
-- (version 1 indexed every row by status and age, so a claim and its result each moved an entry).
CREATE INDEX IF NOT EXISTS effect_journal_finished ON effect_journal(updated_at_ms)
    WHERE status IN ('completed', 'failed');
"""

EFFECT_TABLES = frozenset({"effect_journal"})

HOST_EVENTS = "host_events"
HOST_EVENTS_VERSION = 2

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
-- idempotency arbiter per source (version 1 also had a UNIQUE index on the three, which nothing read).
CREATE TABLE IF NOT EXISTS host_event_occurrences (
    occurrence_id TEXT PRIMARY KEY,
    source_type TEXT NOT NULL,
    source_key TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    payload TEXT NOT NULL,
    source TEXT NOT NULL,
    occurred_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
-- list_occurrences and retention.
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
-- Only reserved deliveries (pending_deliveries): a delivery leaves it when it starts, so it stays small.
CREATE INDEX IF NOT EXISTS host_event_deliveries_reserved ON host_event_deliveries(created_at_ms)
    WHERE state = 'reserved';
"""

HOST_EVENT_TABLES = frozenset(
    {"host_event_counters", "host_event_subscriptions", "host_event_occurrences", "host_event_deliveries"}
)

#: name -> (version, DDL, tables) of every component after the registry.
COMPONENTS: dict[str, tuple[int, str, frozenset[str]]] = {
    EFFECTS: (EFFECTS_VERSION, EFFECTS_DDL, EFFECT_TABLES),
    HOST_EVENTS: (HOST_EVENTS_VERSION, HOST_EVENTS_DDL, HOST_EVENT_TABLES),
}


# ---------------------------------------------------------------------------
# Version 1 -> 2

_EFFECT_COLUMNS = (
    "scope_identity, replay_key, scope_kind, scope_id, envelope_hash, status, outcome, error, lease_owner_id, "
    "lease_token, lease_expires_at_ms, due_at_ms, attempts, created_at_ms, updated_at_ms"
)
_OCCURRENCE_COLUMNS = (
    "occurrence_id, source_type, source_key, idempotency_key, request_hash, payload, source, occurred_at_ms"
)


def _rebuild(conn: sqlite3.Connection, table: str, columns: str, ddl: str) -> None:
    """Move ``table``'s rows into the table ``ddl`` creates under the same name (its indexes dropped first)."""
    conn.execute(f"ALTER TABLE {table} RENAME TO {table}_v1")
    for statement in statements(ddl):
        conn.execute(statement)
    conn.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}_v1")
    conn.execute(f"DROP TABLE {table}_v1")


def _effects_from_1(conn: sqlite3.Connection) -> None:
    conn.execute("DROP INDEX IF EXISTS effect_journal_age")  # replaced by effect_journal_finished
    _rebuild(conn, "effect_journal", _EFFECT_COLUMNS, EFFECTS_DDL)


def _host_events_from_1(conn: sqlite3.Connection) -> None:
    for index in ("host_event_occurrences_age", "host_event_deliveries_pending", "host_event_deliveries_process"):
        conn.execute(f"DROP INDEX IF EXISTS {index}")
    _rebuild(conn, "host_event_occurrences", _OCCURRENCE_COLUMNS, HOST_EVENTS_DDL)


#: name -> the step from each older version to the next (run under the caller's write transaction; the
#: deployment file adds the registry's and runs them).
STEPS: dict[str, dict[int, Callable[[sqlite3.Connection], None]]] = {
    EFFECTS: {1: _effects_from_1},
    HOST_EVENTS: {1: _host_events_from_1},
}
