"""The session database schema (version 3) and the open-time identity check."""

from __future__ import annotations

import sqlite3

from lash_store.errors import NotAStoreDatabase, UnsupportedSchemaVersion

SCHEMA_VERSION = 3
APPLICATION_ID = 0x4C415348  # "LASH": marks a file as a lash-store session database
SCHEMA_KIND = "session"

DDL = """
-- A rowid table: new blobs append at the end; only the small hash index takes random inserts.
CREATE TABLE IF NOT EXISTS blobs (
    id INTEGER PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    encoding TEXT NOT NULL,
    kind TEXT,
    raw_size INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    content BLOB NOT NULL
);

-- One head row exists from creation on; ``session_id`` stays NULL until the first commit binds the file.
-- The graph counters and the usage ledger live on it, so a commit rewrites one small row, not three.
CREATE TABLE IF NOT EXISTS session_head (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    session_id TEXT,
    head_revision INTEGER NOT NULL DEFAULT 0,
    checkpoint_ref TEXT,
    leaf_node_id TEXT,
    body BLOB,
    node_count INTEGER NOT NULL DEFAULT 0,
    user_message_count INTEGER NOT NULL DEFAULT 0,
    usage_ledger BLOB -- msgpack list of TokenLedgerEntry totals, in order of first appearance
);
INSERT OR IGNORE INTO session_head (singleton) VALUES (1);

CREATE TABLE IF NOT EXISTS graph_nodes (
    seq INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL UNIQUE,
    parent_node_id TEXT,
    tombstoned INTEGER NOT NULL DEFAULT 0,
    user_text TEXT,
    body BLOB NOT NULL
);

-- Counters follow every graph change, whichever statement makes it.
CREATE TRIGGER IF NOT EXISTS graph_nodes_count_insert AFTER INSERT ON graph_nodes BEGIN
    UPDATE session_head SET
        node_count = node_count + (NEW.tombstoned = 0),
        user_message_count = user_message_count + (NEW.tombstoned = 0 AND NEW.user_text IS NOT NULL);
END;
CREATE TRIGGER IF NOT EXISTS graph_nodes_count_update AFTER UPDATE ON graph_nodes BEGIN
    UPDATE session_head SET
        node_count = node_count - (OLD.tombstoned = 0) + (NEW.tombstoned = 0),
        user_message_count = user_message_count
            - (OLD.tombstoned = 0 AND OLD.user_text IS NOT NULL)
            + (NEW.tombstoned = 0 AND NEW.user_text IS NOT NULL);
END;
CREATE TRIGGER IF NOT EXISTS graph_nodes_count_delete AFTER DELETE ON graph_nodes BEGIN
    UPDATE session_head SET
        node_count = node_count - (OLD.tombstoned = 0),
        user_message_count = user_message_count - (OLD.tombstoned = 0 AND OLD.user_text IS NOT NULL);
END;

CREATE TABLE IF NOT EXISTS session_meta (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    session_id TEXT NOT NULL,
    session_name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    model TEXT NOT NULL,
    cwd TEXT,
    relation BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS runtime_turn_commits (
    session_id TEXT NOT NULL,
    turn_id TEXT NOT NULL,
    record BLOB NOT NULL,
    committed_at_ms INTEGER NOT NULL,
    PRIMARY KEY (session_id, turn_id)
);

CREATE TABLE IF NOT EXISTS queued_work_batches (
    enqueue_seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    source_key TEXT,
    delivery_policy TEXT NOT NULL,
    slot_policy TEXT NOT NULL,
    merge_key TEXT NOT NULL,
    available_at_ms INTEGER NOT NULL,
    enqueued_at_ms INTEGER NOT NULL,
    payloads BLOB NOT NULL,
    claim_id TEXT,
    claim_owner_id TEXT,
    claim_token TEXT,
    claim_fencing_token INTEGER NOT NULL DEFAULT 0,
    claim_claimed_at_ms INTEGER NOT NULL DEFAULT 0,
    claim_expires_at_ms INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_queued_work_source
    ON queued_work_batches(session_id, source_key) WHERE source_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_queued_work_ready
    ON queued_work_batches(session_id, enqueue_seq);
CREATE INDEX IF NOT EXISTS idx_queued_work_claim
    ON queued_work_batches(session_id, claim_id, claim_token);
CREATE TABLE IF NOT EXISTS queued_work_sessions (
    session_id TEXT PRIMARY KEY,
    last_fencing_token INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS attachment_manifest (
    attachment_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    canonical_uri TEXT NOT NULL,
    intent_at_ms INTEGER NOT NULL,
    committed_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS idx_attachment_manifest_uncommitted
    ON attachment_manifest(intent_at_ms) WHERE committed_at_ms IS NULL;

CREATE TABLE IF NOT EXISTS artifact_refs (
    artifact_ref TEXT PRIMARY KEY,
    blob_ref TEXT NOT NULL
);
"""

EXPECTED_TABLES = frozenset(
    {
        "blobs",
        "session_head",
        "graph_nodes",
        "session_meta",
        "runtime_turn_commits",
        "queued_work_batches",
        "queued_work_sessions",
        "attachment_manifest",
        "artifact_refs",
    }
)


class Identity:
    """What a file says about itself (the caller reads it inside one transaction)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.user_version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        self.application_id: int = conn.execute("PRAGMA application_id").fetchone()[0]
        self.objects = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")}

    @classmethod
    def read(cls, conn: sqlite3.Connection) -> Identity:
        """Read the identity in one read transaction, before anything is modified."""
        conn.execute("BEGIN")
        try:
            return cls(conn)
        finally:
            conn.execute("COMMIT")

    @property
    def is_empty(self) -> bool:
        return self.user_version == 0 and not self.objects

    @property
    def is_complete(self) -> bool:
        return self.objects >= EXPECTED_TABLES

    def check(self, path: str) -> None:
        """Raise unless this is an empty file or one of our version-3 databases."""
        if self.user_version not in (0, SCHEMA_VERSION):
            raise UnsupportedSchemaVersion(SCHEMA_KIND, SCHEMA_VERSION, self.user_version)
        if self.user_version == 0 and self.objects:
            raise NotAStoreDatabase(path, "it has tables but no lash-store schema version")
        if self.user_version == SCHEMA_VERSION and self.application_id != APPLICATION_ID:
            raise NotAStoreDatabase(path, f"it belongs to another application (id {self.application_id})")


def initialise(conn: sqlite3.Connection) -> None:
    """Create the schema and stamp version and identity (caller holds the write transaction)."""
    for statement in _statements(DDL):
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def _statements(script: str) -> list[str]:
    """Split the DDL into statements, keeping trigger bodies whole."""
    statements, current = [], []
    for line in script.splitlines():
        if not line.strip() or line.lstrip().startswith("--"):
            continue
        current.append(line)
        joined = "\n".join(current)
        if sqlite3.complete_statement(joined):
            statements.append(joined)
            current = []
    return statements
