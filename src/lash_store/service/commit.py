"""Applying a prepared commit inside one write transaction, in the order the contract fixes.

1. lock the session's head, read it and the clock;  2. session binding;
3. exactly-once turn stamps (a replay returns the stored result before any
other check);  4. head compare-and-set;  5. queue completions: each claim
must still own exactly its batches under its fence;  6. refs given without a
value must name a stored blob of their kind;  7. blobs, usage, graph, head;
8. consume the completed work;  9. attachments and the turn stamp.
Any failure raises and the backend rolls the whole transaction back.
"""

from __future__ import annotations

from lash_store.core import codec
from lash_store.core.checkpoint import BoundRef
from lash_store.core.commit import CommitPlan, TurnCommitRecord
from lash_store.core.graph import EncodedNode
from lash_store.core.head import HeadRow
from lash_store.core.usage import add_usage, decode_totals, encode_totals
from lash_store.errors import (
    CorruptData,
    HeadRevisionConflict,
    InvalidInput,
    QueuedWorkClaimExpired,
    RuntimeTurnCommitConflict,
    SessionBindingMismatch,
)
from lash_store.model import QueuedWorkCompletion, RuntimeCommitResult
from lash_store.service.head import read_head
from lash_store.service.ports import Tx


def apply_commit(tx: Tx, plan: CommitPlan) -> RuntimeCommitResult:
    tx.send("lock_session")
    head = read_head(tx)
    now = tx.now_ms()
    actual = head.head_revision
    if head.bound and head.session_id != plan.session_id:
        raise SessionBindingMismatch(head.session_id or "", plan.session_id)
    stamp = plan.turn_commit
    if stamp is not None:
        if stamp.session_id != plan.session_id:
            raise RuntimeTurnCommitConflict(stamp.session_id, stamp.turn_id)
        stored = find_turn_commit(tx, stamp.session_id, stamp.turn_id)
        if stored is not None:
            if stored.turn_commit_hash != stamp.turn_commit_hash:
                raise RuntimeTurnCommitConflict(stamp.session_id, stamp.turn_id)
            return stored.result
    if plan.expected_head_revision is not None and plan.expected_head_revision != actual:
        raise HeadRevisionConflict(plan.expected_head_revision, actual)
    for queue_session in sorted({completion.session_id for completion in plan.completions}):
        tx.send("lock_queue", {"session_id": queue_session})
    for completion in plan.completions:
        _check_claim_ownership(tx, plan.session_id, completion)
    for bound in plan.bound_refs:
        check_bound_ref(tx, bound)

    tx.send_many("put_blob", [blob_params(blob, now) for blob in plan.blobs])
    ledger = head.usage_ledger
    if plan.usage:
        totals = decode_totals(ledger)
        add_usage(totals, plan.usage)
        ledger = encode_totals(totals)
    node_count, user_count = _write_graph(tx, plan, head)
    revision = actual + 1
    tx.send(
        "write_head",
        HeadRow(
            plan.session_id,
            revision,
            plan.checkpoint_ref,
            plan.leaf_node_id,
            plan.head_body,
            ledger,
            node_count,
            user_count,
        ).params(),
    )
    for completion in plan.completions:
        if tx.run_many("delete_claimed_batch", claim_row_params(completion)) != len(completion.batch_ids):
            raise QueuedWorkClaimExpired(completion.session_id, completion.claim_id)
    if plan.attachment_ids:
        stamp_attachments(tx, plan.session_id, plan.attachment_ids, now)
    result = RuntimeCommitResult(head_revision=revision, checkpoint_ref=plan.checkpoint_ref, manifest=plan.manifest)
    if stamp is not None:
        record = codec.encode("turn commit record", TurnCommitRecord(stamp.turn_commit_hash, result))
        tx.run(
            "record_turn_commit",
            {"session_id": stamp.session_id, "turn_id": stamp.turn_id, "record": record, "committed_at_ms": now},
        )
    return result


