"""Forward migrations of session files, each run inside the caller's one ``BEGIN IMMEDIATE`` transaction.

Layout revisions of schema version 3 (see :mod:`lash_store.sqlite.schema`):
revision 1 kept graph counters in ``graph_stats`` and the usage ledger in
``usage_totals``; revision 2 moved both onto the head row; both maintained
the counters with triggers.  Revision 3 records its revision and has no
triggers (the service keeps the counters, the same way on every backend).
A migration recomputes the counters from the graph instead of trusting them.
"""

from __future__ import annotations

import sqlite3

from lash_store.core.usage import Totals, encode_totals
from lash_store.model import TokenUsage
from lash_store.sqlite import schema

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
    if found == 1:
        _from_revision_1(conn, identity.objects)
    schema.initialise(conn)  # creates what is missing and stamps the current revision
    _recount(conn)
    return found


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


def _recount(conn: sqlite3.Connection) -> None:
    conn.execute(
        "UPDATE session_head SET "
        "node_count = (SELECT count(*) FROM graph_nodes WHERE tombstoned = 0), "
        "user_message_count = (SELECT count(*) FROM graph_nodes WHERE tombstoned = 0 AND user_text IS NOT NULL)"
    )
