"""Preparing a runtime commit: every check and every encoding, before any lock is taken.

``prepare_commit`` turns a :class:`RuntimeCommit` into a :class:`CommitPlan`
without touching the database; :mod:`lash_store.service.commit` then applies
the plan inside one write transaction, in the order the contract fixes.
Collections are copied into the plan here, once, so that an iterator the
caller passed can never be consumed by validation and then seen empty by the
write.
"""

from __future__ import annotations

from typing import Any

import msgspec

from lash_store.core import codec
from lash_store.core.checkpoint import BoundRef, encode_checkpoint
from lash_store.core.graph import EncodedNode, encode_nodes
from lash_store.core.validate import (
    check_count,
    check_id,
    check_ids,
    check_instance,
    check_list,
    check_optional_id,
    check_revision,
    check_text,
    check_usage,
)
from lash_store.errors import InvalidInput
from lash_store.model import (
    GraphDelta,
    HydratedCheckpoint,
    NewBlob,
    QueuedWorkCompletion,
    RuntimeCommit,
    RuntimeCommitResult,
    SessionCheckpoint,
    TokenLedgerEntry,
    TurnCommitStamp,
)
from lash_store.options import BlobProfile


class TurnCommitRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a turn stamp stores: the hash it was committed with and the result it returned."""

    turn_commit_hash: str
    result: RuntimeCommitResult


class CommitPlan(msgspec.Struct, frozen=True):
    """A validated, fully encoded commit: only reads of the head and inserts remain for the lock."""

    session_id: str
    expected_head_revision: int | None
    head_body: bytes
    blobs: list[codec.EncodedBlob]
    bound_refs: list[BoundRef]
    checkpoint_ref: str
    manifest: SessionCheckpoint
    graph_kind: str
    leaf_node_id: str | None
    nodes: list[EncodedNode]
    usage: list[TokenLedgerEntry]
    turn_commit: TurnCommitStamp | None
    completions: list[QueuedWorkCompletion]
    attachment_ids: list[str]
    edges: list[tuple[str, str]] = []  # (parent blob, child blob) of new composite blobs
    tombstone_ids: list[str] = []


def prepare_blobs(what: str, blobs: Any, profile: BlobProfile) -> tuple[list[codec.EncodedBlob], list[tuple[str, str]]]:
    """Check and encode :class:`NewBlob` values (hash, compression) and their child edges, before any lock."""
    encoded: list[codec.EncodedBlob] = []
    edges: list[tuple[str, str]] = []
    for index, blob in enumerate(check_list(what, blobs)):
        item = f"{what}[{index}]"
        check_instance(item, blob, NewBlob)
        descriptor = None if blob.descriptor is None else codec.check_descriptor(blob.descriptor)
        try:
            one = codec.encode_blob(blob.content, descriptor, profile)
        except InvalidInput as exc:
            raise InvalidInput(f"{item}.content", exc.detail) from exc
        encoded.append(one)
        edges.extend((one.hash, child) for child in sorted(set(check_ids(f"{item}.children", blob.children))))
    return encoded, sorted(set(edges))


def prepare_commit(commit: RuntimeCommit, profile: BlobProfile) -> CommitPlan:
    """Validate every field and encode everything; raises :class:`InvalidInput` naming the field."""
    check_instance("commit", commit, RuntimeCommit)
    session_id = check_id("commit.session_id", commit.session_id)
    expected = check_revision("commit.expected_head_revision", commit.expected_head_revision)
    check_text("commit.current_agent_frame_id", commit.current_agent_frame_id)
    frames = check_list("commit.agent_frames", commit.agent_frames)
    head_body = codec.encode(  # its typed field was checked above; config and frames are opaque
        "commit",
        codec.HeadBody(config=commit.config, agent_frames=frames, current_agent_frame_id=commit.current_agent_frame_id),
    )
    check_instance("commit.checkpoint", commit.checkpoint, HydratedCheckpoint)
    encoded = encode_checkpoint(commit.checkpoint, profile, "commit.checkpoint")
    delta = _check_graph(commit.graph)
    nodes = encode_nodes("commit.graph.nodes", delta.nodes)
    usage = [
        check_usage(f"commit.usage_deltas[{index}]", entry)
        for index, entry in enumerate(check_list("commit.usage_deltas", commit.usage_deltas))
    ]
    stamp = _check_stamp(commit.turn_commit)
    completions = [
        _check_completion(f"commit.completed_queue_claims[{index}]", completion)
        for index, completion in enumerate(check_list("commit.completed_queue_claims", commit.completed_queue_claims))
    ]
    attachment_ids = check_ids("commit.committed_attachment_ids", commit.committed_attachment_ids)
    new_blobs, edges = prepare_blobs("commit.new_blobs", commit.new_blobs, profile)
    tombstone_ids = check_ids("commit.tombstone_node_ids", commit.tombstone_node_ids)
    return CommitPlan(
        session_id=session_id,
        expected_head_revision=expected,
        head_body=head_body,
        blobs=[*new_blobs, *encoded.blobs],
        bound_refs=encoded.bound_refs,
        checkpoint_ref=encoded.checkpoint_ref,
        manifest=encoded.manifest,
        graph_kind=delta.kind,
        leaf_node_id=delta.leaf_node_id,
        nodes=nodes,
        usage=[entry for entry in usage if not entry.usage.is_zero()],
        turn_commit=stamp,
        completions=completions,
        attachment_ids=attachment_ids,
        edges=edges,
        tombstone_ids=tombstone_ids,
    )


def _check_graph(delta: Any) -> GraphDelta:
    check_instance("commit.graph", delta, GraphDelta)
    if delta.kind not in ("unchanged", "append", "replace_full"):
        raise InvalidInput("commit.graph.kind", f"unknown graph delta {delta.kind!r}")
    check_optional_id("commit.graph.leaf_node_id", delta.leaf_node_id)
    if delta.kind == "unchanged" and delta.nodes:
        raise InvalidInput("commit.graph.nodes", "an unchanged delta carries no nodes")
    return delta  # type: ignore[no-any-return]


def _check_stamp(stamp: Any) -> TurnCommitStamp | None:
    if stamp is None:
        return None
    check_instance("commit.turn_commit", stamp, TurnCommitStamp)
    check_id("commit.turn_commit.session_id", stamp.session_id)
    check_id("commit.turn_commit.turn_id", stamp.turn_id)
    check_text("commit.turn_commit.turn_commit_hash", stamp.turn_commit_hash)
    return stamp  # type: ignore[no-any-return]


def _check_completion(what: str, completion: Any) -> QueuedWorkCompletion:
    check_instance(what, completion, QueuedWorkCompletion)
    batch_ids = check_ids(f"{what}.batch_ids", completion.batch_ids)
    if not batch_ids:
        raise InvalidInput(f"{what}.batch_ids", "a completion names at least one batch")
    return QueuedWorkCompletion(
        session_id=check_id(f"{what}.session_id", completion.session_id),
        claim_id=check_id(f"{what}.claim_id", completion.claim_id),
        lease_token=check_id(f"{what}.lease_token", completion.lease_token),
        batch_ids=batch_ids,
        fencing_token=check_count(f"{what}.fencing_token", completion.fencing_token),
    )
