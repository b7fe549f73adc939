"""Differential, property-based stateful test: a real backend against the pure-Python reference store.

A hypothesis ``RuleBasedStateMachine`` drives random operation sequences --
commits (CAS, turn stamps, graph deltas, usage, checkpoints, queue
completions, attachments), reads, tombstones, vacuum, GC, blobs, the work
queue (enqueue, claims, renew, abandon, cancel, lists), the attachment
manifest, metadata, module artifacts and forks -- against a real ``Store`` and
a :class:`~lash_store.testing.reference.ReferenceStore` side by side.  Both
share one :class:`~tests.helpers.ManualClock`, so every result must be equal:
values, and errors (same class; same ``.what`` for ``InvalidInput``; same
fields for the typed conflicts).  Random ids (batch ids, claim ids, lease
tokens) are compared through a per-store map to shared logical ids assigned
in creation order.

Two profiles:

* the short profile runs in CI against ``Store.memory()`` and a file store;
* the long profile (marked ``slow``) takes its size from the environment:
  ``LASH_STATEFUL_EXAMPLES`` examples of up to ``LASH_STATEFUL_STEPS`` steps per
  backend (defaults: 700 x 80, i.e. more than 100,000 steps in total), and
  prints how many steps ran.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from lash_store import GcPolicy, Store, StoreOptions
from lash_store.errors import (
    CorruptData,
    HeadRevisionConflict,
    InvalidInput,
    QueuedWorkClaimExpired,
    RuntimeTurnCommitConflict,
    SessionBindingMismatch,
)
from lash_store.model import (
    AttachmentIntent,
    BlobArtifactDescriptor,
    DeliveryPolicy,
    GraphDelta,
    HydratedCheckpoint,
    MergeKey,
    QueuedWorkBatch,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkCompletion,
    QueuedWorkPayload,
    RuntimeCommit,
    SessionGraph,
    SessionMeta,
    SessionNode,
    SessionReadScope,
    SessionRelation,
    SlotPolicy,
    TokenLedgerEntry,
    TokenUsage,
    TurnCommitStamp,
    TurnInput,
)
from lash_store.postgres import PostgresStore, close_shared_pools
from lash_store.testing.reference import ReferenceStore
from tests.helpers import ManualClock

MAX_MS = 2**63 - 1
START_MS = 1_700_000_000_000
REAL, REF = 0, 1

STEPS = 0
"""Rules executed so far in this process (every rule counts one step)."""


def _step() -> None:
    global STEPS
    STEPS += 1


# ---------------------------------------------------------------------------
# Small pools, so that replays, conflicts, duplicates and re-appends happen

SESSIONS = ["root", "other"]
NODE_IDS = [f"n{i}" for i in range(6)]
LEAVES = [None, *NODE_IDS, "ghost"]
TURN_IDS = ["t0", "t1", "t2"]
HASHES = ["h0", "h1"]
SOURCE_KEYS = [None, None, "host:a", "host:b", "injection:c"]
ATTACHMENTS = ["att0", "att1", "att2"]
MODULES = ["mod0", "mod1"]
CONTENTS = [b"", b"a", b"bb", b"\x00\xff" * 8, b"module-bytes"]
TTLS = [0, 1, 50, 1_000, 60_000, 60_000, 60_000, MAX_MS]
ADVANCES = [0, 1, 10, 500, 1_000, 5_000, 60_000, 1_000_000]
DESCRIPTORS = [
    BlobArtifactDescriptor.checkpoint_manifest(),
    BlobArtifactDescriptor.tool_state_snapshot(),
    BlobArtifactDescriptor.plugin_session_snapshot(),
    BlobArtifactDescriptor.execution_state_snapshot(),
    BlobArtifactDescriptor.module_artifact(),
]
GHOST_REF = "0" * 64

texts = st.sampled_from(["hello", "", "  ", "second line", "ünïcode"])
parts = st.one_of(
    texts.map(lambda text: {"type": "text", "text": text}),
    st.just({"type": "image", "ref": "img"}),
    st.just({"type": "tool_call", "text": "call"}),
    st.just({"type": "reasoning", "text": "because"}),
)
payloads = st.one_of(
    st.builds(
        lambda role, ps: {"role": role, "parts": ps},
        st.sampled_from(["user", "assistant"]),
        st.lists(parts, max_size=2),
    ),
    st.none(),
    st.integers(-3, 3).map(lambda value: {"value": value, "raw": b"\x01"}),
)
nodes = st.builds(
    SessionNode,
    node_id=st.sampled_from(NODE_IDS),
    parent_node_id=st.sampled_from([None, *NODE_IDS]),
    kind=st.sampled_from(["message", "message", "event"]),
    payload=payloads,
    timestamp_ms=st.sampled_from([None, 0, 17]),
)
leaves = st.sampled_from(LEAVES)
node_lists = st.one_of(
    st.lists(nodes, max_size=4, unique_by=lambda node: node.node_id),
    st.lists(nodes, max_size=4, unique_by=lambda node: node.node_id),
    st.lists(nodes, max_size=3),  # may name an id twice: InvalidInput
)
deltas = st.one_of(
    leaves.map(GraphDelta.unchanged),
    st.builds(GraphDelta.append, node_lists, leaves),
    st.builds(GraphDelta.append, node_lists, leaves),
    st.builds(lambda ns, leaf: GraphDelta.replace_full(SessionGraph(nodes=ns, leaf_node_id=leaf)), node_lists, leaves),
)
usages = st.builds(
    TokenUsage,
    input_tokens=st.sampled_from([0, 1, 2, 3] * 4 + [2**62]),  # 2**62 twice overflows a signed 64-bit total
    output_tokens=st.integers(0, 2),
    cached_input_tokens=st.integers(0, 2),
    reasoning_tokens=st.sampled_from([-1, 0, 1] * 5 + [-(2**62)]),
)
ledger_entries = st.builds(
    TokenLedgerEntry, source=st.sampled_from(["llm", "tool"]), model=st.sampled_from(["m1", "m2"]), usage=usages
)
ref_picks = st.one_of(st.none(), st.none(), st.none(), st.just(-1), st.integers(0, 50))
"""A ref chosen at run time: ``None``, an unknown ref (-1), or the n-th known ref (modulo)."""


class CheckpointSpec(msgspec.Struct, frozen=True):
    turn_state: Any
    tool_state: Any
    tool_state_ref: int | None
    plugin_snapshot: Any
    plugin_snapshot_revision: int | None
    execution_state: bytes | None
    execution_state_ref: int | None


checkpoint_specs = st.builds(
    CheckpointSpec,
    turn_state=st.sampled_from([{}, {"turn": 1}, {"turn": 2, "nested": [1, "x"]}]),
    tool_state=st.sampled_from([None, None, {"generation": 3}, {"generation": 4, "tools": ["a"]}]),
    tool_state_ref=ref_picks,
    plugin_snapshot=st.sampled_from([None, {"plugins": {}}]),
    plugin_snapshot_revision=st.sampled_from([None, 0, 5]),
    execution_state=st.sampled_from([None, None, b"", b"\xde\xad\xbe\xef"]),
    execution_state_ref=ref_picks,
)
frame_specs = st.lists(st.tuples(st.sampled_from(["f0", "f1"]), ref_picks), max_size=2)
stamp_specs = st.one_of(
    st.none(),
    st.tuples(st.sampled_from(["same", "same", "same", "other"]), st.sampled_from(TURN_IDS), st.sampled_from(HASHES)),
)
CLAIM_FORGERIES = [
    "genuine",
    "genuine",
    "genuine",
    "drop_batch",
    "dup_batch",
    "dup_replace",
    "bad_fence",
    "bad_token",
    "other_session",
]
completion_specs = st.tuples(st.integers(0, 20), st.sampled_from([*CLAIM_FORGERIES, "ghost_batch", "old_fence"]))
queue_payloads = st.one_of(
    texts.map(lambda text: QueuedWorkPayload.turn_input(TurnInput.text(text))),
    st.just(QueuedWorkPayload.turn_input(TurnInput.text("look").with_image_ref("img", b"\x89PNG"))),
    st.just(QueuedWorkPayload.session_command({"kind": "reset_session", "reason": "user"})),
    st.just(QueuedWorkPayload.process_wake({"wake_id": "w1", "sequence": 3, "input": "ping"})),
)
queue_sessions = st.sampled_from(["root"] * 4 + ["other"])
merge_keys = st.sampled_from([MergeKey.never(), MergeKey.never(), MergeKey.payload_default(), MergeKey.group("g")])


def _node(node_id: str) -> SessionNode:
    return SessionNode(node_id=node_id)


# Calls with invalid input; both stores must raise InvalidInput naming the same field.
INVALID_CALLS: list[Callable[[Any], Any]] = [
    lambda s: s.commit_runtime_state(RuntimeCommit(session_id="", expected_head_revision=None)),
    lambda s: s.commit_runtime_state(RuntimeCommit(session_id="root", expected_head_revision=-1)),
    lambda s: s.commit_runtime_state(
        RuntimeCommit(
            session_id="root", expected_head_revision=None, graph=GraphDelta(kind="unchanged", nodes=[_node("n0")])
        )
    ),
    lambda s: s.commit_runtime_state(
        RuntimeCommit(
            session_id="root",
            expected_head_revision=None,
            graph=GraphDelta.append([SessionNode(node_id="n0", timestamp_ms="x")], None),  # type: ignore[arg-type]
        )
    ),
    lambda s: s.commit_runtime_state(
        RuntimeCommit(
            session_id="root", expected_head_revision=None, checkpoint=HydratedCheckpoint(execution_state="x")
        )  # type: ignore[arg-type]
    ),
    lambda s: s.commit_runtime_state(
        RuntimeCommit(
            session_id="root", expected_head_revision=None, checkpoint=HydratedCheckpoint(plugin_snapshot_revision=-1)
        )
    ),
    lambda s: s.commit_runtime_state(
        RuntimeCommit(
            session_id="root",
            expected_head_revision=None,
            usage_deltas=[TokenLedgerEntry(source="s", model="m", usage=TokenUsage(input_tokens=True))],
        )
    ),
    lambda s: s.commit_runtime_state(
        RuntimeCommit(
            session_id="root",
            expected_head_revision=None,
            completed_queue_claims=[
                QueuedWorkCompletion(
                    session_id="root", claim_id="c", lease_token="t", batch_ids=["b"], fencing_token=-1
                )
            ],
        )
    ),
    lambda s: s.commit_runtime_state(
        RuntimeCommit(session_id="root", expected_head_revision=None, committed_attachment_ids=[""])
    ),
    lambda s: s.commit_runtime_state(
        RuntimeCommit(
            session_id="root",
            expected_head_revision=None,
            turn_commit=TurnCommitStamp(session_id="root", turn_id="", turn_commit_hash="h"),
        )
    ),
    lambda s: s.commit_runtime_state(
        RuntimeCommit(session_id="root", expected_head_revision=None, config={"bad": object()})
    ),
    lambda s: s.load_session(SessionReadScope.active_path("")),
    lambda s: s.load_node(""),
    lambda s: s.tombstone_nodes("n0"),
    lambda s: s.get_blob(""),
    lambda s: s.put_blob("text"),
    lambda s: s.put_artifact_blob("descriptor", b"x"),
    lambda s: s.put_checkpoint(HydratedCheckpoint(tool_state_ref="")),
    lambda s: s.get_checkpoint(""),
    lambda s: s.enqueue_queued_work(
        QueuedWorkBatchDraft.new(
            "root", DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, SlotPolicy.JOIN, []
        ).with_available_at_ms(2**63)
    ),
    lambda s: s.enqueue_queued_work(
        QueuedWorkBatchDraft.new("", DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, SlotPolicy.JOIN, [])
    ),
    lambda s: s.enqueue_queued_work(
        QueuedWorkBatchDraft.new(
            "root", DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, SlotPolicy.JOIN, [QueuedWorkPayload(kind="process_wake")]
        )
    ),
    lambda s: s.claim_ready_queued_work("root", "", QueuedWorkClaimBoundary.IDLE, 1, 1),
    lambda s: s.claim_ready_queued_work("root", "w", "idle", 1, 1),
    lambda s: s.claim_ready_queued_work("root", "w", QueuedWorkClaimBoundary.IDLE, -1, 1),
    lambda s: s.claim_ready_queued_work("root", "w", QueuedWorkClaimBoundary.IDLE, True, 1),
    lambda s: s.claim_ready_queued_work("root", "w", QueuedWorkClaimBoundary.IDLE, 1, -1),
    lambda s: s.claim_ready_queued_work_by_batch_ids("root", "w", QueuedWorkClaimBoundary.IDLE, 1, "qwb:x"),
    lambda s: s.claim_ready_queued_work_by_batch_ids("root", "w", QueuedWorkClaimBoundary.IDLE, 1, [""]),
    lambda s: s.renew_queued_work_claim(
        QueuedWorkClaim(
            session_id="root",
            claim_id="c",
            owner_id="w",
            lease_token="t",
            fencing_token=1,
            claimed_at_epoch_ms=0,
            expires_at_epoch_ms=0,
            batches=[],
        ),
        1,
    ),
    lambda s: s.cancel_queued_work_batch("root", ""),
    lambda s: s.list_queued_work(""),
    lambda s: s.record_intent(
        AttachmentIntent(attachment_id="a", session_id="root", canonical_uri="u", intent_at_epoch_ms=-1)
    ),
    lambda s: s.commit_refs("root", "att0"),
    lambda s: s.list_uncommitted(MAX_MS + 1),
    lambda s: s.forget(""),
    lambda s: s.save_session_meta(SessionMeta(session_id="", session_name="n", created_at="c", model="m")),
    lambda s: s.save_session_meta(SessionMeta(session_id="root", session_name=1, created_at="c", model="m")),  # type: ignore[arg-type]
    lambda s: s.put_module_artifact("", b"x"),
    lambda s: s.put_module_artifact("mod0", "text"),
    lambda s: s.get_module_artifact(""),
]


# ---------------------------------------------------------------------------
# Running one operation on both stores and comparing the outcomes

Outcome = tuple[bool, Any]


def _call(op: Callable[[Any, int], Any], store: Any, side: int) -> Outcome:
    try:
        return True, op(store, side)
    except Exception as exc:  # compared below; an unexpected class is a divergence too
        return False, exc


class StoreMachine(RuleBasedStateMachine):
    """One real store and one reference store, driven by the same random operations."""

    BACKEND = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(START_MS)
        self.tmp: str | None = None
        if self.BACKEND == "memory":
            self.options = StoreOptions(clock=self.clock, gc_policy=GcPolicy(grace_ms=0))
            self.real = Store.memory(self.options)
        elif self.BACKEND == "postgres":
            assert PostgresStoreMachine.DSN, "the postgres machine runs under the stateful_dsn fixture"
            self.options = StoreOptions(clock=self.clock, gc_policy=GcPolicy(grace_ms=5_000, auto_run_every_commits=3))
            self.real = PostgresStore.open(PostgresStoreMachine.DSN, f"stateful-{uuid.uuid4().hex}", self.options)
        else:
            self.tmp = tempfile.mkdtemp(prefix="lash-stateful-")
            self.options = StoreOptions(clock=self.clock, gc_policy=GcPolicy(grace_ms=5_000, auto_run_every_commits=3))
            self.real = Store.open(Path(self.tmp) / "session.db", self.options)
        self.ref = ReferenceStore(self.options)
        self.stores = (self.real, self.ref)
        # Logical ids: per side, store id -> logical index (creation order).
        self.batch_ids: tuple[dict[str, int], dict[str, int]] = ({}, {})
        self.batches: list[tuple[str, str]] = []
        self.claim_ids: tuple[dict[str, int], dict[str, int]] = ({}, {})
        self.claims: list[tuple[QueuedWorkClaim, QueuedWorkClaim]] = []
        self.refs: list[str] = []
        self.revision = 0

    def teardown(self) -> None:
        self.real.close()
        self.ref.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- comparison helpers ----------------------------------------------

    def both(
        self, op: Callable[[Any, int], Any], norm: Callable[[Any, int], Any] | None = None
    ) -> tuple[Outcome, Outcome]:
        """Run ``op(store, side)`` on both stores and assert equal (normalised) outcomes."""
        return self.both_on(self.stores, op, norm)

    def both_on(
        self,
        stores: tuple[Any, Any],
        op: Callable[[Any, int], Any],
        norm: Callable[[Any, int], Any] | None = None,
    ) -> tuple[Outcome, Outcome]:
        """Run ``op(store, side)`` on a (real, reference) pair of stores and assert equal outcomes."""
        real = _call(op, stores[REAL], REAL)
        ref = _call(op, stores[REF], REF)
        self.compare(real, ref, norm)
        return real, ref

    def compare(self, real: Outcome, ref: Outcome, norm: Callable[[Any, int], Any] | None) -> None:
        if real[0] and ref[0]:
            a, b = (norm(real[1], REAL), norm(ref[1], REF)) if norm else (real[1], ref[1])
            assert a == b, f"results differ:\n  real:      {a!r}\n  reference: {b!r}"
            return
        if not real[0] and not ref[0]:
            a, b = self.error_key(real[1], REAL), self.error_key(ref[1], REF)
            assert a == b, f"errors differ:\n  real:      {real[1]!r} {a}\n  reference: {ref[1]!r} {b}"
            return
        raise AssertionError(f"outcomes differ:\n  real:      {real[1]!r}\n  reference: {ref[1]!r}")

    def error_key(self, exc: Exception, side: int) -> tuple[Any, ...]:
        if isinstance(exc, (InvalidInput, CorruptData)):
            return type(exc), exc.what
        if isinstance(exc, QueuedWorkClaimExpired):
            return type(exc), exc.session_id, self.claim_name(exc.claim_id, side)
        if isinstance(exc, HeadRevisionConflict):
            return type(exc), exc.expected, exc.actual
        if isinstance(exc, SessionBindingMismatch):
            return type(exc), exc.bound_session_id, exc.attempted_session_id
        if isinstance(exc, RuntimeTurnCommitConflict):
            return type(exc), exc.session_id, exc.turn_id
        return type(exc), str(exc)

    def batch_name(self, batch_id: str, side: int) -> str:
        logical = self.batch_ids[side].get(batch_id)
        return f"B{logical}" if logical is not None else f"unknown:{batch_id}"

    def claim_name(self, claim_id: str, side: int) -> str:
        logical = self.claim_ids[side].get(claim_id)
        return f"C{logical}" if logical is not None else claim_id

    def norm_batch(self, batch: QueuedWorkBatch, side: int) -> QueuedWorkBatch:
        name = self.batch_name(batch.batch_id, side)
        items = [msgspec.structs.replace(item, item_id=f"{name}:item:{i}") for i, item in enumerate(batch.items)]
        assert all(item.item_id == f"{batch.batch_id}:item:{i}" for i, item in enumerate(batch.items))
        return msgspec.structs.replace(batch, batch_id=name, items=items)

    def norm_batches(self, value: Any, side: int) -> Any:
        if value is None:
            return None
        if isinstance(value, QueuedWorkBatch):
            return self.norm_batch(value, side)
        return [self.norm_batch(batch, side) for batch in value]

    def norm_claim(self, claim: QueuedWorkClaim | None, side: int) -> QueuedWorkClaim | None:
        if claim is None:
            return None
        name = self.claim_name(claim.claim_id, side)
        return msgspec.structs.replace(
            claim,
            claim_id=name,
            lease_token=f"token-of-{name}" if name.startswith("C") else claim.lease_token,
            batches=[self.norm_batch(batch, side) for batch in claim.batches],
        )

    def register_batch(self, real: Outcome, ref: Outcome) -> None:
        if real[0] and ref[0]:
            real_id, ref_id = real[1].batch_id, ref[1].batch_id
            if real_id not in self.batch_ids[REAL] and ref_id not in self.batch_ids[REF]:
                self.batch_ids[REAL][real_id] = self.batch_ids[REF][ref_id] = len(self.batches)
                self.batches.append((real_id, ref_id))

    def register_claim(self, real: Outcome, ref: Outcome) -> None:
        if real[0] and ref[0] and real[1] is not None and ref[1] is not None:
            self.claim_ids[REAL][real[1].claim_id] = self.claim_ids[REF][ref[1].claim_id] = len(self.claims)
            self.claims.append((real[1], ref[1]))

    def pick_ref(self, pick: int | None) -> str | None:
        if pick is None:
            return None
        if pick < 0 or not self.refs:
            return GHOST_REF
        return self.refs[pick % len(self.refs)]

    def learn_refs(self, *refs: str | None) -> None:
        for ref in refs:
            if ref is not None and ref not in self.refs:
                self.refs.append(ref)

    def side_batch_id(self, logical: int, side: int) -> str:
        return self.batches[logical][side] if logical < len(self.batches) else "qwb:ghost"

    def recent_claim(self, index: int, *, open_only: bool = False) -> int:
        """A logical claim: small indexes pick the most recent ones (optionally only those still owning rows)."""
        pool = [i for i in range(len(self.claims)) if not open_only or self.still_owns(i)]
        pool = pool or list(range(len(self.claims)))
        return pool[-1 - index % len(pool)]

    def still_owns(self, logical: int) -> bool:
        """Whether the claim still holds all its rows, read from the oracle's state (only to aim rules well)."""
        claim = self.claims[logical][REF]
        state = self.ref._backend._state  # type: ignore[attr-defined]
        assert state is not None
        rows = [state.batches.get(batch_id) for batch_id in claim.batch_ids]
        return all(row is not None and row["claim_id"] == claim.claim_id for row in rows)

    def forged_claim(self, logical: int, forgery: str, side: int) -> QueuedWorkClaim:
        """Held claim ``logical`` as seen by ``side``, possibly altered the same way on both sides."""
        claim = self.claims[logical][side]
        if forgery == "drop_batch":
            return msgspec.structs.replace(claim, batches=claim.batches[:-1])
        if forgery == "dup_batch":
            return msgspec.structs.replace(claim, batches=[*claim.batches, claim.batches[0]])
        if forgery == "dup_replace":  # same length, but the first batch listed twice instead of the last
            return msgspec.structs.replace(claim, batches=[*claim.batches[:-1], claim.batches[0]])
        if forgery == "bad_fence":
            return msgspec.structs.replace(claim, fencing_token=claim.fencing_token + 1)
        if forgery == "old_fence":
            return msgspec.structs.replace(claim, fencing_token=max(0, claim.fencing_token - 1))
        if forgery == "bad_token":
            return msgspec.structs.replace(claim, lease_token="forged-token")
        if forgery == "other_session":
            other = "other" if claim.session_id == "root" else "root"
            return msgspec.structs.replace(claim, session_id=other)
        if forgery == "ghost_batch":
            ghost = msgspec.structs.replace(claim.batches[0], batch_id="qwb:ghost")
            return msgspec.structs.replace(claim, batches=[*claim.batches, ghost])
        return claim

    def current_revision(self) -> int:
        """The stored head revision (0 without a head), as the commits so far left it."""
        return self.revision

    # -- commits ---------------------------------------------------------

    @rule(
        session=st.sampled_from(["root"] * 7 + ["other"]),
        expected=st.sampled_from(["none", "fresh", "fresh", "fresh", "stale", "ahead", "zero"]),
        config=st.sampled_from([{}, {"model": "m1"}]),
        frames=frame_specs,
        current_frame=st.sampled_from(["", "f0"]),
        delta=deltas,
        checkpoint=checkpoint_specs,
        usage=st.lists(ledger_entries, max_size=2),
        stamp=stamp_specs,
        completions=st.lists(completion_specs, max_size=2),
        attachments=st.lists(st.sampled_from(ATTACHMENTS), max_size=2),
    )
    def commit(
        self,
        session: str,
        expected: str,
        config: dict[str, Any],
        frames: list[tuple[str, int | None]],
        current_frame: str,
        delta: GraphDelta,
        checkpoint: CheckpointSpec,
        usage: list[TokenLedgerEntry],
        stamp: tuple[str, str, str] | None,
        completions: list[tuple[int, str]],
        attachments: list[str],
    ) -> None:
        _step()
        current = self.current_revision()
        revision = {
            "none": None,
            "fresh": current,
            "stale": current - 1 if current > 0 else current + 1,
            "ahead": current + 1,
            "zero": 0,
        }[expected]
        hydrated = HydratedCheckpoint(
            turn_state=checkpoint.turn_state,
            tool_state=checkpoint.tool_state,
            tool_state_ref=self.pick_ref(checkpoint.tool_state_ref),
            plugin_snapshot=checkpoint.plugin_snapshot,
            plugin_snapshot_revision=checkpoint.plugin_snapshot_revision,
            execution_state=checkpoint.execution_state,
            execution_state_ref=self.pick_ref(checkpoint.execution_state_ref),
        )
        agent_frames = [
            {"id": frame_id, **({} if pick is None else {"execution_state_ref": self.pick_ref(pick)})}
            for frame_id, pick in frames
        ]
        turn_commit = None
        if stamp is not None:
            stamp_session = session if stamp[0] == "same" else ("other" if session == "root" else "root")
            turn_commit = TurnCommitStamp(session_id=stamp_session, turn_id=stamp[1], turn_commit_hash=stamp[2])
        self.learn_refs(*(frame.get("execution_state_ref") for frame in agent_frames))

        def op(store: Any, side: int) -> Any:
            done = [
                self.forged_claim(self.recent_claim(index), forgery, side).completion()
                for index, forgery in completions
                if self.claims
            ]
            commit = RuntimeCommit(
                session_id=session,
                expected_head_revision=revision,
                config=config,
                agent_frames=agent_frames,
                current_agent_frame_id=current_frame,
                graph=delta,
                checkpoint=hydrated,
                usage_deltas=usage,
                turn_commit=turn_commit,
                completed_queue_claims=done,
                committed_attachment_ids=attachments,
            )
            return store.commit_runtime_state(commit)

        real, _ = self.both(op)
        if real[0]:
            result = real[1]
            self.revision = max(self.revision, result.head_revision)  # a replay returns an older result
            self.learn_refs(result.checkpoint_ref, *result.manifest.child_refs())

    @rule(
        indexes=st.lists(st.integers(0, 4), min_size=1, max_size=2, unique=True),
        forgery=st.sampled_from(["genuine"] * 5 + ["bad_fence", "dup_batch", "drop_batch", "bad_token"]),
        stamp=st.one_of(st.none(), st.tuples(st.sampled_from(TURN_IDS), st.sampled_from(HASHES))),
        leaf=leaves,
    )
    def commit_completing_claims(
        self, indexes: list[int], forgery: str, stamp: tuple[str, str] | None, leaf: str | None
    ) -> None:
        """A turn commit at the fresh revision that consumes recent claims (the runtime's normal path)."""
        _step()
        if not self.claims:
            return
        logical = [self.recent_claim(index, open_only=True) for index in indexes]
        session = self.claims[logical[0]][REAL].session_id
        turn_commit = (
            None if stamp is None else TurnCommitStamp(session_id=session, turn_id=stamp[0], turn_commit_hash=stamp[1])
        )

        def op(store: Any, side: int) -> Any:
            done = [self.forged_claim(claim, forgery, side).completion() for claim in logical]
            commit = RuntimeCommit(
                session_id=session,
                expected_head_revision=self.revision,
                graph=GraphDelta.unchanged(leaf),
                turn_commit=turn_commit,
                completed_queue_claims=done,
            )
            return store.commit_runtime_state(commit)

        real, _ = self.both(op)
        if real[0]:
            self.revision = max(self.revision, real[1].head_revision)
            self.learn_refs(real[1].checkpoint_ref)

    # -- reads and graph housekeeping --------------------------------------

    @rule(
        kind=st.sampled_from(["full", "full_with_leaf", "active", "active_leaf", "none"]),
        leaf=st.sampled_from([*NODE_IDS, "ghost"]),
    )
    def load_session(self, kind: str, leaf: str) -> None:
        _step()
        scope = {
            "full": SessionReadScope.full_graph(),
            "full_with_leaf": SessionReadScope(kind="full_graph", leaf_node_id=leaf),
            "active": SessionReadScope.active_path(),
            "active_leaf": SessionReadScope.active_path(leaf),
            "none": None,
        }[kind]
        self.both(lambda store, _side: store.load_session(scope))

    @rule(node_id=st.sampled_from([*NODE_IDS, "ghost"]))
    def load_node(self, node_id: str) -> None:
        _step()
        self.both(lambda store, _side: store.load_node(node_id))

    @rule(node_ids=st.lists(st.sampled_from([*NODE_IDS, "ghost"]), max_size=3))
    def tombstone_nodes(self, node_ids: list[str]) -> None:
        _step()
        self.both(lambda store, _side: store.tombstone_nodes(node_ids))

    @rule()
    def vacuum(self) -> None:
        _step()
        self.both(lambda store, _side: store.vacuum())

    @rule()
    def graph_node_count(self) -> None:
        _step()
        self.both(lambda store, _side: store.graph_node_count())

    # -- blobs, checkpoints, GC ------------------------------------------

    @rule(content=st.sampled_from(CONTENTS), descriptor=st.sampled_from([None, *DESCRIPTORS]))
    def put_blob(self, content: bytes, descriptor: BlobArtifactDescriptor | None) -> None:
        _step()
        if descriptor is None:
            real, _ = self.both(lambda store, _side: store.put_blob(content))
        else:
            real, _ = self.both(lambda store, _side: store.put_artifact_blob(descriptor, content))
        if real[0]:
            self.learn_refs(real[1])

    @rule()
    def get_blobs(self) -> None:
        _step()
        for ref in [*self.refs, GHOST_REF]:
            self.both(lambda store, _side, ref=ref: store.get_blob(ref))

    @rule(checkpoint=checkpoint_specs)
    def put_checkpoint(self, checkpoint: CheckpointSpec) -> None:
        _step()
        hydrated = HydratedCheckpoint(
            turn_state=checkpoint.turn_state,
            tool_state=checkpoint.tool_state,
            tool_state_ref=self.pick_ref(checkpoint.tool_state_ref),
            plugin_snapshot=checkpoint.plugin_snapshot,
            plugin_snapshot_revision=checkpoint.plugin_snapshot_revision,
            execution_state=checkpoint.execution_state,
            execution_state_ref=self.pick_ref(checkpoint.execution_state_ref),
        )
        real, _ = self.both(lambda store, _side: store.put_checkpoint(hydrated))
        if real[0]:
            ref, manifest = real[1]
            self.learn_refs(ref, *manifest.child_refs())

    @rule(pick=ref_picks)
    def get_checkpoint(self, pick: int | None) -> None:
        _step()
        ref = self.pick_ref(pick) or GHOST_REF
        self.both(lambda store, _side: store.get_checkpoint(ref))

    @rule()
    def gc_unreachable(self) -> None:
        _step()
        self.both(lambda store, _side: store.gc_unreachable())
        for ref in self.refs:
            self.both(lambda store, _side, ref=ref: store.get_blob(ref))

    @rule(horizon=st.sampled_from([0, 1, 50, 10_000]), dry_run=st.booleans())
    def prune(self, horizon: int, dry_run: bool) -> None:
        """Retention interleaved with everything else: both stores prune the same stamps, nothing live."""
        _step()
        self.both(lambda store, _side: store.prune(dry_run=dry_run, turn_stamps_older_than_ms=horizon))

    # -- time ------------------------------------------------------------

    @rule(ms=st.sampled_from(ADVANCES))
    def advance_clock(self, ms: int) -> None:
        _step()
        self.clock.advance(ms)

    # -- the work queue --------------------------------------------------

    @rule(
        session=queue_sessions,
        delivery=st.sampled_from(DeliveryPolicy),
        slot=st.sampled_from(SlotPolicy),
        merge_key=merge_keys,
        source_key=st.sampled_from(SOURCE_KEYS),
        delay=st.sampled_from([None, None, None, -10, 0, 100, 2_000, MAX_MS]),
        items=st.lists(queue_payloads, max_size=2),
    )
    def enqueue(
        self,
        session: str,
        delivery: DeliveryPolicy,
        slot: SlotPolicy,
        merge_key: MergeKey,
        source_key: str | None,
        delay: int | None,
        items: list[QueuedWorkPayload],
    ) -> None:
        _step()
        draft = QueuedWorkBatchDraft.new(session, delivery, slot, items).with_merge_key(merge_key)
        if source_key is not None:
            draft = draft.with_source_key(source_key)
        if delay is not None:
            draft = draft.with_available_at_ms(min(MAX_MS, max(0, self.clock() + delay)))
        real = _call(lambda store, _side: store.enqueue_queued_work(draft), self.real, REAL)
        ref = _call(lambda store, _side: store.enqueue_queued_work(draft), self.ref, REF)
        self.register_batch(real, ref)
        self.compare(real, ref, self.norm_batches)

    @rule(
        session=queue_sessions,
        owner=st.sampled_from(["w1", "w2"]),
        boundary=st.sampled_from(QueuedWorkClaimBoundary),
        ttl=st.sampled_from(TTLS),
        max_batches=st.sampled_from([0, 1, 2, 3, 64]),
    )
    def claim(self, session: str, owner: str, boundary: QueuedWorkClaimBoundary, ttl: int, max_batches: int) -> None:
        _step()
        real = _call(
            lambda store, _side: store.claim_ready_queued_work(session, owner, boundary, ttl, max_batches),
            self.real,
            REAL,
        )
        ref = _call(
            lambda store, _side: store.claim_ready_queued_work(session, owner, boundary, ttl, max_batches),
            self.ref,
            REF,
        )
        self.register_claim(real, ref)
        self.compare(real, ref, self.norm_claim)

    @rule(
        session=queue_sessions,
        boundary=st.sampled_from(QueuedWorkClaimBoundary),
        ttl=st.sampled_from(TTLS),
        mode=st.sampled_from(["next", "next", "random"]),
        count=st.integers(1, 3),
        picks=st.lists(st.integers(0, 30), max_size=3),
    )
    def claim_by_ids(
        self,
        session: str,
        boundary: QueuedWorkClaimBoundary,
        ttl: int,
        mode: str,
        count: int,
        picks: list[int],
    ) -> None:
        _step()
        if mode == "next":  # guess the next group from the reference's ready, free batches
            now = self.clock()
            ready = [b for b in self.ref.list_pending_queued_work(session) if b.available_at_ms <= now]
            logical = [self.batch_ids[REF][b.batch_id] for b in ready[:count]]
        else:
            logical = [pick % (len(self.batches) + 1) for pick in picks]

        def op(store: Any, side: int) -> Any:
            ids = [self.side_batch_id(index, side) for index in logical]
            return store.claim_ready_queued_work_by_batch_ids(session, "w3", boundary, ttl, ids)

        real = _call(op, self.real, REAL)
        ref = _call(op, self.ref, REF)
        self.register_claim(real, ref)
        self.compare(real, ref, self.norm_claim)

    @rule(
        index=st.integers(0, 20),
        forgery=st.sampled_from([*CLAIM_FORGERIES, "old_fence", "ghost_batch"]),
        ttl=st.sampled_from(TTLS),
    )
    def renew(self, index: int, forgery: str, ttl: int) -> None:
        _step()
        if not self.claims:
            return
        logical = self.recent_claim(index, open_only=True)
        real, ref = self.both(
            lambda store, side: store.renew_queued_work_claim(self.forged_claim(logical, forgery, side), ttl),
            self.norm_claim,
        )
        if forgery == "genuine" and real[0] and ref[0]:
            self.claims[logical] = (real[1], ref[1])

    @rule(
        index=st.integers(0, 20),
        forgery=st.sampled_from(["genuine", "genuine", "bad_token", "drop_batch", "bad_fence"]),
    )
    def abandon(self, index: int, forgery: str) -> None:
        _step()
        if not self.claims:
            return
        logical = self.recent_claim(index, open_only=True)
        self.both(lambda store, side: store.abandon_queued_work_claim(self.forged_claim(logical, forgery, side)))

    @rule(session=st.sampled_from(SESSIONS), pick=st.integers(0, 30))
    def cancel(self, session: str, pick: int) -> None:
        _step()
        logical = pick % (len(self.batches) + 1)
        self.both(
            lambda store, side: store.cancel_queued_work_batch(session, self.side_batch_id(logical, side)),
            self.norm_batches,
        )

    @rule(session=st.sampled_from(SESSIONS), pending=st.booleans())
    def list_queue(self, session: str, pending: bool) -> None:
        _step()
        if pending:
            self.both(lambda store, _side: store.list_pending_queued_work(session), self.norm_batches)
        else:
            self.both(lambda store, _side: store.list_queued_work(session), self.norm_batches)

    # -- attachments -----------------------------------------------------

    @rule(
        attachment=st.sampled_from(ATTACHMENTS),
        session=st.sampled_from(SESSIONS),
        uri=st.sampled_from(["file:///a", "file:///b"]),
        offset=st.sampled_from([-1_000, 0, 1_000]),
    )
    def record_intent(self, attachment: str, session: str, uri: str, offset: int) -> None:
        _step()
        intent = AttachmentIntent(
            attachment_id=attachment, session_id=session, canonical_uri=uri, intent_at_epoch_ms=self.clock() + offset
        )
        self.both(lambda store, _side: store.record_intent(intent))

    @rule(session=st.sampled_from(SESSIONS), attachments=st.lists(st.sampled_from([*ATTACHMENTS, "ghost"]), max_size=3))
    def commit_refs(self, session: str, attachments: list[str]) -> None:
        _step()
        self.both(lambda store, _side: store.commit_refs(session, attachments))

    @rule(offset=st.sampled_from([-2_000, 0, 2_000, None]))
    def list_uncommitted(self, offset: int | None) -> None:
        _step()
        older_than = MAX_MS if offset is None else self.clock() + offset
        self.both(lambda store, _side: store.list_uncommitted(older_than))

    @rule(attachment=st.sampled_from([*ATTACHMENTS, "ghost"]))
    def forget(self, attachment: str) -> None:
        _step()
        self.both(lambda store, _side: store.forget(attachment))

    # -- metadata --------------------------------------------------------

    @rule(
        session=st.sampled_from(SESSIONS),
        name=st.sampled_from(["", "Chat", "Renamed"]),
        cwd=st.sampled_from([None, "/tmp/work"]),
        relation=st.sampled_from(
            [
                SessionRelation.root(),
                SessionRelation.child("parent"),
                SessionRelation.child("p", caused_by={"turn": "t0"}),
            ]
        ),
    )
    def save_meta(self, session: str, name: str, cwd: str | None, relation: SessionRelation) -> None:
        _step()
        meta = SessionMeta(
            session_id=session,
            session_name=name,
            created_at="2024-01-01T00:00:00Z",
            model="m1",
            cwd=cwd,
            relation=relation,
        )
        self.both(lambda store, _side: store.save_session_meta(meta))

    @rule()
    def load_meta_and_picker(self) -> None:
        _step()
        self.both(lambda store, _side: store.load_session_meta())
        self.both(lambda store, _side: store.load_picker_info())

    # -- module artifacts ------------------------------------------------

    @rule(
        module=st.sampled_from(MODULES),
        content=st.sampled_from(CONTENTS),
        action=st.sampled_from(["put", "put", "get", "forget"]),
    )
    def module_artifact(self, module: str, content: bytes, action: str) -> None:
        _step()
        if action == "put":
            real, _ = self.both(lambda store, _side: store.put_module_artifact(module, content))
            if real[0]:
                self.learn_refs(real[1])
        elif action == "get":
            self.both(lambda store, _side: store.get_module_artifact(module))
        else:
            self.both(lambda store, _side: store.forget_module_artifact(module))

    # -- forks -----------------------------------------------------------

    @rule(session_id=st.sampled_from([None, "fork"]), occupied=st.booleans())
    def copy_session(self, session_id: str | None, occupied: bool) -> None:
        _step()
        targets = (Store.memory(self.options), ReferenceStore(self.options))
        try:
            if occupied:
                for target in targets:
                    target.commit_runtime_state(RuntimeCommit(session_id="root", expected_head_revision=0))
            self.both(lambda store, side: store.copy_session_into(targets[side], session_id=session_id))
            for scope in (SessionReadScope.full_graph(), SessionReadScope.active_path()):
                self.both_on(targets, lambda target, _side, scope=scope: target.load_session(scope))
            for ref in self.refs:
                self.both_on(targets, lambda target, _side, ref=ref: target.get_blob(ref))
            for module in MODULES:
                self.both_on(targets, lambda target, _side, module=module: target.get_module_artifact(module))
            self.both_on(targets, lambda target, _side: target.graph_node_count())
            self.both_on(targets, lambda target, _side: target.gc_unreachable())
        finally:
            for target in targets:
                target.close()

    # -- invalid input ---------------------------------------------------

    @rule(index=st.integers(0, len(INVALID_CALLS) - 1))
    def invalid_input(self, index: int) -> None:
        _step()
        real, _ = self.both(lambda store, _side: INVALID_CALLS[index](store))
        assert not real[0] and isinstance(real[1], InvalidInput), (
            f"call {index} did not raise InvalidInput: {real[1]!r}"
        )

    # -- weights ---------------------------------------------------------
    # Hypothesis picks among rules uniformly; aliases make the central operations more frequent,
    # so that enqueue -> claim -> commit-with-completion flows happen within a few dozen steps.
    commit_again = commit
    commit_once_more = commit
    commit_completing_claims_again = commit_completing_claims
    enqueue_again = enqueue
    enqueue_once_more = enqueue
    claim_again = claim
    claim_once_more = claim
    claim_by_ids_again = claim_by_ids
    renew_again = renew
    advance_clock_again = advance_clock

    # -- invariant -------------------------------------------------------

    @invariant()
    def stores_agree(self) -> None:
        self.both(lambda store, _side: store.load_session())
        for session in SESSIONS:
            self.both(lambda store, _side, s=session: store.list_queued_work(s), self.norm_batches)


