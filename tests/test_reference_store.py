"""Direct tests of the reference store, and regression tests for divergences the stateful test found.

The scenario tests run against the reference store *and* the real stores
(``Store.memory()`` and a file store), so each one also pins the two to the
same behaviour.  Divergences found by ``tests/test_stateful.py`` where the
real store is the wrong side are kept here as plain, deterministic tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lash_store import AsyncStore, GcPolicy, Store, StoreOptions
from lash_store.errors import (
    HeadRevisionConflict,
    InvalidInput,
    QueuedWorkClaimExpired,
    RuntimeTurnCommitConflict,
    StoreClosed,
)
from lash_store.model import (
    AttachmentIntent,
    BlobArtifactDescriptor,
    DeliveryPolicy,
    DurabilityTier,
    GraphDelta,
    HydratedCheckpoint,
    MergeKey,
    QueuedWorkClaimBoundary,
    RuntimeCommit,
    SessionGraph,
    SessionMeta,
    SessionReadScope,
    SlotPolicy,
    TokenLedgerEntry,
    TokenUsage,
    TurnCommitStamp,
)
from lash_store.testing.reference import ReferenceStore
from tests.helpers import ManualClock, draft, message

IDLE = QueuedWorkClaimBoundary.IDLE
CHECKPOINT = QueuedWorkClaimBoundary.ACTIVE_TURN_CHECKPOINT
ESB = DeliveryPolicy.EARLIEST_SAFE_BOUNDARY
ACTC = DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT
START_MS = 1_700_000_000_000


@pytest.fixture(params=["reference", "memory", "file"])
def store_and_clock(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, ManualClock]]:
    """Each backend with GC grace 0 and an injected clock."""
    clock = ManualClock(START_MS)
    options = StoreOptions(clock=clock, gc_policy=GcPolicy(grace_ms=0))
    store: Any
    if request.param == "reference":
        store = ReferenceStore(options)
    elif request.param == "memory":
        store = Store.memory(options)
    else:
        store = Store.open(tmp_path / "session.db", options)
    with store:
        yield store, clock


def _commit(store: Any, expected: int | None, **fields: Any) -> Any:
    return store.commit_runtime_state(RuntimeCommit(session_id="root", expected_head_revision=expected, **fields))


# ---------------------------------------------------------------------------
# Regression tests: real-store bugs found by the stateful test


def test_vacuum_keeps_a_tombstoned_leaf_reading_as_no_leaf(store_and_clock: tuple[Any, ManualClock]) -> None:
    """Vacuum is housekeeping: it must not change what reads return.

    A tombstoned leaf reads as no leaf (README, "Reads").  Found by the
    stateful test: after ``vacuum()`` removes the tombstoned leaf node, the real
    store reports the head's leaf as the id of the node that no longer exists
    (``leaf_node_id='a'``) instead of ``None``.  ``Store.vacuum`` deletes the
    rows but leaves ``session_head.leaf_node_id`` pointing at one of them, and
    ``_live_leaf`` then treats the id as an unknown node and echoes it.
    session-store.md section 10 item 24: the reference semantics clear a
    tombstoned leaf on read *and on vacuum*.  Fixed in commit 68860dc.
    """
    store, _clock = store_and_clock
    _commit(store, 0, graph=GraphDelta.append([message("a", "user", "hi")], "a"))
    store.tombstone_nodes(["a"])
    before = store.load_session()
    assert before is not None and before.graph.leaf_node_id is None
    assert store.vacuum().removed_node_count == 1
    for scope in (SessionReadScope.full_graph(), SessionReadScope.active_path()):
        after = store.load_session(scope)
        assert after is not None
        assert after.graph == SessionGraph(nodes=[], leaf_node_id=None), scope


def test_renew_rejects_a_claim_that_lists_a_batch_twice(store_and_clock: tuple[Any, ManualClock]) -> None:
    """Renew is atomic: a claim that does not match the rows it owns changes nothing and raises.

    Found by the stateful test (claim forgery ``dup_replace``).  A claim owns
    batches ``[b1, b2]``; the caller renews a copy listing ``[b1, b1]``.
    Observed on the real store: the renew *succeeds* and returns the new
    expiry, but only ``b1``'s lease is extended -- ``b2`` keeps its old expiry
    and is claimable by someone else as soon as that passes.  Expected (SPEC
    section 6, README "renew ... a mismatch or a stale claim changes nothing"):
    ``QueuedWorkClaimExpired`` and no change.  Cause: ``sqlite/queue.py``
    ``renew()`` compares two *counts* with ``len(held.batches)`` -- rows owned
    by the claim (2) and rows updated once per listed id (``b1`` twice = 2) --
    so a duplicated id makes both counts match although the listed set
    ``{b1}`` differs from the owned set ``{b1, b2}``; completions use a set
    comparison (``core/commit.py`` ``_check_claim_ownership``) and are not
    affected.  Fixed in commit 48237f0.
    """
    store, clock = store_and_clock
    for text in ("one", "two"):
        store.enqueue_queued_work(draft("root", text, slot=SlotPolicy.JOIN))
    claim = store.claim_ready_queued_work("root", "w", IDLE, 1_000, 10)
    assert claim is not None and len(claim.batches) == 2
    forged = msgspec.structs.replace(claim, batches=[claim.batches[0], claim.batches[0]])
    with pytest.raises(QueuedWorkClaimExpired):
        store.renew_queued_work_claim(forged, 1_000_000)
    clock.advance(1_000)  # the original lease ran out: both batches must be free again, neither was extended
    assert [batch.batch_id for batch in store.list_pending_queued_work("root")] == claim.batch_ids


# ---------------------------------------------------------------------------
# Scenarios every backend (and the reference) must agree on


def test_reference_reports_inline_tier_and_no_path() -> None:
    store = ReferenceStore()
    assert store.durability_tier is DurabilityTier.INLINE
    assert store.path is None
    assert store.load_session() is None and store.load_session_meta() is None and store.load_picker_info() is None


def test_closed_reference_store_raises_store_closed() -> None:
    store = ReferenceStore()
    store.close()
    with pytest.raises(StoreClosed):
        store.load_session()
    with pytest.raises(StoreClosed):
        _commit(store, None)
    with pytest.raises(InvalidInput):  # validation still comes first, as in the real store
        store.get_blob("")
    assert store.claim_ready_queued_work("root", "w", IDLE, 1, 0) is None  # max_batches=0 never touches storage


def test_commit_round_trip_with_usage_rules(store_and_clock: tuple[Any, ManualClock]) -> None:
    store, _clock = store_and_clock
    cached_only = TokenLedgerEntry(source="llm", model="m", usage=TokenUsage(cached_input_tokens=4))
    zero = TokenLedgerEntry(source="tool", model="m", usage=TokenUsage())
    more = TokenLedgerEntry(source="llm", model="m", usage=TokenUsage(input_tokens=2))
    result = _commit(
        store,
        0,
        graph=GraphDelta.replace_full(
            SessionGraph(nodes=[message("u", "user", "hello"), message("a", "assistant", "hi", "u")], leaf_node_id="a")
        ),
        checkpoint=HydratedCheckpoint(turn_state={"turn": 1}, tool_state={"generation": 9}, execution_state=b"\x01"),
        usage_deltas=[cached_only, zero, more],
    )
    read = store.load_session(SessionReadScope.active_path())
    assert read is not None and read.head_revision == result.head_revision == 1
    assert [node.node_id for node in read.graph.nodes] == ["u", "a"]
    assert read.checkpoint is not None and read.checkpoint.tool_state == {"generation": 9}
    assert read.checkpoint.execution_state == b"\x01"
    assert read.token_ledger == [
        TokenLedgerEntry(source="llm", model="m", usage=TokenUsage(input_tokens=2, cached_input_tokens=4))
    ]
    store.save_session_meta(SessionMeta(session_id="root", session_name="n", created_at="c", model="m"))
    picker = store.load_picker_info()
    assert picker is not None and (picker.first_user_message, picker.user_message_count) == ("hello", 1)


def test_reappend_replaces_payload_keeps_position_and_clears_tombstone(
    store_and_clock: tuple[Any, ManualClock],
) -> None:
    store, _clock = store_and_clock
    _commit(store, 0, graph=GraphDelta.append([message("a", "user", "one"), message("b", "user", "two")], "b"))
    assert store.tombstone_nodes(["a", "a", "ghost"]) == 1
    _commit(store, 1, graph=GraphDelta.append([message("a", "user", "again")], "a"))
    read = store.load_session()
    assert read is not None
    assert [(n.node_id, n.payload["parts"][0]["text"]) for n in read.graph.nodes] == [("a", "again"), ("b", "two")]
    assert store.graph_node_count() == 2
    with pytest.raises(InvalidInput) as excinfo:
        _commit(store, 2, graph=GraphDelta.append([message("c", "user", "x"), message("c", "user", "y")], "c"))
    assert excinfo.value.what == "commit.graph.nodes[1].node_id"


def test_active_path_survives_a_parent_cycle(store_and_clock: tuple[Any, ManualClock]) -> None:
    store, _clock = store_and_clock
    nodes = [message("a", "user", "x", "b"), message("b", "assistant", "y", "a")]
    _commit(store, 0, graph=GraphDelta.append(nodes, "a"))
    read = store.load_session(SessionReadScope.active_path())
    assert read is not None and [n.node_id for n in read.graph.nodes] == ["b", "a"]


def test_turn_stamp_replay_and_conflict(store_and_clock: tuple[Any, ManualClock]) -> None:
    store, _clock = store_and_clock
    stamp = TurnCommitStamp(session_id="root", turn_id="t", turn_commit_hash="h")
    first = _commit(store, 0, turn_commit=stamp)
    _commit(store, 1)
    assert _commit(store, 0, turn_commit=stamp) == first  # replay before the CAS check
    with pytest.raises(RuntimeTurnCommitConflict):
        _commit(store, 2, turn_commit=msgspec.structs.replace(stamp, turn_commit_hash="other"))
    with pytest.raises(HeadRevisionConflict) as excinfo:
        _commit(store, 7)
    assert (excinfo.value.expected, excinfo.value.actual) == (7, 2)


def test_failed_commit_writes_nothing(store_and_clock: tuple[Any, ManualClock]) -> None:
    """A stamp plus a stale completion: no head, no stamp, the queue intact; then the valid commit consumes it."""
    store, _clock = store_and_clock
    store.enqueue_queued_work(draft("root", "work"))
    claim = store.claim_ready_queued_work("root", "w", IDLE, 60_000, 10)
    assert claim is not None
    stamp = TurnCommitStamp(session_id="root", turn_id="t", turn_commit_hash="h")
    stale = msgspec.structs.replace(claim.completion(), lease_token="stale")
    with pytest.raises(QueuedWorkClaimExpired):
        _commit(store, 0, turn_commit=stamp, completed_queue_claims=[stale])
    assert store.load_session() is None and len(store.list_queued_work("root")) == 1
    ok = _commit(store, 0, turn_commit=stamp, completed_queue_claims=[claim.completion()])
    assert store.list_queued_work("root") == []
    assert _commit(store, 0, turn_commit=stamp, completed_queue_claims=[claim.completion()]) == ok


def test_queue_grouping_boundaries_and_fencing(store_and_clock: tuple[Any, ManualClock]) -> None:
    store, clock = store_and_clock
    join = draft("root", "a", slot=SlotPolicy.JOIN)
    first = store.enqueue_queued_work(join)
    delayed = store.enqueue_queued_work(join.with_available_at_ms(START_MS + 1_000))
    second = store.enqueue_queued_work(join)
    other_key = store.enqueue_queued_work(join.with_merge_key(MergeKey.group("g")))
    blocker = store.enqueue_queued_work(draft("root", "b", delivery=ACTC))
    claim = store.claim_ready_queued_work("root", "w", IDLE, 1_000, 64)
    assert claim is not None and claim.batch_ids == [first.batch_id, second.batch_id]  # delayed row skipped
    assert claim.fencing_token == 1
    assert store.claim_ready_queued_work("root", "w", CHECKPOINT, 1_000, 64) is not None  # the group("g") batch
    assert store.claim_ready_queued_work("root", "w", CHECKPOINT, 1_000, 64) is None  # ACTC head blocks checkpoints
    # claim by ids is all-or-nothing and consumes no fencing token on a mismatch
    assert store.claim_ready_queued_work_by_batch_ids("root", "w", IDLE, 1_000, [other_key.batch_id]) is None
    taken = store.claim_ready_queued_work_by_batch_ids("root", "w", IDLE, 1_000, [blocker.batch_id])
    assert taken is not None and taken.fencing_token == 3
    # an expired claim that was reclaimed can neither renew nor complete; the reclaim has a larger fence
    clock.advance(1_000)
    reclaim = store.claim_ready_queued_work("root", "w2", IDLE, 1_000, 64)
    assert reclaim is not None and reclaim.batch_ids[0] == first.batch_id and reclaim.fencing_token == 4
    assert delayed.batch_id in reclaim.batch_ids
    with pytest.raises(QueuedWorkClaimExpired):
        store.renew_queued_work_claim(claim, 1_000)
    with pytest.raises(QueuedWorkClaimExpired):
        _commit(store, 0, completed_queue_claims=[claim.completion()])
    assert store.abandon_queued_work_claim(claim) == 0
    assert store.cancel_queued_work_batch("root", first.batch_id) is None  # live-claimed
    assert store.abandon_queued_work_claim(reclaim) == len(reclaim.batches)
    cancelled = store.cancel_queued_work_batch("root", first.batch_id)
    assert cancelled == first
    again = store.enqueue_queued_work(join)
    assert again.enqueue_seq > blocker.enqueue_seq  # never reused


def test_source_key_is_idempotent_while_the_batch_exists(store_and_clock: tuple[Any, ManualClock]) -> None:
    store, _clock = store_and_clock
    keyed = draft("root", "a").with_source_key("host:1")
    first = store.enqueue_queued_work(keyed)
    assert store.enqueue_queued_work(draft("root", "changed").with_source_key("host:1")) == first
    assert store.enqueue_queued_work(draft("other", "a").with_source_key("host:1")).batch_id != first.batch_id
    store.cancel_queued_work_batch("root", first.batch_id)
    assert store.enqueue_queued_work(keyed).batch_id != first.batch_id


def test_gc_roots_grace_and_modules(tmp_path: Path) -> None:
    for make in (ReferenceStore, Store.memory):
        clock = ManualClock(START_MS)
        store: Any = make(StoreOptions(clock=clock, gc_policy=GcPolicy(grace_ms=100)))
        orphan = store.put_artifact_blob(BlobArtifactDescriptor.plugin_session_snapshot(), b"orphan")
        frame_ref = store.put_blob(b"frame")
        module_ref = store.put_module_artifact("mod", b"module")
        result = _commit(
            store,
            0,
            agent_frames=[{"id": "f", "execution_state_ref": frame_ref}],
            checkpoint=HydratedCheckpoint(tool_state={"generation": 1}),
        )
        young = store.gc_unreachable()
        assert young.deleted_blob_count == 0 and store.get_blob(orphan) == b"orphan"
        clock.advance(100)
        report = store.gc_unreachable()
        assert report.deleted_blob_count == 1 and store.get_blob(orphan) is None
        assert report.root_count == 4  # manifest, tool state, frame ref, module
        for ref in (frame_ref, module_ref, result.checkpoint_ref, *result.manifest.child_refs()):
            assert store.get_blob(ref) is not None
        store.forget_module_artifact("mod")
        assert store.gc_unreachable().deleted_blob_count == 1
        assert store.get_module_artifact("mod") is None
        store.close()


def test_attachment_manifest(store_and_clock: tuple[Any, ManualClock]) -> None:
    store, clock = store_and_clock
    for attachment_id in ("b", "a", "c"):
        store.record_intent(
            AttachmentIntent(attachment_id=attachment_id, session_id="root", canonical_uri="u", intent_at_epoch_ms=100)
        )
    store.record_intent(
        AttachmentIntent(attachment_id="c", session_id="root", canonical_uri="v", intent_at_epoch_ms=50)
    )
    assert [e.attachment_id for e in store.list_uncommitted(200)] == ["a", "b", "c"]  # refresh keeps the later time
    assert store.commit_refs("other", ["a"]) == 0
    assert store.commit_refs("root", ["a", "a", "ghost"]) == 1
    clock.advance(5)
    _commit(store, 0, committed_attachment_ids=["a", "b"])
    assert [(e.attachment_id, e.canonical_uri) for e in store.list_uncommitted(200)] == [("c", "v")]
    store.forget("c")
    assert store.list_uncommitted(2**63 - 1) == []


def test_copy_session_into_forks_everything_live() -> None:
    for make in (ReferenceStore, Store.memory):
        source: Any = make(None)
        target: Any = make(None)
        _commit(
            source,
            0,
            graph=GraphDelta.append([message("a", "user", "hi"), message("b", "assistant", "yo", "a")], "b"),
            checkpoint=HydratedCheckpoint(tool_state={"generation": 2}),
            usage_deltas=[TokenLedgerEntry(source="llm", model="m", usage=TokenUsage(input_tokens=3))],
        )
        source.tombstone_nodes(["a"])
        source.put_module_artifact("mod", b"bytes")
        source.copy_session_into(target, session_id="fork")
        copied, original = target.load_session(), source.load_session()
        assert copied == msgspec.structs.replace(original, session_id="fork")
        assert target.get_module_artifact("mod") == b"bytes"
        with pytest.raises(InvalidInput) as excinfo:
            source.copy_session_into(target)
        assert excinfo.value.what == "target"
        with pytest.raises(InvalidInput) as excinfo:
            make(None).copy_session_into(target)
        assert excinfo.value.what == "source"


def test_async_facade_wraps_the_reference_store() -> None:
    async def main() -> int:
        store = AsyncStore(ReferenceStore())
        await store.commit_runtime_state(RuntimeCommit(session_id="chat", expected_head_revision=0))
        read = await store.load_session()
        await store.close()
        assert read is not None
        return read.head_revision

    assert asyncio.run(main()) == 1


def test_usage_total_overflow_is_refused_and_the_session_stays_readable(
    store_and_clock: tuple[Any, ManualClock],
) -> None:
    """Whatever a commit is allowed to write must read back.

    Each usage counter is validated as a signed 64-bit integer, but the
    per-``(source, model)`` *total* is not.  Observed on the real store: the
    second commit below succeeds, SQLite's ``input_tokens + excluded.input_tokens``
    in ``sqlite/commit_tx.py`` (``_ADD_TOTAL``) overflows and is stored as a
    REAL, and from then on every ``load_session()`` raises ``CorruptData("usage
    ledger", "... wrong column types")`` (``sqlite/store.py`` ``_token_ledger``):
    the session can no longer be resumed.  Expected: the overflowing commit is
    refused with ``InvalidInput`` naming the usage deltas, nothing is written,
    and the session still loads.
    """
    store, _clock = store_and_clock
    big = TokenLedgerEntry(source="llm", model="m", usage=TokenUsage(input_tokens=2**63 - 1))
    _commit(store, 0, usage_deltas=[big])
    with pytest.raises(InvalidInput) as excinfo:
        _commit(store, 1, usage_deltas=[big])
    assert excinfo.value.what.startswith("commit.usage_deltas")
    read = store.load_session()
    assert read is not None and read.head_revision == 1
    assert read.token_ledger == [big]
