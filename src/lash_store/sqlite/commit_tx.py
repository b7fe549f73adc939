"""SQLite implementation of the commit primitives (:class:`lash_store.core.commit.CommitTx`)."""

from __future__ import annotations

import sqlite3

from lash_store.core import codec
from lash_store.core.commit import HeadRow
from lash_store.core.graph import EncodedNode
from lash_store.errors import CorruptData, InvalidInput
from lash_store.model import QueuedWorkCompletion, TokenLedgerEntry, TurnCommitStamp
from lash_store.sqlite import blobs

_UPSERT_NODE = (
    "INSERT INTO graph_nodes (node_id, parent_node_id, user_text, body) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (node_id) DO UPDATE SET parent_node_id = excluded.parent_node_id, "
    "user_text = excluded.user_text, body = excluded.body, tombstoned = 0"
)
_ADD_TOTAL = (
    "INSERT INTO usage_totals (source, model, input_tokens, output_tokens, cached_input_tokens, reasoning_tokens) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source, model) DO UPDATE SET "
    "input_tokens = input_tokens + excluded.input_tokens, "
    "output_tokens = output_tokens + excluded.output_tokens, "
    "cached_input_tokens = cached_input_tokens + excluded.cached_input_tokens, "
    "reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens "
    "RETURNING input_tokens, output_tokens, cached_input_tokens, reasoning_tokens"
)


_HEAD_TYPES: tuple[type | tuple[type, ...], ...] = (str, int, (str, type(None)), (str, type(None)), bytes)


def read_head(conn: sqlite3.Connection) -> HeadRow | None:
    row = conn.execute(
        "SELECT session_id, head_revision, checkpoint_ref, leaf_node_id, body FROM session_head"
    ).fetchone()
    if row is None:
        return None
    if not all(isinstance(value, kind) for value, kind in zip(row, _HEAD_TYPES, strict=True)):
        raise CorruptData("session head", "stored row has the wrong column types")
    return HeadRow(*row)


class SqliteCommitTx:
    """Commit primitives on a connection that already holds ``BEGIN IMMEDIATE``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def read_head(self) -> HeadRow | None:
        return read_head(self.conn)

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
        for entry in entries:
            usage = entry.usage
            totals = self.conn.execute(
                _ADD_TOTAL,
                (
                    entry.source,
                    entry.model,
                    usage.input_tokens,
                    usage.output_tokens,
                    usage.cached_input_tokens,
                    usage.reasoning_tokens,
                ),
            ).fetchone()
            # SQLite turns an overflowing integer sum into a float; refuse it (the transaction rolls back).
            if not all(isinstance(total, int) for total in totals):
                raise InvalidInput(
                    "commit.usage_deltas", f"the {entry.source!r}/{entry.model!r} total overflows 64 bits"
                )

    def replace_graph(self, nodes: list[EncodedNode]) -> None:
        self.conn.execute("DELETE FROM graph_nodes")
        self.upsert_nodes(nodes)

    def upsert_nodes(self, nodes: list[EncodedNode]) -> None:
        self.conn.executemany(_UPSERT_NODE, [(n.node_id, n.parent_node_id, n.user_text, n.body) for n in nodes])

    def write_head(self, head: HeadRow) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO session_head (singleton, session_id, head_revision, checkpoint_ref, "
            "leaf_node_id, body) VALUES (1, ?, ?, ?, ?, ?)",
            (head.session_id, head.head_revision, head.checkpoint_ref, head.leaf_node_id, head.body),
        )

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
