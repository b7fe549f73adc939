"""The work queue inside transactions: enqueue, claim, renew, abandon, cancel and lists.

Every mutation takes the queue's lock first (``lock_queue``: a row lock on
PostgreSQL, nothing on SQLite whose write transaction already serialises
everything) and reads the clock after it, so leases are measured from the
moment the lock was granted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from lash_store.core import queue as rules
from lash_store.core.validate import saturating_add
from lash_store.errors import QueuedWorkClaimExpired
from lash_store.model import QueuedWorkBatch, QueuedWorkBatchDraft, QueuedWorkClaim, QueuedWorkClaimBoundary
from lash_store.service.ports import Tx


class LostRace(Exception):
    """A selected row was taken between selection and update (possible only when something bypasses the
    queue lock); the claim rolls back and reports nothing to take."""


def enqueue(tx: Tx, draft: QueuedWorkBatchDraft, payloads: bytes) -> QueuedWorkBatch:
    tx.send("lock_queue", {"session_id": draft.session_id})
    now = tx.now_ms()
    if draft.source_key is not None:
        row = tx.one("batch_by_source_key", {"session_id": draft.session_id, "source_key": draft.source_key})
        if row is not None:  # idempotent while the first batch exists: return it unchanged
            return rules.decode_batch(row)
    row = tx.one(
        "insert_batch",
        {
            "batch_id": rules.new_batch_id(),
            "session_id": draft.session_id,
            "source_key": draft.source_key,
            "delivery_policy": draft.delivery_policy.value,
            "slot_policy": draft.slot_policy.value,
            "merge_key": rules.merge_key_text(draft.merge_key),
            "available_at_ms": draft.available_at_ms,
            "enqueued_at_ms": now,
            "payloads": payloads,
        },
    )
    assert row is not None  # an INSERT ... RETURNING always returns its row
    return rules.decode_batch(row)


def claim(
    tx: Tx,
    session_id: str,
    owner_id: str,
    boundary: QueuedWorkClaimBoundary,
    lease_ttl_ms: int,
    max_batches: int,
    wanted: Sequence[str] | None,
) -> QueuedWorkClaim | None:
    """Claim the next group (or exactly ``wanted``); ``None`` when there is nothing to take."""
    tx.send("lock_queue", {"session_id": session_id})
    now = tx.now_ms()
    ready, fences = tx.fetch_many(
        [
            ("ready_batches", {"session_id": session_id, "now_ms": now, "limit": max_batches}),
            ("last_fence", {"session_id": session_id}),
        ]
    )
    group = rules.select_group(rules.decode_batches(ready), boundary, max_batches)
    if not group or (wanted is not None and [batch.batch_id for batch in group] != list(wanted)):
        if wanted is not None:
            find_corrupt(tx, session_id, wanted)
        return None
    # Advanced under the queue's lock, so strictly larger than every fence this queue ever handed out.
    fence = (int(fences[0][0]) if fences else 0) + 1
    tx.send("set_fence", {"session_id": session_id, "last_fencing_token": fence})
    claim_id, token = rules.new_claim_id(), rules.new_lease_token()
    expires = saturating_add(now, lease_ttl_ms)
    taken = tx.run_many(
        "mark_claimed",
        [
            {
                "claim_id": claim_id,
                "owner_id": owner_id,
                "lease_token": token,
                "fencing_token": fence,
                "now_ms": now,
                "expires_at_ms": expires,
                "session_id": session_id,
                "batch_id": batch.batch_id,
            }
            for batch in group
        ],
    )
    if taken != len(group):
        raise LostRace()
    return QueuedWorkClaim(
        session_id=session_id,
        claim_id=claim_id,
        owner_id=owner_id,
        lease_token=token,
        fencing_token=fence,
        claimed_at_epoch_ms=now,
        expires_at_epoch_ms=expires,
        batches=group,
    )


def find_corrupt(tx: Tx, session_id: str, batch_ids: Sequence[str]) -> None:
    """Raise :class:`CorruptData` if one of ``batch_ids`` is an undecodable row (claims by id report it)."""
    for batch_id in batch_ids:
        row = tx.one("batch_by_id", {"session_id": session_id, "batch_id": batch_id})
        if row is not None:
            rules.decode_batch(row)


def renew(tx: Tx, held: QueuedWorkClaim, lease_ttl_ms: int) -> int:
    """Extend every row of the claim or none (fence checked); returns the new expiry."""
    tx.send("lock_queue", {"session_id": held.session_id})
    expires = saturating_add(tx.now_ms(), lease_ttl_ms)
    key = {"session_id": held.session_id, "claim_id": held.claim_id, "lease_token": held.lease_token}
    owned = len(tx.all("claimed_batches", key))
    updated = tx.run_many(
        "extend_claim",
        [
            {**key, "batch_id": batch_id, "fencing_token": held.fencing_token, "expires_at_ms": expires}
            for batch_id in held.batch_ids
        ],
    )
    listed = len(held.batches)
    if len(set(held.batch_ids)) != listed or owned != listed or updated != listed:
        raise QueuedWorkClaimExpired(held.session_id, held.claim_id)
    return expires


def abandon(tx: Tx, held: QueuedWorkClaim) -> int:
    tx.send("lock_queue", {"session_id": held.session_id})
    return tx.run(
        "release_claim",
        {"session_id": held.session_id, "claim_id": held.claim_id, "lease_token": held.lease_token},
    )


def cancel(tx: Tx, session_id: str, batch_id: str) -> QueuedWorkBatch | None:
    tx.send("lock_queue", {"session_id": session_id})
    key = {"session_id": session_id, "batch_id": batch_id}
    row = tx.one("free_batch", {**key, "now_ms": tx.now_ms()})
    if row is None:
        return None
    batch = rules.decode_batch(row)  # a corrupt row raises and stays
    tx.run("delete_batch", key)
    return batch


def list_batches(tx: Tx, session_id: str, *, pending: bool) -> list[QueuedWorkBatch]:
    if pending:
        rows: Iterator[tuple[object, ...]] = tx.iter(
            "list_pending_batches", {"session_id": session_id, "now_ms": tx.now_ms()}
        )
    else:
        rows = tx.iter("list_batches", {"session_id": session_id})
    return list(rules.decode_batches(rows))
