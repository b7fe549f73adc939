"""SQLite statements of the work queue.  The rules themselves live in :mod:`lash_store.core.queue`.

Each function runs inside a transaction the store opened: ``BEGIN IMMEDIATE``
for writes (so ``now`` is read after the write lock is held) and a deferred
read transaction for lists (one snapshot).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence

from lash_store.core import queue as rules
from lash_store.core.validate import saturating_add
from lash_store.errors import QueuedWorkClaimExpired
from lash_store.model import (
    QueuedWorkBatch,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
)

_SELECT = f"SELECT {rules.BATCH_COLUMNS} FROM queued_work_batches"
_FREE = "(claim_token IS NULL OR claim_expires_at_ms <= ?)"


def enqueue(conn: sqlite3.Connection, draft: QueuedWorkBatchDraft, payloads: bytes, now_ms: int) -> QueuedWorkBatch:
    if draft.source_key is not None:
        row = conn.execute(
            f"{_SELECT} WHERE session_id = ? AND source_key = ?", (draft.session_id, draft.source_key)
        ).fetchone()
        if row is not None:  # idempotent while the first batch exists: return it unchanged
            return rules.decode_batch(row)
    batch_id = rules.new_batch_id()
    row = conn.execute(
        "INSERT INTO queued_work_batches (batch_id, session_id, source_key, delivery_policy, slot_policy, "
        "merge_key, available_at_ms, enqueued_at_ms, payloads) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        f"RETURNING {rules.BATCH_COLUMNS}",
        (
            batch_id,
            draft.session_id,
            draft.source_key,
            draft.delivery_policy.value,
            draft.slot_policy.value,
            rules.merge_key_text(draft.merge_key),
            draft.available_at_ms,
            now_ms,
            payloads,
        ),
    ).fetchone()
    return rules.decode_batch(row)


def _ready_and_free(conn: sqlite3.Connection, session_id: str, now_ms: int) -> Iterator[QueuedWorkBatch]:
    # Lazy: grouping stops reading at the first row that ends the group.
    rows = conn.execute(
        f"{_SELECT} WHERE session_id = ? AND available_at_ms <= ? AND {_FREE} ORDER BY enqueue_seq",
        (session_id, now_ms, now_ms),
    )
    return rules.decode_batches(rows)


def claim(
    conn: sqlite3.Connection,
    session_id: str,
    owner_id: str,
    boundary: QueuedWorkClaimBoundary,
    lease_ttl_ms: int,
    max_batches: int,
    now_ms: int,
    wanted: Sequence[str] | None = None,
) -> QueuedWorkClaim | None:
    """Claim the next group (or exactly ``wanted``); ``None`` means nothing to take or a lost race."""
    group = rules.select_group(_ready_and_free(conn, session_id, now_ms), boundary, max_batches)
    if not group or (wanted is not None and [b.batch_id for b in group] != list(wanted)):
        return None
    fence = conn.execute(
        "INSERT INTO queued_work_sessions (session_id, last_fencing_token) VALUES (?, 1) "
        "ON CONFLICT (session_id) DO UPDATE SET last_fencing_token = last_fencing_token + 1 "
        "RETURNING last_fencing_token",
        (session_id,),
    ).fetchone()[0]
    claim_id, token = rules.new_claim_id(), rules.new_lease_token()
    expires = saturating_add(now_ms, lease_ttl_ms)
    taken = conn.executemany(
        "UPDATE queued_work_batches SET claim_id = ?, claim_owner_id = ?, claim_token = ?, "
        "claim_fencing_token = ?, claim_claimed_at_ms = ?, claim_expires_at_ms = ? "
        f"WHERE session_id = ? AND batch_id = ? AND {_FREE}",
        [(claim_id, owner_id, token, fence, now_ms, expires, session_id, b.batch_id, now_ms) for b in group],
    ).rowcount
    if taken != len(group):
        raise LostRace()  # the store rolls the whole claim back
    return QueuedWorkClaim(
        session_id=session_id,
        claim_id=claim_id,
        owner_id=owner_id,
        lease_token=token,
        fencing_token=fence,
        claimed_at_epoch_ms=now_ms,
        expires_at_epoch_ms=expires,
        batches=group,
    )


class LostRace(Exception):
    """A selected row was taken between selection and update; the claim must roll back."""


def renew(conn: sqlite3.Connection, held: QueuedWorkClaim, lease_ttl_ms: int, now_ms: int) -> int:
    """Extend every row of the claim or none; returns the new expiry."""
    expires = saturating_add(now_ms, lease_ttl_ms)
    owned = conn.execute(
        "SELECT count(*) FROM queued_work_batches WHERE session_id = ? AND claim_id = ? AND claim_token = ?",
        (held.session_id, held.claim_id, held.lease_token),
    ).fetchone()[0]
    updated = conn.executemany(
        "UPDATE queued_work_batches SET claim_expires_at_ms = ? WHERE session_id = ? AND batch_id = ? "
        "AND claim_id = ? AND claim_token = ? AND claim_fencing_token = ?",
        [
            (expires, held.session_id, batch_id, held.claim_id, held.lease_token, held.fencing_token)
            for batch_id in held.batch_ids
        ],
    ).rowcount
    listed = len(held.batches)
    if len(set(held.batch_ids)) != listed or owned != listed or updated != listed:
        raise QueuedWorkClaimExpired(held.session_id, held.claim_id)
    return expires


def abandon(conn: sqlite3.Connection, held: QueuedWorkClaim) -> int:
    return conn.execute(
        "UPDATE queued_work_batches SET claim_id = NULL, claim_owner_id = NULL, claim_token = NULL, "
        "claim_claimed_at_ms = 0, claim_expires_at_ms = 0 "
        "WHERE session_id = ? AND claim_id = ? AND claim_token = ?",
        (held.session_id, held.claim_id, held.lease_token),
    ).rowcount


def cancel(conn: sqlite3.Connection, session_id: str, batch_id: str, now_ms: int) -> QueuedWorkBatch | None:
    row = conn.execute(
        f"{_SELECT} WHERE session_id = ? AND batch_id = ? AND {_FREE}", (session_id, batch_id, now_ms)
    ).fetchone()
    if row is None:
        return None
    batch = rules.decode_batch(row)  # a corrupt row raises and stays
    conn.execute("DELETE FROM queued_work_batches WHERE batch_id = ?", (batch_id,))
    return batch


def list_batches(conn: sqlite3.Connection, session_id: str, pending_at_ms: int | None) -> list[QueuedWorkBatch]:
    if pending_at_ms is None:
        rows = conn.execute(f"{_SELECT} WHERE session_id = ? ORDER BY enqueue_seq", (session_id,))
    else:
        rows = conn.execute(
            f"{_SELECT} WHERE session_id = ? AND {_FREE} ORDER BY enqueue_seq", (session_id, pending_at_ms)
        )
    return list(rules.decode_batches(rows))


def find_corrupt(conn: sqlite3.Connection, session_id: str, batch_ids: Sequence[str]) -> None:
    """Raise :class:`CorruptData` if one of ``batch_ids`` is an undecodable row."""
    for batch_id in batch_ids:
        row = conn.execute(f"{_SELECT} WHERE session_id = ? AND batch_id = ?", (session_id, batch_id)).fetchone()
        if row is not None:
            rules.decode_batch(row)
