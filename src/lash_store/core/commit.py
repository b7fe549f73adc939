"""The runtime commit: validation and encoding (before the lock) and the ordering rules (under it).

``prepare_commit`` turns a :class:`RuntimeCommit` into a :class:`CommitPlan`
without touching the database.  ``apply_commit`` then runs the plan against a
backend's write transaction in the one order every backend must follow.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from lash_store.core import codec
from lash_store.core.checkpoint import encode_checkpoint
from lash_store.core.graph import EncodedNode, encode_nodes
from lash_store.core.validate import check_id, check_ids, check_instance, check_optional_id, check_revision, check_text
from lash_store.errors import (
    HeadRevisionConflict,
    InvalidInput,
    QueuedWorkClaimExpired,
    RuntimeTurnCommitConflict,
    SessionBindingMismatch,
)
from lash_store.model import (
    GraphDelta,
    HydratedCheckpoint,
    QueuedWorkCompletion,
    RuntimeCommit,
    RuntimeCommitResult,
    TokenLedgerEntry,
    TurnCommitStamp,
)
from lash_store.options import BlobProfile


class HeadRow(msgspec.Struct, frozen=True):
    """The columns of the head that commits and reads need."""

    session_id: str
    head_revision: int
    checkpoint_ref: str | None
    leaf_node_id: str | None
    body: bytes


class TurnCommitRecord(msgspec.Struct, frozen=True):
    """What a turn stamp stores: the hash it was committed with and the result it returned."""

    turn_commit_hash: str
    result: RuntimeCommitResult


class CommitTx(Protocol):
    """The write-transaction primitives a backend provides to :func:`apply_commit`."""

    def read_head(self) -> HeadRow | None: ...
    def find_turn_commit(self, session_id: str, turn_id: str) -> bytes | None: ...
    def claimed_batches(self, session_id: str, claim_id: str, lease_token: str) -> dict[str, int]: ...
    def put_blobs(self, blobs: list[codec.EncodedBlob], now_ms: int) -> None: ...
    def add_usage(self, entries: list[TokenLedgerEntry]) -> None: ...
    def replace_graph(self, nodes: list[EncodedNode]) -> None: ...
    def upsert_nodes(self, nodes: list[EncodedNode]) -> None: ...
    def write_head(self, head: HeadRow) -> None: ...
    def delete_claimed_batches(self, completion: QueuedWorkCompletion) -> int: ...
    def stamp_attachments(self, session_id: str, attachment_ids: list[str], now_ms: int) -> None: ...
    def record_turn_commit(self, stamp: TurnCommitStamp, record: bytes, now_ms: int) -> None: ...


class CommitPlan(msgspec.Struct, frozen=True):
    """A validated, fully encoded commit: only inserts remain to be done under the lock."""

    commit: RuntimeCommit
    head_body: bytes
    blobs: list[codec.EncodedBlob]
    checkpoint_ref: str
    manifest: Any
    nodes: list[EncodedNode]
    usage: list[TokenLedgerEntry]


def prepare_commit(commit: RuntimeCommit, profile: BlobProfile) -> CommitPlan:
    """Validate every field and encode everything; raises :class:`InvalidInput` naming the field."""
    check_instance("commit", commit, RuntimeCommit)
    check_id("commit.session_id", commit.session_id)
    check_revision("commit.expected_head_revision", commit.expected_head_revision)
    check_text("commit.current_agent_frame_id", commit.current_agent_frame_id)
    if not isinstance(commit.agent_frames, list):
        raise InvalidInput("commit.agent_frames", "must be a list")
    head_body = codec.encode(
        "commit.config / commit.agent_frames",
        codec.HeadBody(
            config=commit.config,
            agent_frames=commit.agent_frames,
            current_agent_frame_id=commit.current_agent_frame_id,
        ),
    )
    check_instance("commit.checkpoint", commit.checkpoint, HydratedCheckpoint)
    blobs, checkpoint_ref, manifest = encode_checkpoint(commit.checkpoint, profile, "commit.checkpoint")
    nodes = _prepare_graph(commit.graph)
    usage = [_check_usage(index, entry) for index, entry in enumerate(commit.usage_deltas)]
    if commit.turn_commit is not None:
        stamp = check_instance("commit.turn_commit", commit.turn_commit, TurnCommitStamp)
        check_id("commit.turn_commit.session_id", stamp.session_id)
        check_id("commit.turn_commit.turn_id", stamp.turn_id)
        check_text("commit.turn_commit.turn_commit_hash", stamp.turn_commit_hash)
    for index, completion in enumerate(commit.completed_queue_claims):
        _check_completion(f"commit.completed_queue_claims[{index}]", completion)
    check_ids("commit.committed_attachment_ids", commit.committed_attachment_ids)
    return CommitPlan(
        commit=commit,
        head_body=head_body,
        blobs=blobs,
        checkpoint_ref=checkpoint_ref,
        manifest=manifest,
        nodes=nodes,
        usage=[entry for entry in usage if not entry.usage.is_zero()],
    )


def _prepare_graph(delta: GraphDelta) -> list[EncodedNode]:
    check_instance("commit.graph", delta, GraphDelta)
    if delta.kind not in ("unchanged", "append", "replace_full"):
        raise InvalidInput("commit.graph.kind", f"unknown graph delta {delta.kind!r}")
    check_optional_id("commit.graph.leaf_node_id", delta.leaf_node_id)
    if delta.kind == "unchanged" and delta.nodes:
        raise InvalidInput("commit.graph.nodes", "an unchanged delta carries no nodes")
    return encode_nodes("commit.graph.nodes", delta.nodes)


def _check_usage(index: int, entry: Any) -> TokenLedgerEntry:
    what = f"commit.usage_deltas[{index}]"
    check_instance(what, entry, TokenLedgerEntry)
    check_text(f"{what}.source", entry.source)
    check_text(f"{what}.model", entry.model)
    for name in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"):
        value = getattr(entry.usage, name)
        if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
            raise InvalidInput(f"{what}.usage.{name}", "must be a signed 64-bit integer")
    return entry  # type: ignore[no-any-return]


def _check_completion(what: str, completion: Any) -> None:
    check_instance(what, completion, QueuedWorkCompletion)
    check_id(f"{what}.session_id", completion.session_id)
    check_id(f"{what}.claim_id", completion.claim_id)
    check_id(f"{what}.lease_token", completion.lease_token)
    check_ids(f"{what}.batch_ids", completion.batch_ids)
    if not completion.batch_ids:
        raise InvalidInput(f"{what}.batch_ids", "a completion names at least one batch")
    fence = completion.fencing_token
    if isinstance(fence, bool) or not isinstance(fence, int) or fence < 0:
        raise InvalidInput(f"{what}.fencing_token", "must be a non-negative integer")


def apply_commit(tx: CommitTx, plan: CommitPlan, now_ms: int) -> RuntimeCommitResult:
    """Run a prepared commit inside the caller's write transaction, in the contract's order."""
    commit = plan.commit
    head = tx.read_head()
    actual = head.head_revision if head is not None else 0
    # 1. Session binding.
    if head is not None and head.session_id != commit.session_id:
        raise SessionBindingMismatch(head.session_id, commit.session_id)
    # 2. Exactly-once turn commits: a replay returns the stored result before any other check.
    stamp = commit.turn_commit
    if stamp is not None:
        if stamp.session_id != commit.session_id:
            raise RuntimeTurnCommitConflict(stamp.session_id, stamp.turn_id)
        stored = tx.find_turn_commit(stamp.session_id, stamp.turn_id)
        if stored is not None:
            record = codec.decode(f"turn commit {stamp.turn_id!r}", stored, TurnCommitRecord)
            if record.turn_commit_hash != stamp.turn_commit_hash:
                raise RuntimeTurnCommitConflict(stamp.session_id, stamp.turn_id)
            return record.result
    # 3. Head compare-and-set.
    if commit.expected_head_revision is not None and commit.expected_head_revision != actual:
        raise HeadRevisionConflict(commit.expected_head_revision, actual)
    # 4. Queue completions: each claim must still own exactly its batches, with its fence.
    for completion in commit.completed_queue_claims:
        _check_claim_ownership(tx, commit.session_id, completion)
    # 5.-8. Checkpoint blobs, usage, graph, head.
    tx.put_blobs(plan.blobs, now_ms)
    if plan.usage:
        tx.add_usage(plan.usage)
    leaf = commit.graph.leaf_node_id
    if commit.graph.kind == "replace_full":
        tx.replace_graph(plan.nodes)
    elif plan.nodes:
        tx.upsert_nodes(plan.nodes)
    revision = actual + 1
    tx.write_head(HeadRow(commit.session_id, revision, plan.checkpoint_ref, leaf, plan.head_body))
    # 9. Consume the completed work in the same transaction as the head write.
    for completion in commit.completed_queue_claims:
        if tx.delete_claimed_batches(completion) != len(completion.batch_ids):
            raise QueuedWorkClaimExpired(completion.session_id, completion.claim_id)
    # 10. Attachments and the turn stamp become durable together with the head.
    if commit.committed_attachment_ids:
        tx.stamp_attachments(commit.session_id, list(commit.committed_attachment_ids), now_ms)
    result = RuntimeCommitResult(head_revision=revision, checkpoint_ref=plan.checkpoint_ref, manifest=plan.manifest)
    if stamp is not None:
        record_bytes = codec.encode("turn commit record", TurnCommitRecord(stamp.turn_commit_hash, result))
        tx.record_turn_commit(stamp, record_bytes, now_ms)
    return result


def _check_claim_ownership(tx: CommitTx, session_id: str, completion: QueuedWorkCompletion) -> None:
    expired = QueuedWorkClaimExpired(completion.session_id, completion.claim_id)
    if completion.session_id != session_id:
        raise expired
    wanted = completion.batch_ids
    if len(set(wanted)) != len(wanted):
        raise expired
    owned = tx.claimed_batches(completion.session_id, completion.claim_id, completion.lease_token)
    if set(owned) != set(wanted) or any(fence != completion.fencing_token for fence in owned.values()):
        raise expired
