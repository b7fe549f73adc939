"""Single-writer leases for the adapters: one fenced writer per session, on the session's own work queue.

The lease is one queued-work batch per session (a ``session_command`` under a
fixed source key, so every writer names the same batch).  Holding the lease
is holding a live claim on that batch: the store hands claims out one at a
time, each with a fencing token larger than every earlier one, and a claim
whose lease ran out can be taken over.  Every write of the holder carries the
claim as a *held* claim (``RuntimeCommit.held_queue_claims``,
``put_staged_writes(held_queue_claims=...)``): the store checks it in the
write's own transaction, so a writer that lost its lease -- paused, partitioned,
too slow to renew -- has its write refused with ``QueuedWorkClaimExpired`` and
nothing of it stored.  Releasing the lease hands the batch back untried
(it is never consumed, and a release is no attempt: under a ``PoisonPolicy`` the
next writer does not wait out a backoff).  Each acquisition still counts as an
attempt, so a lease batch set aside as a dead letter after writers that died
holding it is put back by the next acquisition.  On a session whose queue
also carries other work, the lease batch is claimed only when it is the
queue's next group, so a writer waits behind batches enqueued before it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from lash_store.api import SessionStoreAPI
from lash_store.errors import QueuedWorkClaimExpired, StoreError
from lash_store.model import (
    DeliveryPolicy,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkCompletion,
    QueuedWorkPayload,
    SlotPolicy,
)

__all__ = ["LEASE_SOURCE_KEY", "WriterBusy", "WriterLease", "WriterLeaseRequired", "fence_from", "fence_value"]

LEASE_SOURCE_KEY = "lash.single-writer"


class WriterBusy(TimeoutError):
    """Another writer held the session's lease for the whole wait."""

    def __init__(self, session_id: str, waited_s: float) -> None:
        super().__init__(f"session {session_id!r}: another writer held the lease for {waited_s:.1f} s")
        self.session_id = session_id


class WriterLeaseRequired(StoreError):
    """Single-writer mode is on and a write came without the writer's lease."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r}: single-writer mode is on; write inside a writer lease")
        self.session_id = session_id


class WriterLease:
    """A fenced, renewed lease on one session (see the module docstring); use :meth:`acquire` then :meth:`release`."""

    def __init__(
        self,
        store: Callable[[], SessionStoreAPI],
        session_id: str,
        owner_id: str,
        *,
        ttl_ms: int = 30_000,
        wait_s: float = 60.0,
        poll_s: float = 0.05,
    ) -> None:
        if ttl_ms < 30:
            raise ValueError("ttl_ms must be at least 30")
        self._open_store = store  # called when needed: acquiring may be the session's first write
        self.session_id = session_id
        self.owner_id = owner_id
        self.ttl_ms = ttl_ms
        self.wait_s = wait_s
        self.poll_s = poll_s
        self._claim: QueuedWorkClaim | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost = False

    @property
    def fencing_token(self) -> int:
        return self._held().fencing_token

    def proof(self) -> QueuedWorkCompletion:
        """What each write carries: the claim, checked (not completed) by the write's transaction."""
        return self._held().completion()

    def _held(self) -> QueuedWorkClaim:
        if self._claim is None:
            raise RuntimeError("the writer lease is not held")
        return self._claim

    def acquire(self) -> WriterLease:
        """Wait (up to ``wait_s``) until this writer holds the lease; raises :class:`WriterBusy` otherwise."""
        started = time.monotonic()
        store = self._open_store()
        draft = QueuedWorkBatchDraft.new(
            self.session_id,
            DeliveryPolicy.EARLIEST_SAFE_BOUNDARY,
            SlotPolicy.EXCLUSIVE,
            [QueuedWorkPayload.session_command({"lash": "single-writer"})],
        ).with_source_key(LEASE_SOURCE_KEY)
        while True:
            batch = store.enqueue_queued_work(draft)  # the same batch for every writer (idempotent by key)
            claim = store.claim_ready_queued_work_by_batch_ids(
                self.session_id, self.owner_id, QueuedWorkClaimBoundary.IDLE, self.ttl_ms, [batch.batch_id]
            )
            if claim is not None:
                break
            if store.get_dead_letter(self.session_id, batch.batch_id) is not None:
                # Under a PoisonPolicy each acquisition counts as an attempt, so the lease batch ends up set
                # aside after max_attempts writers; it is no poisoned work: put it back and claim again.
                store.requeue_dead_letter(self.session_id, batch.batch_id)
                continue
            if time.monotonic() - started >= self.wait_s:
                raise WriterBusy(self.session_id, time.monotonic() - started)
            time.sleep(self.poll_s)
        self._claim = claim
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name=f"lash-lease-{self.session_id}", daemon=True)
        self._renewer.start()
        return self

    def _renew_loop(self) -> None:
        period = self.ttl_ms / 3000
        while not self._stop.wait(period):
            claim = self._claim
            if claim is None:
                return
            try:
                self._claim = self._open_store().renew_queued_work_claim(claim, self.ttl_ms)
            except QueuedWorkClaimExpired:
                self.lost = True  # writes will be refused by the store; nothing to do here
                return
            except StoreError:
                continue  # a transient failure: the next period tries again, the lease may still run

    def release(self) -> None:
        """Stop renewing and free the lease for the next writer (a lost lease frees nothing)."""
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join()
        self._renewer = None
        claim, self._claim = self._claim, None
        if claim is not None:
            with contextlib.suppress(QueuedWorkClaimExpired):
                self._open_store().abandon_queued_work_claim(claim, counts_as_attempt=False)


def fence_value(proof: QueuedWorkCompletion) -> list[Any]:
    """A claim proof as plain data (it travels inside a LangGraph config)."""
    return [proof.session_id, proof.claim_id, proof.lease_token, list(proof.batch_ids), proof.fencing_token]


def fence_from(value: Any) -> QueuedWorkCompletion:
    """The claim proof back from :func:`fence_value` (or as given, if it already is one)."""
    if isinstance(value, QueuedWorkCompletion):
        return value
    session_id, claim_id, lease_token, batch_ids, fencing_token = value
    return QueuedWorkCompletion(
        session_id=session_id,
        claim_id=claim_id,
        lease_token=lease_token,
        batch_ids=list(batch_ids),
        fencing_token=fencing_token,
    )
