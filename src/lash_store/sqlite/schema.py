"""The session database schema and the open-time identity check (SPEC decision 4).

``PRAGMA user_version`` is 3, the file format SPEC decision 4 names.  The
layout inside version 3 has changed several times, so it carries its own revision in
the one-row ``lash_schema`` table; files written before that table existed are
recognised by their tables (revision 1 kept ``graph_stats``/``usage_totals``,
revision 2 kept graph counters on the head row, maintained by triggers).  An
older revision opens only after an explicit migration
(:mod:`lash_store.sqlite.migrations`).
"""

from __future__ import annotations

import sqlite3
from typing import Protocol

from lash_store.errors import NotAStoreDatabase, SchemaMigrationRequired, StoreNotFound, UnsupportedSchemaVersion
from lash_store.sqlite.deletion import DELETED_MARK

SCHEMA_VERSION = 3
LAYOUT_REVISION = 5  # 1: graph_stats + usage_totals; 2: counters on the head row, by triggers; 3: no triggers;
# 4: the node index, blob edges, staged writes; 5: queue attempts, backoff and dead letters
APPLICATION_ID = 0x4C415348  # "LASH": marks a file as a lash-store session database
SCHEMA_KIND = "session"

DDL = """
-- A rowid table: new blobs append at the end; only the small hash index takes random inserts.
CREATE TABLE IF NOT EXISTS lash_schema (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    revision INTEGER NOT NULL
);

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

-- kind, lane and sort_key are copies of the body's fields for the node index (revision 4).
CREATE TABLE IF NOT EXISTS graph_nodes (
    seq INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL UNIQUE,
    parent_node_id TEXT,
    tombstoned INTEGER NOT NULL DEFAULT 0,
    user_text TEXT,
    body BLOB NOT NULL,
    kind TEXT,
    lane TEXT,
    sort_key TEXT
);
CREATE INDEX IF NOT EXISTS idx_graph_nodes_sort ON graph_nodes(kind, lane, sort_key) WHERE sort_key IS NOT NULL;

-- One row per tag of a node: ``tag`` is the canonical JSON of [key, value] (core.graph.tag_text).
CREATE TABLE IF NOT EXISTS node_tags (
    node_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY (node_id, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_node_tags_tag ON node_tags(tag, node_id);

-- Blobs a node keeps alive (GC roots while the node is live).
CREATE TABLE IF NOT EXISTS node_blob_refs (
    node_id TEXT NOT NULL,
    ref TEXT NOT NULL,
    PRIMARY KEY (node_id, ref)
) WITHOUT ROWID;

-- Children of composite blobs: GC keeps what a reachable blob names.
CREATE TABLE IF NOT EXISTS blob_edges (
    parent_ref TEXT NOT NULL,
    child_ref TEXT NOT NULL,
    PRIMARY KEY (parent_ref, child_ref)
) WITHOUT ROWID;

-- Pending writes per anchor (no foreign key: they may be written before their anchor node).
CREATE TABLE IF NOT EXISTS staged_writes (
    seq INTEGER PRIMARY KEY,
    anchor_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    task_path TEXT NOT NULL,
    channel TEXT NOT NULL,
    value BLOB NOT NULL,
    UNIQUE (anchor_id, task_id, idx)
);

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
    claim_expires_at_ms INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    retry_at_ms INTEGER NOT NULL DEFAULT 0,
    last_owner_id TEXT,
    last_claimed_at_ms INTEGER,
    last_error TEXT,
    dead_at_ms INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_queued_work_source
    ON queued_work_batches(session_id, source_key) WHERE source_key IS NOT NULL;
-- Revision 5: the FIFO index holds live batches only; dead letters have their own (usually empty) one.
CREATE INDEX IF NOT EXISTS idx_queued_work_live
    ON queued_work_batches(session_id, enqueue_seq) WHERE dead_at_ms IS NULL;
CREATE INDEX IF NOT EXISTS idx_queued_work_dead
    ON queued_work_batches(session_id, enqueue_seq) WHERE dead_at_ms IS NOT NULL;
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
        "lash_schema",
        "blobs",
        "session_head",
        "graph_nodes",
        "session_meta",
        "runtime_turn_commits",
        "queued_work_batches",
        "queued_work_sessions",
        "attachment_manifest",
        "artifact_refs",
        "node_tags",
        "node_blob_refs",
        "blob_edges",
        "staged_writes",
    }
)


class Identity:
    """What a file says about itself (the caller reads it inside one transaction)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.user_version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        self.application_id: int = conn.execute("PRAGMA application_id").fetchone()[0]
        self.objects = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")}
        self.revision = self._revision(conn)

    def _revision(self, conn: sqlite3.Connection) -> int | None:
        """The layout revision: recorded, or recognised in files written before it was recorded."""
        if "lash_schema" in self.objects:
            row = conn.execute("SELECT revision FROM lash_schema").fetchone()
            return row[0] if row is not None and type(row[0]) is int else None
        if self.user_version != SCHEMA_VERSION or not self.objects:
            return None
        return 1 if "graph_stats" in self.objects else 2

    @property
    def is_deleted(self) -> bool:
        """Marked by :mod:`lash_store.sqlite.deletion` before it unlinks the file (see there)."""
        return self.user_version == DELETED_MARK

    @property
    def is_empty(self) -> bool:
        return self.user_version == 0 and not self.objects

    @property
    def is_complete(self) -> bool:
        return self.objects >= EXPECTED_TABLES

    @property
    def needs_migration(self) -> bool:
        return self.user_version == SCHEMA_VERSION and self.revision is not None and self.revision < LAYOUT_REVISION

    @property
    def needs_initialising(self) -> bool:
        return not self.needs_migration and (self.user_version == 0 or not self.is_complete)

    def check(self, path: str, *, migrate: bool = False) -> None:
        """Raise unless this is an empty file or one of our databases (SPEC decision 4, in order).

        Then, inside version 3: a newer layout revision is refused, an older one
        needs ``migrate`` (nothing is modified before the caller agrees).
        """
        if self.is_deleted:
            raise StoreNotFound(path, "the session was deleted")
        if self.user_version not in (0, SCHEMA_VERSION):
            raise UnsupportedSchemaVersion(SCHEMA_KIND, SCHEMA_VERSION, self.user_version)
        if self.user_version == 0 and self.objects:
            raise NotAStoreDatabase(path, "it has tables but no lash-store schema version")
        if self.user_version == SCHEMA_VERSION and self.application_id != APPLICATION_ID:
            raise NotAStoreDatabase(path, f"it belongs to another application (id {self.application_id})")
        if self.revision is not None and self.revision > LAYOUT_REVISION:
            raise UnsupportedSchemaVersion(f"{SCHEMA_KIND} layout", LAYOUT_REVISION, self.revision)
        if self.needs_migration and not migrate:
            raise SchemaMigrationRequired(SCHEMA_KIND, LAYOUT_REVISION, self.revision or 0, path)


