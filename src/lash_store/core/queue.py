"""Work-queue rules shared by every backend: validation, ids, row decoding, claim grouping."""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec

from lash_store.core import codec
from lash_store.core.validate import (
    check_count,
    check_id,
    check_instance,
    check_list,
    check_ms,
    check_optional_id,
    check_text,
)
from lash_store.errors import CorruptData, InvalidInput
from lash_store.model import (
    DeliveryPolicy,
    MergeKey,
    QueuedWorkBatch,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkDeadLetter,
    QueuedWorkItem,
    QueuedWorkPayload,
    SlotPolicy,
    TurnInput,
)
from lash_store.options import PoisonPolicy

log = logging.getLogger("lash_store")


def new_batch_id() -> str:
    return "qwb:" + uuid.uuid4().hex


def new_claim_id() -> str:
    return "qwc:" + uuid.uuid4().hex


def new_lease_token() -> str:
    return secrets.token_hex(32)


# ---------------------------------------------------------------------------
# Validation and encoding of inputs


def check_draft(draft: Any) -> bytes:
    """Validate a draft and return its encoded payload list."""
    check_instance("draft", draft, QueuedWorkBatchDraft)
    check_id("draft.session_id", draft.session_id)
    check_optional_id("draft.source_key", draft.source_key)
    check_instance("draft.delivery_policy", draft.delivery_policy, DeliveryPolicy)
    check_instance("draft.slot_policy", draft.slot_policy, SlotPolicy)
    check_instance("draft.merge_key", draft.merge_key, MergeKey)
    merge_key_text(draft.merge_key)
    check_ms("draft.available_at_ms", draft.available_at_ms)
    payloads = check_list("draft.payloads", draft.payloads)
    for index, payload in enumerate(payloads):
        _check_payload(f"draft.payloads[{index}]", payload)
    return codec.encode_checked("draft.payloads", payloads, list[QueuedWorkPayload])


def _check_payload(what: str, payload: Any) -> None:
    check_instance(what, payload, QueuedWorkPayload)
    if payload.kind == "turn_input":
        check_instance(f"{what}.input", payload.input, TurnInput)
    elif payload.kind == "session_command":
        if payload.command is None:
            raise InvalidInput(f"{what}.command", "a session_command payload needs a command")
    elif payload.kind == "process_wake":
        if payload.wake is None:
            raise InvalidInput(f"{what}.wake", "a process_wake payload needs a wake")
    else:
        raise InvalidInput(f"{what}.kind", f"unknown payload kind {payload.kind!r}")


def check_boundary(boundary: Any) -> QueuedWorkClaimBoundary:
    return check_instance("boundary", boundary, QueuedWorkClaimBoundary)  # type: ignore[no-any-return]


def check_claim_request(session_id: Any, owner_id: Any, boundary: Any, lease_ttl_ms: Any) -> None:
    """Validate the arguments every claim call shares."""
    check_id("session_id", session_id)
    check_id("owner_id", owner_id)
    check_boundary(boundary)
    check_ms("lease_ttl_ms", lease_ttl_ms)


MAX_ERROR_CHARS = 4_096
"""Longer errors given to ``abandon_queued_work_claim`` are kept up to this many characters."""


def check_error(error: Any) -> str | None:
    """An abandon's error text (``None``: none given); text over :data:`MAX_ERROR_CHARS` is cut, not refused."""
    if error is None:
        return None
    return check_text("error", error)[:MAX_ERROR_CHARS]


def check_claim(claim: Any) -> QueuedWorkClaim:
    check_instance("claim", claim, QueuedWorkClaim)
    check_id("claim.session_id", claim.session_id)
    check_id("claim.claim_id", claim.claim_id)
    check_id("claim.lease_token", claim.lease_token)
    batches = check_list("claim.batches", claim.batches)
    if not batches:
        raise InvalidInput("claim.batches", "a claim holds at least one batch")
    check_count("claim.fencing_token", claim.fencing_token)
    for index, batch in enumerate(batches):
        check_instance(f"claim.batches[{index}]", batch, QueuedWorkBatch)
        check_id(f"claim.batches[{index}].batch_id", batch.batch_id)
    checked: QueuedWorkClaim = msgspec.structs.replace(claim, batches=batches)  # batches as a list, consumed once
    return checked


# ---------------------------------------------------------------------------
# Stored form


def merge_key_text(key: MergeKey) -> str:
    if key.kind == "group":
        if not isinstance(key.name, str):
            raise InvalidInput("draft.merge_key.name", "a group merge key needs a name")
        return "group:" + check_text("draft.merge_key.name", key.name)
    if key.kind in ("never", "payload_default") and key.name is None:
        return key.kind
    raise InvalidInput("draft.merge_key", f"unknown merge key {key.kind!r}")


def parse_merge_key(text: str) -> MergeKey:
    if text == "never":
        return MergeKey.never()
    if text == "payload_default":
        return MergeKey.payload_default()
    if text.startswith("group:"):
        return MergeKey.group(text[len("group:") :])
    raise ValueError(f"unknown merge key {text!r}")


class BatchRow(msgspec.Struct, frozen=True):
    """A batch row as the backends select it (claim state excluded)."""

    enqueue_seq: int
    batch_id: str
    session_id: str
    source_key: str | None
    delivery_policy: str
    slot_policy: str
    merge_key: str
    available_at_ms: int
    enqueued_at_ms: int
    payloads: bytes


BATCH_COLUMNS = (
    "enqueue_seq, batch_id, session_id, source_key, delivery_policy, slot_policy, "
    "merge_key, available_at_ms, enqueued_at_ms, payloads"
)


