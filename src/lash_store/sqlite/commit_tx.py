"""SQLite implementation of the commit primitives (:class:`lash_store.core.commit.CommitTx`)."""

from __future__ import annotations

import sqlite3
from typing import Any

from lash_store.core import codec
from lash_store.core.commit import HeadRow
from lash_store.core.graph import EncodedNode
from lash_store.core.usage import Totals, add_usage, decode_totals, encode_totals
from lash_store.errors import CorruptData
from lash_store.model import QueuedWorkCompletion, TokenLedgerEntry, TurnCommitStamp
from lash_store.sqlite import blobs

_UPSERT_NODE = (
    "INSERT INTO graph_nodes (node_id, parent_node_id, user_text, body) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (node_id) DO UPDATE SET parent_node_id = excluded.parent_node_id, "
    "user_text = excluded.user_text, body = excluded.body, tombstoned = 0"
)
_SELECT_HEAD = "SELECT session_id, head_revision, checkpoint_ref, leaf_node_id, body, usage_ledger FROM session_head"
_WRITE_HEAD = (
    "UPDATE session_head SET session_id = ?, head_revision = ?, checkpoint_ref = ?, leaf_node_id = ?, body = ?, "
    "usage_ledger = coalesce(?, usage_ledger)"
)


def read_head(conn: sqlite3.Connection) -> HeadRow | None:
    """The committed head, or ``None`` before the first commit."""
    return _head(_fetch_head(conn, _SELECT_HEAD))


def read_usage(conn: sqlite3.Connection) -> Totals:
    """The usage totals stored on the head row."""
    return decode_totals(_fetch_head(conn, "SELECT usage_ledger FROM session_head")[0])


def read_graph_counts(conn: sqlite3.Connection) -> tuple[int, int]:
    """The maintained (live node count, live user-message count)."""
    nodes, users = _fetch_head(conn, "SELECT node_count, user_message_count FROM session_head")
    if type(nodes) is not int or type(users) is not int:
        raise CorruptData("session head", "stored graph counters are not integers")
    return nodes, users


def _fetch_head(conn: sqlite3.Connection, select: str) -> tuple[Any, ...]:
    """Columns of the one head row, which exists from creation on: its absence is damage."""
    row: tuple[Any, ...] | None = conn.execute(select).fetchone()
    if row is None:
        raise CorruptData("session head", "the head row is missing")
    return row


def _head(row: tuple[Any, ...]) -> HeadRow | None:
    session_id, revision, checkpoint_ref, leaf, body = row[:5]
    if session_id is None and revision == 0:
        return None  # no commit has bound this file to a session yet
    if not (
        type(session_id) is str
        and type(revision) is int
        and type(body) is bytes
        and (checkpoint_ref is None or type(checkpoint_ref) is str)
        and (leaf is None or type(leaf) is str)
    ):
        raise CorruptData("session head", "stored row has the wrong column types")
    return HeadRow(session_id, revision, checkpoint_ref, leaf, body)


class SqliteCommitTx:
    """Commit primitives on a connection that already holds ``BEGIN IMMEDIATE``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._head_row: tuple[Any, ...] | None = None
        self._totals: Totals | None = None  # set once this commit adds usage; written with the head

    def read_head(self) -> HeadRow | None:
        self._head_row = _fetch_head(self.conn, _SELECT_HEAD)  # add_usage takes the ledger from this row
        return _head(self._head_row)

    def find_turn_commit(self, session_id: str, turn_id: str) -> bytes | None:
        row = self.conn.execute(
            "SELECT record FROM runtime_turn_commits WHERE session_id = ? AND turn_id = ?",
            (session_id, turn_id),
        ).fetchone()
        if row is None:
            return None
        if not isinstance(row[0], bytes):
            raise CorruptData(f"turn commit {turn_id!r}", "stored record is not a blob")
        return row[0]

    def claimed_batches(self, session_id: str, claim_id: str, lease_token: str) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT batch_id, claim_fencing_token FROM queued_work_batches "
            "WHERE session_id = ? AND claim_id = ? AND claim_token = ?",
            (session_id, claim_id, lease_token),
        )
        return dict(rows.fetchall())

    def put_blobs(self, encoded: list[codec.EncodedBlob], now_ms: int) -> None:
        blobs.put(self.conn, encoded, now_ms)

    def add_usage(self, entries: list[TokenLedgerEntry]) -> None:
        if self._totals is None:
            row = self._head_row or _fetch_head(self.conn, _SELECT_HEAD)
            self._totals = decode_totals(row[5])
        add_usage(self._totals, entries)

    def replace_graph(self, nodes: list[EncodedNode]) -> None:
        self.conn.execute("DELETE FROM graph_nodes")
        self.upsert_nodes(nodes)

    def upsert_nodes(self, nodes: list[EncodedNode]) -> None:
        self.conn.executemany(_UPSERT_NODE, [(n.node_id, n.parent_node_id, n.user_text, n.body) for n in nodes])

    def write_head(self, head: HeadRow) -> None:
        ledger = None if self._totals is None else encode_totals(self._totals)
        values = (head.session_id, head.head_revision, head.checkpoint_ref, head.leaf_node_id, head.body, ledger)
        if self.conn.execute(_WRITE_HEAD, values).rowcount != 1:
            raise CorruptData("session head", "the head row is missing")

    def delete_claimed_batches(self, completion: QueuedWorkCompletion) -> int:
        cursor = self.conn.executemany(
            "DELETE FROM queued_work_batches WHERE session_id = ? AND batch_id = ? AND claim_id = ? "
            "AND claim_token = ? AND claim_fencing_token = ?",
            [
                (completion.session_id, batch_id, completion.claim_id, completion.lease_token, completion.fencing_token)
                for batch_id in completion.batch_ids
            ],
        )
        return cursor.rowcount

    def stamp_attachments(self, session_id: str, attachment_ids: list[str], now_ms: int) -> None:
        stamp_attachments(self.conn, session_id, attachment_ids, now_ms)

    def record_turn_commit(self, stamp: TurnCommitStamp, record: bytes, now_ms: int) -> None:
        self.conn.execute(
            "INSERT INTO runtime_turn_commits (session_id, turn_id, record, committed_at_ms) VALUES (?, ?, ?, ?)",
            (stamp.session_id, stamp.turn_id, record, now_ms),
        )


def stamp_attachments(conn: sqlite3.Connection, session_id: str, attachment_ids: list[str], now_ms: int) -> int:
    """First commit wins: only rows of this session that are still uncommitted are stamped."""
    cursor = conn.executemany(
        "UPDATE attachment_manifest SET committed_at_ms = ? "
        "WHERE attachment_id = ? AND session_id = ? AND committed_at_ms IS NULL",
        [(now_ms, attachment_id, session_id) for attachment_id in attachment_ids],
    )
    return cursor.rowcount
