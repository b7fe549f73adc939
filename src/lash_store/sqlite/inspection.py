"""What only the SQLite backend can say about itself: the file, SQLite's own integrity check, compaction."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lash_store.service.diagnostics import Problems, run_checks
from lash_store.sqlite import schema
from lash_store.sqlite.shared import Database

_DDL_OBJECT = re.compile(r"CREATE (?:UNIQUE )?(?:TABLE|INDEX|TRIGGER) IF NOT EXISTS (\w+)")

# Columns whose SQLite storage class the store relies on (NULL allowed where the schema allows it).
_COLUMN_TYPES: dict[str, dict[str, str]] = {
    "blobs": {"hash": "text", "encoding": "text", "raw_size": "integer", "created_at_ms": "integer", "content": "blob"},
    "session_head": {
        "session_id": "text",
        "head_revision": "integer",
        "body": "blob",
        "node_count": "integer",
        "user_message_count": "integer",
        "usage_ledger": "blob",
    },
    "graph_nodes": {"seq": "integer", "node_id": "text", "tombstoned": "integer", "body": "blob"},
    "runtime_turn_commits": {"turn_id": "text", "record": "blob", "committed_at_ms": "integer"},
    "queued_work_batches": {
        "batch_id": "text",
        "available_at_ms": "integer",
        "enqueued_at_ms": "integer",
        "payloads": "blob",
        "claim_fencing_token": "integer",
        "claim_expires_at_ms": "integer",
        "attempts": "integer",
        "retry_at_ms": "integer",
    },
    "queued_work_sessions": {"last_fencing_token": "integer"},
    "session_meta": {"session_id": "text", "created_at": "text", "relation": "blob"},
}


def file_bytes(path: Path | None) -> int:
    """Size of the database plus its write-ahead log (what the session occupies on disk)."""
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            total += os.stat(f"{path}{suffix}").st_size
    return total


def describe(connection: Database) -> dict[str, Any]:
    def body(conn: sqlite3.Connection) -> dict[str, Any]:
        identity = schema.Identity(conn)
        pragma = {
            name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_size", "page_count", "freelist_count")
        }
        return {
            "backend": "sqlite",
            "path": None if connection.path is None else str(connection.path),
            "file": {
                "size_bytes": file_bytes(connection.path),
                "page_size": pragma["page_size"],
                "page_count": pragma["page_count"],
                "freelist_pages": pragma["freelist_count"],
            },
            "schema": {
                "user_version": identity.user_version,
                "supported_version": schema.SCHEMA_VERSION,
                "application_id": identity.application_id,
                "layout_revision": identity.revision,
            },
        }

    return connection.read(body)


def integrity_checks(connection: Database) -> list[dict[str, Any]]:
    def body(conn: sqlite3.Connection) -> list[dict[str, Any]]:
        checks: list[tuple[str, Callable[[Problems], str]]] = [
            ("sqlite integrity", lambda problems: _integrity(conn, problems)),
            ("schema", lambda problems: _schema(conn, problems)),
            ("column types", lambda problems: _types(conn, problems)),
        ]
        return run_checks(checks)

    return connection.read(body)


def _integrity(conn: sqlite3.Connection, problems: Problems) -> str:
    rows = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    if rows != ["ok"]:
        for row in rows:
            problems.add(str(row))
    return "PRAGMA integrity_check"


def _schema(conn: sqlite3.Connection, problems: Problems) -> str:
    identity = schema.Identity(conn)
    if identity.user_version != schema.SCHEMA_VERSION:
        problems.add(f"schema version {identity.user_version}, expected {schema.SCHEMA_VERSION}")
    if identity.application_id != schema.APPLICATION_ID:
        problems.add(f"application id {identity.application_id}, expected {schema.APPLICATION_ID}")
    if identity.revision != schema.LAYOUT_REVISION:
        problems.add(f"layout revision {identity.revision}, expected {schema.LAYOUT_REVISION}")
    expected = set(_DDL_OBJECT.findall(schema.DDL))
    for name in sorted(expected - identity.objects):
        problems.add(f"schema object {name} is missing")
    return f"version {identity.user_version}, layout revision {identity.revision}, {len(expected)} schema objects"


def _types(conn: sqlite3.Connection, problems: Problems) -> str:
    checked = 0
    for table, columns in _COLUMN_TYPES.items():
        for column, expected in columns.items():
            checked += 1
            rows = conn.execute(
                f"SELECT typeof({column}), count(*) FROM {table} "
                f"WHERE typeof({column}) NOT IN ('{expected}', 'null') GROUP BY 1"
            ).fetchall()
            for found, count in rows:
                problems.add(f"{table}.{column}: {count} row(s) hold {found}, expected {expected}")
    return f"{checked} columns"


def compact(connection: Database) -> dict[str, Any]:
    """Rebuild the file to release free pages, then fold the write-ahead log back and truncate it."""
    before = file_bytes(connection.path)

    def body(conn: sqlite3.Connection) -> bool:
        conn.execute("VACUUM")
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return not busy

    truncated = connection.outside_transaction(body)
    return {
        "compacted": True,
        "wal_truncated": truncated,
        "size_before_bytes": before,
        "size_after_bytes": file_bytes(connection.path),
    }