def decode_batch(row: tuple[Any, ...]) -> QueuedWorkBatch:
    """Decode a stored row; anything malformed raises :class:`CorruptData` naming the batch."""
    stored = BatchRow(*row)
    try:
        delivery = DeliveryPolicy(stored.delivery_policy)
        slot = SlotPolicy(stored.slot_policy)
        merge_key = parse_merge_key(stored.merge_key)
    except ValueError as exc:
        raise CorruptData(f"queued-work batch {stored.batch_id}", str(exc)) from exc
    payloads = codec.decode(f"queued-work batch {stored.batch_id}", stored.payloads, list[QueuedWorkPayload])
    return QueuedWorkBatch(
        batch_id=stored.batch_id,
        session_id=stored.session_id,
        enqueue_seq=stored.enqueue_seq,
        source_key=stored.source_key,
        delivery_policy=delivery,
        slot_policy=slot,
        merge_key=merge_key,
        available_at_ms=stored.available_at_ms,
        enqueued_at_ms=stored.enqueued_at_ms,
        items=[
            QueuedWorkItem(item_id=f"{stored.batch_id}:item:{index}", payload=payload)
            for index, payload in enumerate(payloads)
        ],
    )


def decode_dead_letter(row: tuple[Any, ...]) -> QueuedWorkDeadLetter:
    """A ``dead_letters`` row: the batch columns, then attempts, dead-lettered-at, last owner, claimed-at, error."""
    batch = decode_batch(row[:10])
    attempts, dead_at, owner, claimed_at, error = row[10:15]
    if type(attempts) is not int or type(dead_at) is not int:
        raise CorruptData(f"queued-work batch {batch.batch_id}", "dead-letter columns have the wrong types")
    return QueuedWorkDeadLetter(
        batch=batch,
        attempts=attempts,
        dead_lettered_at_ms=dead_at,
        last_owner_id=owner,
        last_claimed_at_ms=claimed_at,
        last_error=error,
    )


def decode_dead_letters(rows: Iterable[tuple[Any, ...]]) -> Iterator[QueuedWorkDeadLetter]:
    """Decode dead-letter rows, logging and skipping undecodable ones (as lists of queued work do)."""
    for row in rows:
        try:
            yield decode_dead_letter(row)
        except CorruptData as exc:
            log.error("skipping undecodable dead letter: %s", exc)


def decode_batches(rows: Iterable[tuple[Any, ...]]) -> Iterator[QueuedWorkBatch]:
    """Decode rows, logging and skipping undecodable ones so one bad row blocks nobody."""
    for row in rows:
        try:
            yield decode_batch(row)
        except CorruptData as exc:
            log.error("skipping undecodable queued-work row: %s", exc)


# ---------------------------------------------------------------------------
# Claim selection


def select_group(
    candidates: Iterable[QueuedWorkBatch],
    boundary: QueuedWorkClaimBoundary,
    max_batches: int,
    alone: Callable[[QueuedWorkBatch], bool] | None = None,
) -> list[QueuedWorkBatch]:
    """Pick the next claimable group from ready, free batches in FIFO order.

    The head decides: a checkpoint claim only takes an earliest-safe-boundary
    head; an exclusive head goes alone; a join head takes the following join
    batches with equal delivery policy and merge key, up to ``max_batches``,
    stopping at the first that does not match.  A batch for which ``alone``
    is true (a retry, under a poison policy) is treated as exclusive.
    """
    if max_batches <= 0:
        return []
    iterator = iter(candidates)
    head = next(iterator, None)
    if head is None:
        return []
    if (
        boundary is QueuedWorkClaimBoundary.ACTIVE_TURN_CHECKPOINT
        and head.delivery_policy is not DeliveryPolicy.EARLIEST_SAFE_BOUNDARY
    ):
        return []
    group = [head]
    if head.slot_policy is SlotPolicy.EXCLUSIVE or (alone is not None and alone(head)):
        return group
    for batch in iterator:
        if len(group) >= max_batches:
            break
        if (
            batch.slot_policy is not SlotPolicy.JOIN
            or batch.delivery_policy is not head.delivery_policy
            or batch.merge_key != head.merge_key
            or (alone is not None and alone(batch))
        ):
            break
        group.append(batch)
    return group


# ---------------------------------------------------------------------------
# Poison work: backoff between attempts


def retry_delay_ms(policy: PoisonPolicy | None, session_id: str, enqueue_seq: int, attempt: int) -> int:
    """How long after failed attempt ``attempt`` (1-based) the batch waits before it is offered again.

    ``min(base * 2**(attempt-1), max)``, minus up to ``jitter`` of it.  The
    jitter comes from a hash of the batch's session, enqueue sequence and
    attempt: the same on every backend and in every process, so a test clock
    sees exact instants, while batches that failed together still spread out.
    No policy, or the last allowed attempt (nothing follows it but the
    dead-letter list), waits nothing.
    """
    if policy is None or attempt < 1 or (policy.max_attempts is not None and attempt >= policy.max_attempts):
        return 0
    base, cap = policy.backoff_base_ms, policy.backoff_max_ms
    delay = cap if attempt > 64 or base << (attempt - 1) > cap else base << (attempt - 1)
    if policy.jitter and delay:
        digest = hashlib.sha256(f"{session_id}\x00{enqueue_seq}\x00{attempt}".encode()).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2**64  # in [0, 1)
        delay -= min(delay, int(delay * policy.jitter * fraction))
    return delay
