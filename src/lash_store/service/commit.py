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
from lash_store.service.head import head_from_row, missing_head
from lash_store.service.ports import Params, Row, Tx


def apply_commit(tx: Tx, plan: CommitPlan) -> tuple[RuntimeCommitResult, bool]:
    """The commit's result, and whether it is a replay of a stored turn stamp (nothing was written)."""
    # Lock everything the commit needs (the session, then its completions' queues in order), then read
    # everything its checks need in one go, then check in the contract's order, then write.
    tx.send("lock_session")
    queues = sorted({completion.session_id for completion in plan.completions})
    for queue_session in queues:
        tx.send("lock_queue", {"session_id": queue_session})
    reads = _CommitReads(tx, plan)
    head = reads.head
    now = tx.now_ms()
    actual = head.head_revision
    if head.bound and head.session_id != plan.session_id:
        raise SessionBindingMismatch(head.session_id or "", plan.session_id)
    stamp = plan.turn_commit
    if stamp is not None:
        if stamp.session_id != plan.session_id:
            raise RuntimeTurnCommitConflict(stamp.session_id, stamp.turn_id)
        stored = reads.turn_commit
        if stored is not None:
            if stored.turn_commit_hash != stamp.turn_commit_hash:
                raise RuntimeTurnCommitConflict(stamp.session_id, stamp.turn_id)
            return stored.result, True
    if plan.expected_head_revision is not None and plan.expected_head_revision != actual:
        raise HeadRevisionConflict(plan.expected_head_revision, actual)
    for completion, owned in zip(plan.completions, reads.claims, strict=True):
        _check_claim_ownership(plan.session_id, completion, owned)
    for bound in plan.bound_refs:
        check_bound_ref(tx, bound)

    tx.send_many("put_blob", [blob_params(blob, now) for blob in plan.blobs])
    tx.send_many("put_blob_edge", [{"parent_ref": parent, "child_ref": child} for parent, child in plan.edges])
    ledger = head.usage_ledger
    if plan.usage:
        totals = decode_totals(ledger)
        add_usage(totals, plan.usage)
        ledger = encode_totals(totals)
    node_count, user_count = _write_graph(tx, plan, head, reads.node_states)
    if plan.tombstone_ids:
        hidden, users = hide_nodes(tx, plan.tombstone_ids)
        node_count, user_count = node_count - hidden, user_count - users
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
        tx.send_many("stamp_attachment", stamp_params(plan.session_id, plan.attachment_ids, now))
    result = RuntimeCommitResult(head_revision=revision, checkpoint_ref=plan.checkpoint_ref, manifest=plan.manifest)
    if stamp is not None:
        record = codec.encode("turn commit record", TurnCommitRecord(stamp.turn_commit_hash, result))
        tx.send(
            "record_turn_commit",
            {"session_id": stamp.session_id, "turn_id": stamp.turn_id, "record": record, "committed_at_ms": now},
        )
    return result, False


class _CommitReads:
    """Everything a commit's checks read, fetched in one call after its locks are held."""

    def __init__(self, tx: Tx, plan: CommitPlan) -> None:
        stamp = plan.turn_commit
        appending = plan.graph_kind != "replace_full" and bool(plan.nodes)
        reads: list[tuple[str, Params | None]] = [("read_head", None)]
        if stamp is not None:
            reads.append(("find_turn_commit", {"session_id": stamp.session_id, "turn_id": stamp.turn_id}))
        if appending:
            reads.append(("nodes_state", {"node_ids": [node.node_id for node in plan.nodes]}))
        reads.extend(("claimed_batches", _claim_key(completion)) for completion in plan.completions)
        rows = iter(tx.fetch_many(reads))
        head_row = _first(next(rows))
        if head_row is None:
            raise missing_head(tx)
        self.head = head_from_row(head_row)
        self.turn_commit = None if stamp is None else decode_turn_commit(stamp.turn_id, _first(next(rows)))
        self.node_states = next(rows) if appending else []
        self.claims: list[dict[str, int]] = [dict(rows_of_claim) for rows_of_claim in rows]


def _first(rows: list[Row]) -> Row | None:
    return rows[0] if rows else None


def decode_turn_commit(turn_id: str, row: Row | None) -> TurnCommitRecord | None:
    if row is None:
        return None
    if type(row[0]) is not bytes:
        raise CorruptData(f"turn commit {turn_id!r}", "stored record is not a blob")
    return codec.decode(f"turn commit {turn_id!r}", row[0], TurnCommitRecord)


def _write_graph(tx: Tx, plan: CommitPlan, head: HeadRow, states: list[Row]) -> tuple[int, int]:
    """Write the graph delta and return the new (live node, live user message) counters."""
    nodes = plan.nodes
    if plan.graph_kind == "replace_full":
        tx.send("delete_graph")
        counts = (len(nodes), sum(node.user_text is not None for node in nodes))
    elif nodes:
        counts = _counts_after_upsert(head, nodes, states)
    else:
        return head.node_count, head.user_message_count
    if plan.graph_kind != "replace_full" and states:  # a re-appended node's index is replaced, not added to
        tx.send("delete_node_index", {"node_ids": [row[0] for row in states]})
    tx.send_many("upsert_node", [node_params(node) for node in nodes])
    write_node_index(tx, nodes)
    return counts


def write_node_index(tx: Tx, nodes: list[EncodedNode]) -> None:
    """The tag and blob-ref rows of freshly written nodes (their old rows are already gone)."""
    tx.send_many("insert_node_tag", [{"node_id": node.node_id, "tag": tag} for node in nodes for tag in node.tags])
    tx.send_many("insert_node_ref", [{"node_id": node.node_id, "ref": ref} for node in nodes for ref in node.blob_refs])


def hide_nodes(tx: Tx, ids: list[str]) -> tuple[int, int]:
    """Tombstone the live nodes among ``ids``; returns (nodes hidden, user messages among them)."""
    live = [row for row in tx.all("nodes_state", {"node_ids": ids}) if not row[1]]
    if not live:
        return 0, 0
    hidden = tx.run_many("tombstone_node", [{"node_id": row[0]} for row in live])
    return hidden, sum(bool(row[2]) for row in live)


def _counts_after_upsert(head: HeadRow, nodes: list[EncodedNode], states: list[Row]) -> tuple[int, int]:
    """Re-appending a node replaces it and clears its tombstone, so only its previous live state is subtracted."""
    node_count, user_count = head.node_count, head.user_message_count
    for _node_id, tombstoned, was_user in states:
        if not tombstoned:
            node_count -= 1
            user_count -= bool(was_user)
    node_count += len(nodes)
    user_count += sum(node.user_text is not None for node in nodes)
    return node_count, user_count


def _claim_key(completion: QueuedWorkCompletion) -> Params:
    return {"session_id": completion.session_id, "claim_id": completion.claim_id, "lease_token": completion.lease_token}


def _check_claim_ownership(session_id: str, completion: QueuedWorkCompletion, owned: dict[str, int]) -> None:
    expired = QueuedWorkClaimExpired(completion.session_id, completion.claim_id)
    wanted = completion.batch_ids
    if completion.session_id != session_id or len(set(wanted)) != len(wanted):
        raise expired
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
        "kind": node.kind,
        "lane": node.lane,
        "sort_key": node.sort_key,
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


def stamp_params(session_id: str, attachment_ids: list[str], now_ms: int) -> list[Params]:
    """First commit wins: ``stamp_attachment`` changes only rows of ``session_id`` still uncommitted."""
    return [
        {"committed_at_ms": now_ms, "attachment_id": attachment_id, "session_id": session_id}
        for attachment_id in attachment_ids
    ]
