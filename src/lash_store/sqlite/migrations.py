"""Forward migrations of session files, each run inside the caller's one ``BEGIN IMMEDIATE`` transaction.

Layout revisions of schema version 3 (see :mod:`lash_store.sqlite.schema`):
revision 1 kept graph counters in ``graph_stats`` and the usage ledger in
``usage_totals``; revision 2 moved both onto the head row; both maintained
the counters with triggers.  Revision 3 records its revision and has no
triggers (the service keeps the counters, the same way on every backend).
Revision 4 adds the node index (kind, lane and sort key columns, tags, blob
refs), blob children and staged writes; its migration adds the columns and
tables and fills ``kind`` from the stored nodes.
A migration recomputes the counters from the graph instead of trusting them.

Migrating is always explicit: ``Store.open(path, migrate=True)``,
:func:`migrate_file` (what ``lash-store migrate`` runs), and
:func:`inspect_revision` to ask without changing anything.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from lash_store.core.graph import decode_node
from lash_store.core.usage import Totals, encode_totals
from lash_store.errors import CorruptData, InvalidInput, SchemaMigrationRequired
from lash_store.model import TokenUsage
from lash_store.options import StoreOptions, check_options
from lash_store.sqlite import schema

# How long a read-only look may wait for a lock (the same as ``Store.open_readonly``).
_INSPECT_BUSY_TIMEOUT_MS = 1000

_OLD_TRIGGERS = ("graph_nodes_count_insert", "graph_nodes_count_update", "graph_nodes_count_delete")


def migrate(conn: sqlite3.Connection, path: str) -> int | None:
    """Bring the file to the current layout; returns the revision migrated from, ``None`` if none was needed."""
    identity = schema.Identity(conn)  # re-read under the write lock
    identity.check(path, migrate=True)
    if not identity.needs_migration or identity.revision is None:
        return None
    found = identity.revision
    for trigger in _OLD_TRIGGERS:
        conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    _add_node_index_columns(conn)  # before anything runs the DDL, whose indexes name these columns
    if found == 1:
        _from_revision_1(conn, identity.objects)
    schema.initialise(conn)  # creates what is missing and stamps the current revision
    _recount(conn)
    _check_result(conn, path)
    return found


def _check_result(conn: sqlite3.Connection, path: str) -> None:
    """Refuse to commit a layout that is not exactly the current one.

    A trigger left behind would still name a dropped table, and every later
    write to the graph would fail; raising here rolls the whole migration
    back and leaves the file as it was.
    """
    identity = schema.Identity(conn)
    leftovers = sorted(
        name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    ) + sorted(identity.objects & {"graph_stats", "usage_totals"})
    if identity.revision != schema.LAYOUT_REVISION or not identity.is_complete or leftovers:
        raise CorruptData(
            path,
            f"the migration to layout revision {schema.LAYOUT_REVISION} did not produce that layout "
            f"(unexpected: {', '.join(leftovers) or 'missing tables'}); nothing was changed",
        )


def _from_revision_1(conn: sqlite3.Connection, objects: set[str]) -> None:
    """Fold ``graph_stats`` and ``usage_totals`` into a head row that exists from creation on."""
    head = conn.execute(
        "SELECT session_id, head_revision, checkpoint_ref, leaf_node_id, body FROM session_head"
    ).fetchone()
    totals: Totals = {}
    if "usage_totals" in objects:
        for source, model, i, o, c, r in conn.execute(
            "SELECT source, model, input_tokens, output_tokens, cached_input_tokens, reasoning_tokens "
            "FROM usage_totals ORDER BY seq"
        ):
            totals[(source, model)] = TokenUsage(
                input_tokens=i, output_tokens=o, cached_input_tokens=c, reasoning_tokens=r
            )
    conn.execute("DROP TABLE session_head")  # its session_id was NOT NULL: the row could not exist unbound
    conn.execute("DROP TABLE IF EXISTS graph_stats")
    conn.execute("DROP TABLE IF EXISTS usage_totals")
    schema.initialise(conn)
    if head is not None:
        conn.execute(
            "UPDATE session_head SET session_id = ?, head_revision = ?, checkpoint_ref = ?, leaf_node_id = ?, "
            "body = ?, usage_ledger = ?",
            (*head, encode_totals(totals) if totals else None),
        )


def _add_node_index_columns(conn: sqlite3.Connection) -> None:
    """Revision 4 indexes nodes by kind, lane and sort key: add the columns and fill ``kind`` from the bodies.

    Nodes written before revision 4 have no lane, sort key, tags or blob
    refs (their bodies cannot hold them), so only ``kind`` needs a value.
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(graph_nodes)")}
    for column in ("kind", "lane", "sort_key"):
        if column not in columns:
            conn.execute(f"ALTER TABLE graph_nodes ADD COLUMN {column} TEXT")
    updates = []
    for seq, node_id, body in conn.execute("SELECT seq, node_id, body FROM graph_nodes WHERE kind IS NULL"):
        updates.append((decode_node(node_id, body).kind, seq))  # an undecodable node fails the migration whole
    conn.executemany("UPDATE graph_nodes SET kind = ? WHERE seq = ?", updates)