def find_turn_commit(tx: Tx, session_id: str, turn_id: str) -> TurnCommitRecord | None:
    row = tx.one("find_turn_commit", {"session_id": session_id, "turn_id": turn_id})
    if row is None:
        return None
    if type(row[0]) is not bytes:
        raise CorruptData(f"turn commit {turn_id!r}", "stored record is not a blob")
    return codec.decode(f"turn commit {turn_id!r}", row[0], TurnCommitRecord)


def _write_graph(tx: Tx, plan: CommitPlan, head: HeadRow) -> tuple[int, int]:
    """Write the graph delta and return the new (live node, live user message) counters."""
    nodes = plan.nodes
    if plan.graph_kind == "replace_full":
        tx.run("delete_graph")
        counts = (len(nodes), sum(node.user_text is not None for node in nodes))
    elif nodes:
        counts = _counts_after_upsert(tx, head, nodes)
    else:
        return head.node_count, head.user_message_count
    tx.send_many("upsert_node", [node_params(node) for node in nodes])
    return counts


def _counts_after_upsert(tx: Tx, head: HeadRow, nodes: list[EncodedNode]) -> tuple[int, int]:
    """Re-appending a node replaces it and clears its tombstone, so only its previous live state is subtracted."""
    node_count, user_count = head.node_count, head.user_message_count
    for _node_id, tombstoned, was_user in tx.all("nodes_state", {"node_ids": [node.node_id for node in nodes]}):
        if not tombstoned:
            node_count -= 1
            user_count -= bool(was_user)
    node_count += len(nodes)
    user_count += sum(node.user_text is not None for node in nodes)
    return node_count, user_count


def _check_claim_ownership(tx: Tx, session_id: str, completion: QueuedWorkCompletion) -> None:
    expired = QueuedWorkClaimExpired(completion.session_id, completion.claim_id)
    wanted = completion.batch_ids
    if completion.session_id != session_id or len(set(wanted)) != len(wanted):
        raise expired
    owned: dict[str, int] = dict(
        tx.all(
            "claimed_batches",
            {
                "session_id": completion.session_id,
                "claim_id": completion.claim_id,
                "lease_token": completion.lease_token,
            },
        )
    )
    if set(owned) != set(wanted) or any(fence != completion.fencing_token for fence in owned.values()):
        raise expired


def check_bound_ref(tx: Tx, bound: BoundRef) -> None:
    """A snapshot named only by ref must exist and decode as its kind, or every later load would fail."""
    row = tx.one("get_blob", {"hash": bound.ref})
    if row is None:
        raise InvalidInput(bound.what, f"names blob {bound.ref}, which is not stored")
    content = codec.decode_blob(bound.ref, *row)
    if bound.kind == "msgpack":
        try:
            codec.decode_any(f"snapshot blob {bound.ref}", content)
        except CorruptData as exc:
            raise InvalidInput(bound.what, f"names blob {bound.ref}, which is not a msgpack snapshot") from exc


def blob_params(blob: codec.EncodedBlob, now_ms: int) -> dict[str, object]:
    return {
        "hash": blob.hash,
        "encoding": blob.encoding,
        "kind": blob.kind,
        "raw_size": blob.raw_size,
        "created_at_ms": now_ms,
        "content": blob.content,
    }


def node_params(node: EncodedNode) -> dict[str, object]:
    return {
        "node_id": node.node_id,
        "parent_node_id": node.parent_node_id,
        "user_text": node.user_text,
        "body": node.body,
    }


def claim_row_params(completion: QueuedWorkCompletion) -> list[dict[str, object]]:
    return [
        {
            "session_id": completion.session_id,
            "batch_id": batch_id,
            "claim_id": completion.claim_id,
            "lease_token": completion.lease_token,
            "fencing_token": completion.fencing_token,
        }
        for batch_id in completion.batch_ids
    ]


def stamp_attachments(tx: Tx, session_id: str, attachment_ids: list[str], now_ms: int) -> int:
    """First commit wins: only rows of ``session_id`` still uncommitted are stamped."""
    return tx.run_many(
        "stamp_attachment",
        [
            {"committed_at_ms": now_ms, "attachment_id": attachment_id, "session_id": session_id}
            for attachment_id in attachment_ids
        ],
    )
