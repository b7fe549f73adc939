"""The work queue inside transactions: enqueue, claim, renew, abandon, cancel, lists and dead letters.

Every mutation takes the queue's lock first (``lock_queue``: a row lock on
PostgreSQL, nothing on SQLite whose write transaction already serialises
everything) and reads the clock after it, so leases are measured from the
moment the lock was granted.

Poison work (``PoisonPolicy``, ``None`` when off): every claim counts an
attempt on each batch it takes and records, on the row, the instant the batch
may be offered again should this attempt fail (``retry_at_ms``: the lease's
end plus the backoff; renew moves it with the lease, abandon restarts it from
now).  A claim first moves every ready batch whose ``max_attempts`` attempts
are used up to the dead-letter list (one set statement), then picks its
group from the rest.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from lash_store.core import queue as rules
from lash_store.core.validate import saturating_add
from lash_store.errors import QueuedWorkClaimExpired
from lash_store.model import (
    QueuedWorkBatch,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkDeadLetter,
)
from lash_store.options import PoisonPolicy
from lash_store.service.ports import Params, Row, Tx


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


class Claimed:
    """What a claim transaction did: the claim (``None``: nothing to take) and how many batches it dead-lettered."""

    __slots__ = ("claim", "dead_lettered")

    def __init__(self, claim: QueuedWorkClaim | None, dead_lettered: int) -> None:
        self.claim = claim
        self.dead_lettered = dead_lettered


def claim(
    tx: Tx,
    session_id: str,
    owner_id: str,
    boundary: QueuedWorkClaimBoundary,
    lease_ttl_ms: int,
    max_batches: int,
    wanted: Sequence[str] | None,
    poison: PoisonPolicy | None,
) -> Claimed:
    """Claim the next group (or exactly ``wanted``); its claim is ``None`` when there is nothing to take.

    Under a poison policy every ready batch whose attempts are used up is
    dead-lettered in this transaction first, whatever the outcome (a claim by
    ids that then does not match included).
    """
    tx.send("lock_queue", {"session_id": session_id})
    now = tx.now_ms()
    reads: list[tuple[str, Params | None]] = [
        ("ready_batches", {"session_id": session_id, "now_ms": now, "limit": max_batches}),
        ("last_fence", {"session_id": session_id}),
    ]
    limit = None if poison is None else poison.max_attempts
    if limit is not None:  # first, so the window read after it holds only batches that may still be offered
        reads.insert(0, ("dead_letter_exhausted", {"session_id": session_id, "now_ms": now, "max_attempts": limit}))
    *dead, ready, fences = tx.fetch_many(reads)  # one round trip for all three on PostgreSQL
    dead_lettered = len(dead[0]) if dead else 0
    window = max_batches
    while True:
        selection = _Selection(ready, poison)
        group = rules.select_group(selection.candidates(), boundary, max_batches, selection.alone)
        if not (selection.skipped and selection.drained and len(ready) >= window):
            break
        # Undecodable rows took places in a full window and the group wanted more: one bad row blocks nobody.
        window *= 2
        ready = tx.all("ready_batches", {"session_id": session_id, "now_ms": now, "limit": window})
    if not group or (wanted is not None and [batch.batch_id for batch in group] != list(wanted)):
        if wanted is not None:
            find_corrupt(tx, session_id, wanted)
        return Claimed(None, dead_lettered)
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
                # should this attempt fail, the batch waits out the lease and then the backoff
                "retry_at_ms": saturating_add(
                    expires,
                    rules.retry_delay_ms(poison, session_id, batch.enqueue_seq, selection.attempts[batch.batch_id] + 1),
                ),
                "session_id": session_id,
                "batch_id": batch.batch_id,
            }
            for batch in group
        ],
    )
    if taken != len(group):
        raise LostRace()
    return Claimed(
        QueuedWorkClaim(
            session_id=session_id,
            claim_id=claim_id,
            owner_id=owner_id,
            lease_token=token,
            fencing_token=fence,
            claimed_at_epoch_ms=now,
            expires_at_epoch_ms=expires,
            batches=group,
        ),
        dead_lettered,
    )


class _Selection:
    """The ready rows of one claim, decoded lazily, with their attempt counts (under a poison policy retries go
    alone) and how many rows could not be decoded."""

    def __init__(self, ready: list[Row], poison: PoisonPolicy | None) -> None:
        self.ready = ready
        self.attempts: dict[str, int] = {}
        self.skipped = 0  # undecodable rows met (logged and left in place)
        self.drained = False  # every row was offered: the group might have grown with more of them
        # A retry goes alone only when retries can end in the dead-letter list: then a poisoned batch never
        # takes the batches it was grouped with there.  Without a policy, grouping is as it always was.
        self.alone = None if poison is None else self._is_retry

    def candidates(self) -> Iterator[QueuedWorkBatch]:
        for row in self.ready:
            decoded = False
            for batch in rules.decode_batches([row[:10]]):
                decoded = True
                self.attempts[batch.batch_id] = int(row[10])
                yield batch
            self.skipped += not decoded
        self.drained = True

    def _is_retry(self, batch: QueuedWorkBatch) -> bool:
        return self.attempts.get(batch.batch_id, 0) > 0


def find_corrupt(tx: Tx, session_id: str, batch_ids: Sequence[str]) -> None:
    """Raise :class:`CorruptData` if one of ``batch_ids`` is an undecodable row (claims by id report it)."""
    for batch_id in batch_ids:
        row = tx.one("batch_by_id", {"session_id": session_id, "batch_id": batch_id})
        if row is not None:
            rules.decode_batch(row)


def renew(tx: Tx, held: QueuedWorkClaim, lease_ttl_ms: int, poison: PoisonPolicy | None) -> int:
    """Extend every row of the claim or none (fence checked); returns the new expiry.

    The instant a failed attempt may be retried moves with the lease.
    """
    tx.send("lock_queue", {"session_id": held.session_id})
    expires = saturating_add(tx.now_ms(), lease_ttl_ms)
    key = {"session_id": held.session_id, "claim_id": held.claim_id, "lease_token": held.lease_token}
    owned = {row[0]: row for row in tx.all("claimed_batches", key)}
    updated = tx.run_many(
        "extend_claim",
        [
            {
                **key,
                "batch_id": batch_id,
                "fencing_token": held.fencing_token,
                "expires_at_ms": expires,
                "retry_at_ms": _retry_at(poison, held.session_id, owned.get(batch_id), expires),
            }
            for batch_id in held.batch_ids
        ],
    )
    listed = len(held.batches)
    if len(set(held.batch_ids)) != listed or len(owned) != listed or updated != listed:
        raise QueuedWorkClaimExpired(held.session_id, held.claim_id)
    return expires


def abandon(
    tx: Tx, held: QueuedWorkClaim, error: str | None, poison: PoisonPolicy | None, *, uncount: bool = False
) -> int:
    """Release the claim's rows (stale claims release nothing); the attempt failed now, with ``error`` if given.

    ``uncount``: the attempt never happened -- the claim's count is taken back and the rows are free at once
    (the caller passes no poison policy, so no backoff).
    """
    tx.send("lock_queue", {"session_id": held.session_id})
    now = tx.now_ms()
    key = {"session_id": held.session_id, "claim_id": held.claim_id, "lease_token": held.lease_token}
    return tx.run_many(
        "release_batch",
        [
            {
                **key,
                "batch_id": row[0],
                "error": error,
                "retry_at_ms": _retry_at(poison, held.session_id, row, now),
                "uncount": int(uncount),
            }
            for row in tx.all("claimed_batches", key)
        ],
    )


def _retry_at(poison: PoisonPolicy | None, session_id: str, row: Row | None, attempt_end: int) -> int:
    """When a batch whose attempt ends at ``attempt_end`` may be offered again (``claimed_batches`` row)."""
    if row is None:  # not owned: the update matches nothing anyway
        return attempt_end
    _batch_id, _fence, attempts, enqueue_seq = row
    return saturating_add(attempt_end, rules.retry_delay_ms(poison, session_id, int(enqueue_seq), int(attempts)))


def cancel(tx: Tx, session_id: str, batch_id: str) -> QueuedWorkBatch | None:
    tx.send("lock_queue", {"session_id": session_id})
    key = {"session_id": session_id, "batch_id": batch_id}
    row = tx.one("free_batch", {**key, "now_ms": tx.now_ms()})
    if row is None:
        return None
    batch = rules.decode_batch(row)  # a corrupt row raises and stays
    tx.run("delete_batch", key)
    return batch


def list_dead_letters(tx: Tx, session_id: str) -> list[QueuedWorkDeadLetter]:
    return list(rules.decode_dead_letters(tx.iter("dead_letters", {"session_id": session_id})))


def get_dead_letter(tx: Tx, session_id: str, batch_id: str) -> QueuedWorkDeadLetter | None:
    row = tx.one("dead_letter_by_id", {"session_id": session_id, "batch_id": batch_id})
    return None if row is None else rules.decode_dead_letter(row)


def requeue_dead_letter(tx: Tx, session_id: str, batch_id: str) -> QueuedWorkBatch | None:
    """Put a dead letter back in the queue, attempts reset; ``None`` if it is not one."""
    tx.send("lock_queue", {"session_id": session_id})
    key: dict[str, Any] = {"session_id": session_id, "batch_id": batch_id}
    row = tx.one("dead_letter_by_id", key)
    if row is None:
        return None
    letter = rules.decode_dead_letter(row)  # a corrupt row raises and stays
    tx.run("requeue_dead_letter", key)
    return letter.batch


def drop_dead_letter(tx: Tx, session_id: str, batch_id: str) -> QueuedWorkDeadLetter | None:
    """Delete a dead letter for good; returns it as it was, ``None`` if it is not one."""
    tx.send("lock_queue", {"session_id": session_id})
    key: dict[str, Any] = {"session_id": session_id, "batch_id": batch_id}
    row = tx.one("dead_letter_by_id", key)
    if row is None:
        return None
    letter = rules.decode_dead_letter(row)  # a corrupt row raises and stays
    tx.run("drop_dead_letter", key)
    return letter


def list_batches(tx: Tx, session_id: str, *, pending: bool) -> list[QueuedWorkBatch]:
    if pending:
        rows: Iterator[tuple[object, ...]] = tx.iter(
            "list_pending_batches", {"session_id": session_id, "now_ms": tx.now_ms()}
        )
    else:
        rows = tx.iter("list_batches", {"session_id": session_id})
    return list(rules.decode_batches(rows))
