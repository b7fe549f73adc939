"""Explicit, versioned schema management for PostgreSQL.

:func:`setup` (also :func:`migrate`) runs in one transaction on a private
connection, under a transaction-scoped advisory lock, so any number of
processes may run it at once: the first creates the schema, the others wait
and then find it current.  PostgreSQL's DDL is transactional, so a failed or
interrupted setup leaves nothing behind.  The ``schema_version`` row records
the application and the version; a schema that belongs to something else, or
that a newer release wrote, is refused with the typed errors, unchanged.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from lash_store.errors import InvalidInput, NotAStoreDatabase, SchemaMigrationRequired, UnsupportedSchemaVersion

SCHEMA_VERSION = 6
APPLICATION = "lash-store"
SCHEMA_KIND = "postgres"
DEFAULT_SCHEMA = "lash"

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _script(name: str) -> str:
    return resources.files(__package__ or "lash_store.postgres").joinpath(name).read_text(encoding="utf-8")


# Forward migrations: version -> the DDL that brings the previous version to version.  Each is additive and
# idempotent (IF NOT EXISTS), so it commutes with other additive migrations of the same version number.
# Version numbers may have gaps: migrations run in key order (4 was reserved for encryption at rest, which
# needed no schema change, and was never used).
# 2: the node index (kind, lane, sort key, tags, blob refs), blob children and staged writes.
# 3: the work queue's attempts, backoff instant, last claim and error, and dead letters (PoisonPolicy).
# 5: the process registry (one self-contained file: renumbering it changes only its key here).
# 6: the effect journal and the host-event store (likewise one file).
NODE_INDEX_VERSION = 2
QUEUE_POISON_VERSION = 3
PROCESS_REGISTRY_VERSION = 5
EFFECTS_VERSION = 6
_MIGRATIONS: dict[int, str] = {
    NODE_INDEX_VERSION: _script("schema_v2.sql"),
    QUEUE_POISON_VERSION: _script("schema_v3.sql"),
    PROCESS_REGISTRY_VERSION: _script("migration_5_processes.sql"),
    EFFECTS_VERSION: _script("migration_6_effects.sql"),
}
# ``schema.sql`` (with version 2 spliced in) creates this version; a new schema then runs every later
# migration too, so that a migrated database and a new one are the same by construction.
_BASE_VERSION = NODE_INDEX_VERSION


def check_schema_name(schema: object) -> str:
    """Schema names are plain lowercase identifiers (they are spliced into SQL, so nothing else is allowed)."""
    if not isinstance(schema, str) or not _IDENTIFIER.fullmatch(schema):
        raise InvalidInput("schema", "must be a lowercase SQL identifier ([a-z_][a-z0-9_]*, at most 63 characters)")
    return schema


def _lock_key(schema: str) -> tuple[int, int]:
    digest = hashlib.sha256(f"lash-store schema {schema}".encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True), int.from_bytes(digest[4:8], "big", signed=True)


def _ddl(schema: str) -> str:
    text = _script("schema.sql").replace("{node_index}", _MIGRATIONS[NODE_INDEX_VERSION])
    return text.replace("{schema}", schema)


def read_version(conn: psycopg.Connection[Any], schema: str) -> int | None:
    """The recorded version, ``None`` when the schema holds no lash-store tables; foreign content raises."""
    marker = conn.execute("SELECT to_regclass(%s)", (f"{schema}.schema_version",)).fetchone()
    if marker is None or marker[0] is None:
        relations = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
            (schema,),
        ).fetchone()
        if relations is not None and relations[0]:
            raise NotAStoreDatabase(f"postgres schema {schema!r}", "it holds tables but no lash-store schema marker")
        return None
    row = conn.execute(f"SELECT application, version FROM {schema}.schema_version").fetchone()
    if row is None or row[0] != APPLICATION:
        raise NotAStoreDatabase(
            f"postgres schema {schema!r}", f"it belongs to another application ({row and row[0]!r})"
        )
    version = int(row[1])
    if version > SCHEMA_VERSION:
        raise UnsupportedSchemaVersion(SCHEMA_KIND, SCHEMA_VERSION, version)
    return version


def setup(target: str | ConnectionPool, *, schema: str = DEFAULT_SCHEMA) -> int | None:
    """Create or migrate the schema; returns the version it was at before (``None``: it was created).

    Safe to run concurrently from many processes; never inside a caller's transaction.
    """
    schema = check_schema_name(schema)
    if isinstance(target, str):
        with psycopg.connect(target, autocommit=True) as conn:
            return _setup(conn, schema)
    with target.connection() as conn:
        conn.autocommit = True
        return _setup(conn, schema)


migrate = setup


def _setup(conn: psycopg.Connection[Any], schema: str) -> int | None:
    with conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '60s'")
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", _lock_key(schema))
        found = read_version(conn, schema)
        if found is None:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            conn.execute(_ddl(schema))
            _migrate(conn, schema, _BASE_VERSION)
            conn.execute(
                f"INSERT INTO {schema}.schema_version (application, version) VALUES (%s, %s)",
                (APPLICATION, SCHEMA_VERSION),
            )
            return None
        _migrate(conn, schema, found)
        if found < SCHEMA_VERSION:
            conn.execute(
                f"UPDATE {schema}.schema_version SET version = %s, upgraded_at = now()",
                (SCHEMA_VERSION,),
            )
        return found


def _migrate(conn: psycopg.Connection[Any], schema: str, found: int) -> None:
    """Apply every forward migration after ``found``, in order (inside the caller's transaction)."""
    for version in sorted(version for version in _MIGRATIONS if found < version <= SCHEMA_VERSION):
        conn.execute(_MIGRATIONS[version].replace("{schema}", schema))
        if version == NODE_INDEX_VERSION:
            _backfill_node_kinds(conn, schema)


def _backfill_node_kinds(conn: psycopg.Connection[Any], schema: str) -> None:
    """Version 2 indexes nodes by kind: fill it in from the bodies of nodes written before (in the same transaction).

    Older nodes cannot have a lane, sort key, tags or blob refs (their bodies
    could not hold them), so ``kind`` is the only column to fill.  An
    undecodable body fails the migration, which then changes nothing.
    """
    from lash_store.core.graph import decode_node  # the codec, not the service: no import cycle

    rows = conn.execute(f"SELECT session_id, node_id, body FROM {schema}.graph_nodes WHERE kind IS NULL").fetchall()
    with conn.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {schema}.graph_nodes SET kind = %s WHERE session_id = %s AND node_id = %s",
            [(decode_node(node_id, bytes(body)).kind, session_id, node_id) for session_id, node_id, body in rows],
        )


def check(conn: psycopg.Connection[Any], schema: str) -> int | None:
    """Read-only check at open: the current version opens, an older one needs :func:`migrate`."""
    found = read_version(conn, schema)
    if found is not None and found < SCHEMA_VERSION:
        raise SchemaMigrationRequired(SCHEMA_KIND, SCHEMA_VERSION, found, f"postgres schema {schema!r}")
    return found
