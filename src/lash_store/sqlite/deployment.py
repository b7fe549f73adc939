"""The deployment database file: deployment-wide components (the process registry first) in one SQLite file.

A session file holds one conversation; a deployment file holds what every
session and worker of a deployment shares.  It has its own identity
(``PRAGMA application_id`` = :data:`APPLICATION_ID`, "LASD") and file format
(``PRAGMA user_version`` = :data:`FILE_VERSION`), and records each component's
schema version in ``lash_components``, so that later components (host events,
the effect journal) can join the same file.  The open rules are SPEC decision
4's, with these numbers:

* not SQLite -> :class:`NotAStoreDatabase`;
* ``user_version`` neither 0 nor :data:`FILE_VERSION` -> :class:`UnsupportedSchemaVersion` (whatever the identity);
* ``user_version`` 0 with objects, or :data:`FILE_VERSION` with another ``application_id``
  -> :class:`NotAStoreDatabase`;
* a component recorded at a newer version than this release's -> :class:`UnsupportedSchemaVersion`;
* an empty file -> initialised, version, identity and tables in one ``BEGIN IMMEDIATE`` transaction
  (concurrent first opens all succeed: the loser re-checks under the lock and finds it done);
* a component recorded at an older version -> migrated at open, in one ``BEGIN IMMEDIATE`` transaction
  (every step is a layout change that keeps every row: indexes dropped or made partial, a table
  rebuilt with the same columns), then stamped; a concurrent opener re-checks under the lock.

Nothing is modified before the checks pass.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator

from lash_store.errors import NotAStoreDatabase, UnsupportedSchemaVersion
from lash_store.sqlite.components import COMPONENTS, STEPS
from lash_store.sqlite.schema import statements

FILE_VERSION = 1
APPLICATION_ID = 0x4C415344  # "LASD": a lash-store deployment database
PROCESSES = "processes"
PROCESSES_VERSION = 2  # 2: no index by status (nothing read it), grants deleted by session through the key
FILE_KIND = "deployment database"

_COMPONENTS_DDL = """
CREATE TABLE IF NOT EXISTS lash_components (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
"""

PROCESSES_DDL = """
-- One row per process: interpreted fields as columns, opaque parts as canonical JSON text.
CREATE TABLE IF NOT EXISTS processes (
    process_id TEXT PRIMARY KEY,
    registration_hash TEXT NOT NULL,
    input TEXT NOT NULL,
    event_types TEXT NOT NULL,
    owner_session_id TEXT NOT NULL,
    owner_agent_frame_id TEXT,
    host_profile_id TEXT NOT NULL,
    caused_by TEXT,
    status TEXT NOT NULL,
    await_output TEXT,
    external_ref TEXT,
    last_sequence INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
-- Retention: finished processes only (a running one never enters it).
CREATE INDEX IF NOT EXISTS processes_terminal_age ON processes(updated_at_ms) WHERE status <> 'running';

CREATE TABLE IF NOT EXISTS process_events (
    process_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    idempotency_key TEXT,
    occurred_at_ms INTEGER NOT NULL,
    semantics TEXT NOT NULL,
    is_wake INTEGER NOT NULL,
    PRIMARY KEY (process_id, sequence)
);
-- The arbiter of replay keys: one event per key and process.
CREATE UNIQUE INDEX IF NOT EXISTS process_events_replay
    ON process_events(process_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS process_wake_acks (
    process_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    acked_at_ms INTEGER NOT NULL,
    PRIMARY KEY (process_id, sequence)
) WITHOUT ROWID;

-- A scope id starts with its session's ('session:<id>', 'session:<id>/frame:<frame>'), so a session's grants
-- are two ranges of the key (delete_session_grants); only the lookups by process need an index.
CREATE TABLE IF NOT EXISTS process_handle_grants (
    scope_id TEXT NOT NULL,
    process_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    descriptor TEXT NOT NULL,
    PRIMARY KEY (scope_id, process_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS process_handle_grants_process ON process_handle_grants(process_id);

-- The lease of a process; the fencing counter survives releases.
CREATE TABLE IF NOT EXISTS process_leases (
    process_id TEXT PRIMARY KEY,
    lease_owner_id TEXT,
    lease_token TEXT,
    fencing_token INTEGER NOT NULL,
    claimed_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
"""

PROCESS_TABLES = frozenset(
    {"processes", "process_events", "process_wake_acks", "process_handle_grants", "process_leases"}
)


class DeploymentIdentity:
    """What a file says about itself, read inside one transaction before anything is modified."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.user_version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        self.application_id: int = conn.execute("PRAGMA application_id").fetchone()[0]
        self.objects = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")}
        self.components: dict[str, int] = {}
        if "lash_components" in self.objects:
            self.components = {name: version for name, version in conn.execute("SELECT * FROM lash_components")}

    @property
    def is_empty(self) -> bool:
        return self.user_version == 0 and not self.objects

    @property
    def is_deleted(self) -> bool:
        return False  # only session files are deleted by marking them (lash_store.sqlite.deletion)

    def _recorded(self) -> Iterator[tuple[str, int | None, int]]:
        """Per component: its name, the version the file records (None: absent or its tables missing), and
        this release's version."""
        for name, (version, tables) in _expected().items():
            recorded = self.components.get(name) if self.objects >= tables else None
            yield name, recorded, version

    def _components_found(self, *, current: bool) -> bool:
        """Every component recorded with its tables: at this release's version with ``current``, else at any
        version this release can read."""
        for _, recorded, version in self._recorded():
            if recorded is None or (recorded != version if current else not 0 < recorded <= version):
                return False
        return True

    @property
    def is_complete(self) -> bool:
        """Every component's tables are there (an older layout's too: a read-only open reads it as it is)."""
        return self._components_found(current=False)

    def older(self) -> dict[str, int]:
        """The components recorded at an older version than this release's (with their tables), by name."""
        return {
            name: recorded
            for name, recorded, version in self._recorded()
            if recorded is not None and 0 < recorded < version
        }

    @property
    def needs_migration(self) -> bool:
        return self.user_version == FILE_VERSION and bool(self.older())

    @property
    def needs_initialising(self) -> bool:
        return not self.needs_migration and (self.user_version == 0 or not self._components_found(current=True))

    def check(self, path: str, *, migrate: bool = False) -> None:
        """Raise unless this is an empty file or a deployment file this release can open (see the module)."""
        if self.user_version not in (0, FILE_VERSION):
            raise UnsupportedSchemaVersion(FILE_KIND, FILE_VERSION, self.user_version)
        if self.user_version == 0 and self.objects:
            raise NotAStoreDatabase(path, "it has tables but no lash-store schema version")
        if self.user_version == FILE_VERSION and self.application_id != APPLICATION_ID:
            raise NotAStoreDatabase(path, f"it is not a lash-store deployment database (id {self.application_id})")
        found = self.components.get(PROCESSES)
        if found is not None and found > PROCESSES_VERSION:
            raise UnsupportedSchemaVersion("process registry", PROCESSES_VERSION, found)
        for name, (version, _, _) in COMPONENTS.items():
            found = self.components.get(name)
            if found is not None and found > version:
                raise UnsupportedSchemaVersion(name, version, found)


class DeploymentSchema:
    """The deployment file as a :class:`~lash_store.sqlite.schema.DatabaseSchema` for a connection."""

    def identity(self, conn: sqlite3.Connection) -> DeploymentIdentity:
        return DeploymentIdentity(conn)

    def initialise(self, conn: sqlite3.Connection) -> None:
        for statement in statements(_COMPONENTS_DDL + PROCESSES_DDL):
            conn.execute(statement)
        conn.execute(
            "INSERT OR REPLACE INTO lash_components (component, version) VALUES (?, ?)", (PROCESSES, PROCESSES_VERSION)
        )
        for name, (version, ddl, _) in COMPONENTS.items():
            for statement in statements(ddl):
                conn.execute(statement)
            conn.execute("INSERT OR REPLACE INTO lash_components (component, version) VALUES (?, ?)", (name, version))
        conn.execute(f"PRAGMA user_version = {FILE_VERSION}")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def initialise_checked(self, conn: sqlite3.Connection, path: str) -> None:
        identity = DeploymentIdentity(conn)  # re-read under the write lock: another opener may have won
        identity.check(path)
        if identity.needs_initialising:
            self.initialise(conn)

    def migrate(self, conn: sqlite3.Connection, path: str) -> int | None:
        """Bring older components up to date (the caller holds ``BEGIN IMMEDIATE``); the oldest version found,
        ``None`` when another opener migrated the file first."""
        identity = DeploymentIdentity(conn)  # re-read under the write lock
        identity.check(path)
        older = identity.older() if identity.user_version == FILE_VERSION else {}
        if not older:
            return None
        expected = _expected()
        for name, found in older.items():
            for step in range(found, expected[name][0]):
                _STEPS[name][step](conn)
        self.initialise(conn)  # creates what is missing and stamps every version
        return min(older.values())


def _processes_from_1(conn: sqlite3.Connection) -> None:
    """Version 1 -> 2: drop the two indexes no query read (see PROCESSES_DDL)."""
    conn.execute("DROP INDEX IF EXISTS processes_by_status")
    conn.execute("DROP INDEX IF EXISTS process_handle_grants_session")


#: name -> the step from each older version to the next, for every component of the file.
_STEPS: dict[str, dict[int, Callable[[sqlite3.Connection], None]]] = {PROCESSES: {1: _processes_from_1}, **STEPS}


def _expected() -> dict[str, tuple[int, frozenset[str]]]:
    """Every component of the file: this release's version and its tables."""
    expected = {PROCESSES: (PROCESSES_VERSION, PROCESS_TABLES)}
    expected.update({name: (version, tables) for name, (version, _, tables) in COMPONENTS.items()})
    return expected


DEPLOYMENT_SCHEMA = DeploymentSchema()