class FileStoreMachine(StoreMachine):
    """The same machine against a file store (GC grace 5 s, automatic GC every 3 commits)."""

    BACKEND = "file"


class PostgresStoreMachine(StoreMachine):
    """The same machine against PostgreSQL: each example works in a fresh session partition of one database."""

    BACKEND = "postgres"
    DSN = ""


MACHINES = {"memory": StoreMachine, "file": FileStoreMachine, "postgres": PostgresStoreMachine}


@pytest.fixture
def stateful_dsn(request: pytest.FixtureRequest) -> Iterator[None]:
    """A database for the PostgreSQL machine (only started when that machine runs)."""
    callspec = getattr(request.node, "callspec", None)  # the long soak is not parametrised
    if (callspec is None or callspec.params.get("backend") != "postgres") and "long" not in request.node.name:
        yield
        return
    server = request.getfixturevalue("pg_server")
    name = f"lash_stateful_{uuid.uuid4().hex[:8]}"
    PostgresStoreMachine.DSN = server.create_database(name)
    try:
        yield
    finally:
        close_shared_pools()
        server.drop_database(name)
        PostgresStoreMachine.DSN = ""


SHORT = settings(
    max_examples=50,
    stateful_step_count=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _run(backend: str, profile: settings) -> int:
    """Run the machine against one backend; returns how many steps (rules) ran, shrinking included."""
    before = STEPS
    run_state_machine_as_test(MACHINES[backend], settings=profile)
    return STEPS - before


@pytest.mark.parametrize("backend", sorted(MACHINES))
@pytest.mark.usefixtures("stateful_dsn")
def test_real_store_agrees_with_reference(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    steps = _run(backend, SHORT)
    with capsys.disabled():
        print(f" [{steps} stateful steps on {backend}]", end="")


@pytest.mark.slow
@pytest.mark.timeout(0)
@pytest.mark.usefixtures("stateful_dsn")
def test_real_store_agrees_with_reference_long(capsys: pytest.CaptureFixture[str]) -> None:
    """The long profile: ``LASH_STATEFUL_EXAMPLES`` x ``LASH_STATEFUL_STEPS`` per backend (default 700 x 80)."""
    examples = int(os.environ.get("LASH_STATEFUL_EXAMPLES", "700"))
    steps = int(os.environ.get("LASH_STATEFUL_STEPS", "80"))
    profile = settings(SHORT, max_examples=examples, stateful_step_count=steps)
    counts: dict[str, int] = {}
    try:
        for backend in sorted(MACHINES):
            before = STEPS
            try:
                run_state_machine_as_test(MACHINES[backend], settings=profile)
            finally:
                counts[backend] = STEPS - before
    finally:  # report the volume even when a divergence stops the run
        with capsys.disabled():
            print(f"\nstateful long run: {sum(counts.values())} steps {counts} ({examples} examples x {steps} steps)")