def initialise(conn: sqlite3.Connection) -> None:
    """Create the schema and stamp version, identity and layout revision (caller holds the write transaction)."""
    for statement in statements(DDL):
        conn.execute(statement)
    conn.execute("INSERT OR REPLACE INTO lash_schema (singleton, revision) VALUES (1, ?)", (LAYOUT_REVISION,))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def initialise_checked(conn: sqlite3.Connection, path: str) -> None:
    """Initialise under the write lock, after re-checking: another opener may have won the race."""
    identity = Identity(conn)
    identity.check(path)
    if identity.needs_initialising:
        initialise(conn)


def statements(script: str) -> list[str]:
    """Split a DDL script into statements (trigger bodies stay whole)."""
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


# ---------------------------------------------------------------------------
# What a connection needs to know about the kind of file it opens


class IdentityView(Protocol):
    """What a file says about itself, read before anything is modified (see :class:`Identity`)."""

    @property
    def is_empty(self) -> bool: ...

    @property
    def is_deleted(self) -> bool: ...

    @property
    def is_complete(self) -> bool: ...

    @property
    def needs_migration(self) -> bool: ...

    @property
    def needs_initialising(self) -> bool: ...

    def check(self, path: str, *, migrate: bool = False) -> None: ...


class DatabaseSchema(Protocol):
    """One kind of lash-store database file (a session file, a deployment file): its identity and set-up.

    A :class:`~lash_store.sqlite.connection.Connection` opens a file of one
    kind and applies the open rules of SPEC decision 4 with it: the identity is
    read and checked before anything is modified, creation happens under
    ``BEGIN IMMEDIATE`` after a re-check, and a migration only when asked for.
    """

    def identity(self, conn: sqlite3.Connection) -> IdentityView:
        """Read the identity (the caller holds a transaction)."""
        ...

    def initialise(self, conn: sqlite3.Connection) -> None:
        """Create the schema of a new private in-memory database (the caller holds the write transaction)."""
        ...

    def initialise_checked(self, conn: sqlite3.Connection, path: str) -> None:
        """Create the schema under the write lock after re-checking the identity (another opener may have won)."""
        ...

    def migrate(self, conn: sqlite3.Connection, path: str) -> int | None:
        """Bring an older file up to date under the write lock; the revision migrated from, or ``None``."""
        ...


class SessionSchema:
    """The session file (``user_version`` 3, :data:`APPLICATION_ID`, layout revisions)."""

    def identity(self, conn: sqlite3.Connection) -> Identity:
        return Identity(conn)

    def initialise(self, conn: sqlite3.Connection) -> None:
        initialise(conn)

    def initialise_checked(self, conn: sqlite3.Connection, path: str) -> None:
        initialise_checked(conn, path)

    def migrate(self, conn: sqlite3.Connection, path: str) -> int | None:
        from lash_store.sqlite import migrations  # migrations build on this module

        return migrations.migrate(conn, path)


SESSION_SCHEMA = SessionSchema()