def _recount(conn: sqlite3.Connection) -> None:
    conn.execute(
        "UPDATE session_head SET "
        "node_count = (SELECT count(*) FROM graph_nodes WHERE tombstoned = 0), "
        "user_message_count = (SELECT count(*) FROM graph_nodes WHERE tombstoned = 0 AND user_text IS NOT NULL)"
    )


# ---------------------------------------------------------------------------
# Whole files


def inspect_revision(path: str | os.PathLike[str]) -> tuple[int, bool]:
    """The layout revision of an existing session file, and whether it needs a migration.

    Reads the way ``Store.open_readonly`` does: nothing is created (no database,
    no ``-wal``/``-shm``) and nothing is modified.  Raises :class:`StoreNotFound`
    for a missing path, :class:`NotAStoreDatabase` for anything that is not a
    lash-store session file, :class:`UnsupportedSchemaVersion` for another
    schema version or a layout revision newer than this release, and
    :class:`CorruptData` when the recorded revision is unreadable.
    """
    # Imported here: the connection module runs migrations while it opens files, so it imports this one.
    from lash_store.sqlite.connection import Connection

    file = _file_path(path)
    try:
        conn = Connection(file, StoreOptions(busy_timeout_ms=_INSPECT_BUSY_TIMEOUT_MS), readonly=True)
    except SchemaMigrationRequired as exc:  # the read-only open refuses exactly the files that need migrating
        return exc.found_revision, True
    try:
        revision = conn.read(lambda c: schema.Identity(c).revision)
    finally:
        conn.close()
    if revision is None:
        raise CorruptData(str(file), "the lash_schema table holds no layout revision")
    return revision, False


def migrate_file(path: str | os.PathLike[str], options: StoreOptions | None = None) -> int | None:
    """Migrate an existing session file to the current layout, in one ``BEGIN IMMEDIATE`` transaction.

    Returns the revision the file was migrated from, or ``None`` when it was
    already current (then nothing is written; neither when another process
    migrated it first).  Never creates a database: a missing path raises
    :class:`StoreNotFound`.  A file that is not ours, of another schema version
    or of a newer layout is refused, untouched, with the errors of
    :func:`inspect_revision`.  A crash during the migration leaves the file at
    its old revision (SQLite rolls the transaction back).
    """
    from lash_store.sqlite.connection import Connection  # see inspect_revision

    options = check_options(StoreOptions() if options is None else options)
    file = _file_path(path)
    _revision, needed = inspect_revision(file)  # refuses without opening the file for writing
    if not needed:
        return None
    conn = Connection(file, options, migrate=True, create=False)
    conn.close()
    return conn.migrated_from


def _file_path(path: object) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidInput("path", f"must be a str or os.PathLike, got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise InvalidInput("path", "must be a text path, not bytes")
    if not text:
        raise InvalidInput("path", "must not be empty")
    return Path(text)
