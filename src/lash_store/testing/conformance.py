"""The backend-agnostic conformance suite of lash-store.

Every backend (SQLite file and memory, PostgreSQL, the pure-Python reference
store, third-party stores) must pass these tests.  They exercise only the
public store API and the contract in ``SPEC.md`` / ``README.md``: commit
ordering and typed errors, compare-and-set, exactly-once turn commits, graph
deltas and read scopes, tombstones, checkpoints, garbage collection,
attachments, module artifacts, metadata and picker info, the usage ledger,
every work-queue rule, input validation and (for durable backends) that data
survives a reopen.

How a backend runs the suite -- in one of its test modules::

    import pytest

    pytest.register_assert_rewrite("lash_store.testing.conformance")  # detailed assert messages

    from lash_store.testing.conformance import *  # noqa: E402, F403  (collects the suite)
    from lash_store.testing.conformance import BackendHarness, Clock, SessionStore  # noqa: E402


    class MyHarness(BackendHarness):
        name = "my-backend"
        durable = True

        def open(self, clock: Clock, poison: PoisonPolicy | None = None) -> SessionStore:
            ...  # a fresh, empty store using ``clock``, GC grace 0 and ``poison`` as StoreOptions.poison

        def reopen(self, store: SessionStore) -> SessionStore:
            ...  # a new handle on the same durable data

        def corrupt_head(self, store: SessionStore) -> None:
            ...  # make the stored session head undecodable


    @pytest.fixture
    def harness() -> BackendHarness:
        return MyHarness()

The ``harness`` fixture may also live in ``conftest.py`` or be parametrized
(``@pytest.fixture(params=[...])``) to run the suite against several
configurations.  ``register_assert_rewrite`` only improves failure messages;
it must run before anything imports this module, so when ``conftest.py``
imports from it, call it at the top of ``conftest.py`` instead.  Nothing is
skipped: for a harness declaring ``durable = False`` the reopen tests run
through the one handle it has.  A store must also offer ``close()``; closing
twice must be harmless.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar

import msgspec
import pytest

from lash_store.api import SessionStoreAPI
from lash_store.errors import (
    CorruptData,
    HeadRevisionConflict,
    InvalidInput,
    QueuedWorkClaimExpired,
    RuntimeTurnCommitConflict,
    SessionBindingMismatch,
    StoreClosed,
)
from lash_store.model import (
    AttachmentIntent,
    AttachmentManifestEntry,
    BlobArtifactDescriptor,
    DeliveryPolicy,
    DurabilityTier,
    GraphDelta,
    HydratedCheckpoint,
    MergeKey,
    NewBlob,
    PersistedSessionRead,
    QueuedWorkBatch,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkCompletion,
    QueuedWorkPayload,
    RuntimeCommit,
    RuntimeCommitResult,
    RuntimeSessionState,
    SessionCheckpoint,
    SessionGraph,
    SessionMeta,
    SessionNode,
    SessionPickerInfo,
    SessionReadScope,
    SessionRelation,
    SlotPolicy,
    StagedWrite,
    TextItem,
    TokenLedgerEntry,
    TokenUsage,
    TurnCommitStamp,
    TurnInput,
    VacuumReport,
)
from lash_store.options import PoisonPolicy
from lash_store.testing.clock import ManualClock

Clock = Callable[[], int]
"""A zero-argument callable returning epoch milliseconds."""

MAX_MS = 2**63 - 1
START_MS = 1_700_000_000_000
TTL = 60_000

ESB = DeliveryPolicy.EARLIEST_SAFE_BOUNDARY
ACTC = DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT
JOIN = SlotPolicy.JOIN
EXCL = SlotPolicy.EXCLUSIVE
IDLE = QueuedWorkClaimBoundary.IDLE
CHECKPOINT = QueuedWorkClaimBoundary.ACTIVE_TURN_CHECKPOINT


# ===========================================================================
# What a backend provides


SessionStore = SessionStoreAPI
"""The store surface the suite exercises: the package's public protocol (SPEC §5 and §6)."""


class BackendHarness:
    """How the suite obtains stores of one backend.  Subclass it and provide a ``harness`` fixture.

    ``open`` and ``damage`` are required (``corrupt_head`` and ``delete_blob``
    are damage too and default to it).  A durable backend sets
    ``durable = True`` and implements ``reopen``; for a non-durable one the
    reopen tests run their checks through the single handle.
    """

    name: ClassVar[str] = "backend"
    durable: ClassVar[bool] = False

    def open(self, clock: Clock, poison: PoisonPolicy | None = None) -> SessionStore:
        """A fresh, empty store bound to no session, reading time from ``clock`` and with GC grace 0.

        ``poison`` is the store's ``StoreOptions.poison`` (the poison-work tests pass one; the rest none).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement open(clock, poison=None)")

    def reopen(self, store: SessionStore) -> SessionStore | None:
        """A NEW handle (connection) on the same durable data as ``store`` (same clock), or None if not durable."""
        return None

    def damage(self, store: SessionStore, target: str, key: str | None, value: object) -> None:
        """Overwrite stored data behind the store's back, as bit rot or a foreign writer would.

        ``target`` is one of :data:`DAMAGE_TARGETS`; ``key`` names the row where
        there are several (a node id, blob hash, turn id or batch id); ``value``
        replaces the stored column (``None`` for the ``*.delete`` targets).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement damage(store, target, key, value)")

    def corrupt_head(self, store: SessionStore) -> None:
        """Make the stored session head of ``store`` undecodable (GC must then refuse to delete anything)."""
        self.damage(store, "head.body", None, b"\xc1")

    def delete_blob(self, store: SessionStore, ref: str) -> None:
        """Remove one stored blob behind the store's back (damage: a child a manifest still names)."""
        self.damage(store, "blob.delete", ref, None)

    def close(self, store: SessionStore) -> None:
        """Release a store handle at the end of a test (closing twice must be harmless)."""
        store.close()


DAMAGE_TARGETS = (
    "head.body",  # the head's msgpack body (config, agent frames)
    "head.usage_ledger",  # the usage totals stored with the head
    "node.body",  # key: node id
    "blob.content",  # key: blob hash (the stored, possibly compressed, content)
    "blob.delete",  # key: blob hash
    "meta.relation",  # the session metadata's relation
    "turn.record",  # key: turn id (the stored result of a turn stamp)
    "batch.payloads",  # key: batch id
)


class Backend:
    """Per-test access to a harness: opens and reopens handles and closes them all at teardown."""

    def __init__(self, harness: BackendHarness, clock: ManualClock) -> None:
        self.harness = harness
        self.clock = clock
        self._handles: list[SessionStore] = []

    def open(self, poison: PoisonPolicy | None = None) -> SessionStore:
        """A fresh empty store on the test's clock (with ``poison`` as its poison policy, if given)."""
        store = self.harness.open(self.clock) if poison is None else self.harness.open(self.clock, poison)
        self._handles.append(store)
        return store

    def reopen(self, store: SessionStore) -> SessionStore:
        """A second handle on ``store``'s data.

        A backend declaring ``durable = False`` has no second handle: its data
        lives in the one it has, so the reopen tests run their checks through it.
        """
        if not self.harness.durable:
            return store
        handle = self.harness.reopen(store)
        assert handle is not None, f"{self.harness.name} declares durable = True but reopen() returned None"
        assert handle is not store, "reopen() must return a new handle"
        self._handles.append(handle)
        return handle

    def close_all(self) -> None:
        errors: list[BaseException] = []
        for handle in reversed(self._handles):
            try:
                self.harness.close(handle)
            except Exception as exc:  # close every handle, then report
                errors.append(exc)
        self._handles.clear()
        if errors:
            raise errors[0]


@pytest.fixture
def clock() -> ManualClock:
    """The test's clock; every store of the test reads time from it."""
    return ManualClock()


@pytest.fixture
def backend(harness: BackendHarness, clock: ManualClock) -> Iterator[Backend]:
    """Opens stores of the backend under test; closes them after the test."""
    access = Backend(harness, clock)
    try:
        yield access
    finally:
        access.close_all()


@pytest.fixture
def store(backend: Backend) -> SessionStore:
    """A fresh, empty store of the backend under test."""
    return backend.open()


# ===========================================================================
# Builders


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def message(node_id: str, role: str, text: str, parent: str | None = None) -> SessionNode:
    """A message node with one text part."""
    return SessionNode(
        node_id=node_id, parent_node_id=parent, payload={"role": role, "parts": [{"type": "text", "text": text}]}
    )


def commit(
    session_id: str = "root",
    expected: int | None = None,
    graph: GraphDelta | None = None,
    **fields: Any,
) -> RuntimeCommit:
    """A commit with a small config, CAS against ``expected``, and an unchanged graph unless given."""
    return RuntimeCommit(
        session_id=session_id,
        expected_head_revision=expected,
        config=fields.pop("config", {"provider_id": "test", "model": {"id": "m-1"}}),
        graph=graph if graph is not None else GraphDelta.unchanged(None),
        **fields,
    )


def stamp(turn_id: str, turn_hash: str = "h-1", session_id: str = "root") -> TurnCommitStamp:
    return TurnCommitStamp(session_id=session_id, turn_id=turn_id, turn_commit_hash=turn_hash)


def draft(
    session_id: str = "root",
    text: str = "hi",
    delivery: DeliveryPolicy = ESB,
    slot: SlotPolicy = EXCL,
    *,
    merge: MergeKey | None = None,
    key: str | None = None,
    available_at_ms: int | None = None,
) -> QueuedWorkBatchDraft:
    """A one-item turn-input draft."""
    built = QueuedWorkBatchDraft.new(session_id, delivery, slot, [QueuedWorkPayload.turn_input(TurnInput.text(text))])
    if merge is not None:
        built = built.with_merge_key(merge)
    if key is not None:
        built = built.with_source_key(key)
    if available_at_ms is not None:
        built = built.with_available_at_ms(available_at_ms)
    return built


def claim(
    store: SessionStore,
    session_id: str = "root",
    owner: str = "owner",
    boundary: QueuedWorkClaimBoundary = IDLE,
    ttl: int = TTL,
    max_batches: int = 10,
) -> QueuedWorkClaim | None:
    return store.claim_ready_queued_work(session_id, owner, boundary, ttl, max_batches)


def must_claim(store: SessionStore, session_id: str = "root", **kwargs: Any) -> QueuedWorkClaim:
    got = claim(store, session_id, **kwargs)
    assert got is not None, "expected a claim, got None"
    return got


def ids(batches: Iterable[QueuedWorkBatch]) -> list[str]:
    return [batch.batch_id for batch in batches]


def text_of(batch: QueuedWorkBatch) -> str:
    payload = batch.items[0].payload
    assert payload.input is not None
    item = payload.input.items[0]
    assert isinstance(item, TextItem)
    return item.text


def node_ids(read: PersistedSessionRead | None) -> list[str]:
    assert read is not None, "expected a session, got None"
    return [node.node_id for node in read.graph.nodes]


def loaded(store: SessionStore, scope: SessionReadScope | None = None) -> PersistedSessionRead:
    read = store.load_session(scope) if scope is not None else store.load_session()
    assert read is not None, "expected a session head, got None"
    return read


def revision(store: SessionStore) -> int:
    read = store.load_session()
    return 0 if read is None else read.head_revision


def snapshot(store: SessionStore, sessions: Sequence[str] = ("root",)) -> tuple[Any, ...]:
    """Everything a failed call must leave unchanged."""
    return (
        store.load_session(),
        [store.list_queued_work(session_id) for session_id in sessions],
        [store.list_pending_queued_work(session_id) for session_id in sessions],
        [store.list_dead_letters(session_id) for session_id in sessions],
        store.list_uncommitted(MAX_MS),
    )


def chain(*node_ids_: str) -> list[SessionNode]:
    """Messages forming one path: each node's parent is the previous one."""
    nodes, parent = [], None
    for node_id in node_ids_:
        nodes.append(message(node_id, "user", node_id, parent))
        parent = node_id
    return nodes


def usage(source: str, model: str, i: int = 0, o: int = 0, c: int = 0, r: int = 0) -> TokenLedgerEntry:
    return TokenLedgerEntry(
        source=source,
        model=model,
        usage=TokenUsage(input_tokens=i, output_tokens=o, cached_input_tokens=c, reasoning_tokens=r),
    )


def intent(attachment_id: str, at_ms: int, session_id: str = "root") -> AttachmentIntent:
    return AttachmentIntent(
        attachment_id=attachment_id,
        session_id=session_id,
        canonical_uri=f"sha256:{attachment_id}",
        intent_at_epoch_ms=at_ms,
    )


def uncommitted_ids(store: SessionStore, older_than: int = MAX_MS) -> list[str]:
    return [entry.attachment_id for entry in store.list_uncommitted(older_than)]


# ===========================================================================
# Empty store, durability tier


def test_empty_store_reads_nothing(store: SessionStore) -> None:
    assert store.load_session() is None
    assert store.load_session(SessionReadScope.active_path()) is None
    assert store.load_node("n") is None
    assert store.load_session_meta() is None
    assert store.load_picker_info() is None
    assert store.get_blob(sha256(b"absent")) is None
    assert store.get_checkpoint(sha256(b"absent")) is None
    assert store.get_module_artifact("mod") is None
    assert store.list_uncommitted(MAX_MS) == []
    assert store.list_queued_work("root") == []
    assert store.list_pending_queued_work("root") == []
    assert claim(store) is None


def test_closed_store_raises_store_closed(backend: Backend) -> None:
    closing = backend.open()
    closing.commit_runtime_state(commit(expected=0))
    closing.close()
    with pytest.raises(StoreClosed):
        closing.load_session()
    with pytest.raises(StoreClosed):
        closing.commit_runtime_state(commit(expected=1))
    with pytest.raises(StoreClosed):
        closing.enqueue_queued_work(draft())


def test_durability_tier_matches_harness(store: SessionStore, harness: BackendHarness) -> None:
    expected = DurabilityTier.DURABLE if harness.durable else DurabilityTier.INLINE
    assert store.durability_tier is expected


# ===========================================================================
# Commits: revisions, round trip, check order, typed errors


def test_first_commit_round_trips_every_field(store: SessionStore) -> None:
    frames = [
        {"frame_id": "frame-1", "status": "done"},
        {"frame_id": "frame-2", "reason": {"custom": "plan_mode"}, "execution_state_snapshot": b"frame-vm"},
    ]
    nodes = [message("u1", "user", "hello"), message("a1", "assistant", "hi", parent="u1")]
    checkpoint = HydratedCheckpoint(
        turn_state={"turn_index": 3, "options": {"payload": [1, 2]}},
        tool_state={"generation": 9, "tools": ["a", "b"]},
        plugin_snapshot={"plugins": {}},
        plugin_snapshot_revision=12,
        execution_state=b"\xde\xad\xbe\xef",
    )
    result = store.commit_runtime_state(
        commit(
            "sess",
            0,
            GraphDelta.append(nodes, "a1"),
            config={"provider_id": "openai", "model": {"id": "gpt", "context": 200_000}, "raw": b"\x00\x01"},
            agent_frames=frames,
            current_agent_frame_id="frame-2",
            checkpoint=checkpoint,
        )
    )
    assert result.head_revision == 1
    read = loaded(store)
    assert read.session_id == "sess"
    assert read.head_revision == 1
    assert read.config == {"provider_id": "openai", "model": {"id": "gpt", "context": 200_000}, "raw": b"\x00\x01"}
    assert read.agent_frames == frames
    assert read.current_agent_frame_id == "frame-2"
    assert read.graph == SessionGraph(nodes=nodes, leaf_node_id="a1")
    assert read.checkpoint_ref == result.checkpoint_ref
    hydrated = read.checkpoint
    assert hydrated is not None
    assert hydrated.turn_state == checkpoint.turn_state
    assert hydrated.tool_state == checkpoint.tool_state
    assert hydrated.plugin_snapshot == checkpoint.plugin_snapshot
    assert hydrated.plugin_snapshot_revision == 12
    assert hydrated.execution_state == b"\xde\xad\xbe\xef"
    assert hydrated.execution_state_ref == sha256(b"\xde\xad\xbe\xef")
    assert result.manifest == SessionCheckpoint(
        turn_state=checkpoint.turn_state,
        tool_state_ref=hydrated.tool_state_ref,
        plugin_snapshot_ref=hydrated.plugin_snapshot_ref,
        plugin_snapshot_revision=12,
        execution_state_ref=hydrated.execution_state_ref,
    )
    assert None not in (hydrated.tool_state_ref, hydrated.plugin_snapshot_ref)
    assert read.token_ledger == []


def test_revisions_increase_by_one_and_cas_accepts_the_current_revision(store: SessionStore) -> None:
    for expected in range(4):
        assert store.commit_runtime_state(commit(expected=expected)).head_revision == expected + 1
    assert revision(store) == 4


def test_runtime_session_state_round_trip(store: SessionStore) -> None:
    state = RuntimeSessionState(
        session_id="rt",
        config={"provider_id": "p"},
        session_graph=SessionGraph(nodes=chain("n1", "n2"), leaf_node_id="n2"),
        turn_state={"turn_index": 1},
        tool_state_snapshot={"generation": 1},
        execution_state_snapshot=b"vm",
    )
    first = store.commit_runtime_state(RuntimeCommit.persisted_state(state))
    rebuilt = RuntimeSessionState.from_read(loaded(store))
    assert rebuilt.head_revision == 1
    assert rebuilt.session_graph == state.session_graph
    assert rebuilt.tool_state_snapshot == {"generation": 1}
    assert rebuilt.execution_state_snapshot == b"vm"
    second = store.commit_runtime_state(RuntimeCommit.persisted_state(rebuilt))
    assert second.head_revision == 2
    assert second.checkpoint_ref == first.checkpoint_ref  # identical content, identical address
    assert node_ids(store.load_session()) == ["n1", "n2"]


def test_session_binding_mismatch(store: SessionStore) -> None:
    store.commit_runtime_state(commit("alpha", 0))
    before = snapshot(store)
    with pytest.raises(SessionBindingMismatch) as caught:
        store.commit_runtime_state(commit("beta", 1))
    assert (caught.value.bound_session_id, caught.value.attempted_session_id) == ("alpha", "beta")
    with pytest.raises(SessionBindingMismatch):
        store.commit_runtime_state(commit("beta", None))
    assert snapshot(store) == before
    assert loaded(store).session_id == "alpha"


def test_head_revision_conflict_reports_expected_and_actual(store: SessionStore) -> None:
    with pytest.raises(HeadRevisionConflict) as on_empty:
        store.commit_runtime_state(commit(expected=5))
    assert (on_empty.value.expected, on_empty.value.actual) == (5, 0)
    assert store.load_session() is None
    store.commit_runtime_state(commit(expected=0))
    before = snapshot(store)
    with pytest.raises(HeadRevisionConflict) as stale:
        store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append(chain("x"), "x")))
    assert (stale.value.expected, stale.value.actual) == (0, 1)
    assert snapshot(store) == before


def test_expected_none_commits_unconditionally(store: SessionStore) -> None:
    assert store.commit_runtime_state(commit(expected=None)).head_revision == 1
    for expected in (1, 2, 3, 4):
        store.commit_runtime_state(commit(expected=expected))
    assert store.commit_runtime_state(commit(expected=None)).head_revision == 6


def test_turn_commit_replay_returns_stored_result_and_writes_nothing(store: SessionStore) -> None:
    stamped = commit(expected=0, graph=GraphDelta.append(chain("n1"), "n1"), usage_deltas=[usage("turn", "m", i=5)])
    stamped = stamped.with_turn_commit(stamp("turn-1"))
    first = store.commit_runtime_state(stamped)
    before = snapshot(store)
    assert store.commit_runtime_state(stamped) == first
    assert snapshot(store) == before
    assert loaded(store).token_ledger == [usage("turn", "m", i=5)]


def test_turn_commit_replay_returns_stale_result_after_head_moved(store: SessionStore) -> None:
    stamped = commit(expected=0, checkpoint=HydratedCheckpoint(turn_state={"turn_index": 1})).with_turn_commit(
        stamp("turn-1")
    )
    first = store.commit_runtime_state(stamped)
    store.commit_runtime_state(commit(expected=1, checkpoint=HydratedCheckpoint(turn_state={"turn_index": 2})))
    replay = store.commit_runtime_state(stamped)  # expected 0 is stale now: the replay wins before CAS
    assert replay == first
    assert replay.head_revision == 1
    assert revision(store) == 2


def test_turn_commit_with_another_hash_conflicts(store: SessionStore) -> None:
    store.commit_runtime_state(commit(expected=0).with_turn_commit(stamp("turn-1", "h-1")))
    before = snapshot(store)
    for expected in (1, 0, None):  # the stamp is checked before CAS
        with pytest.raises(RuntimeTurnCommitConflict) as caught:
            store.commit_runtime_state(commit(expected=expected).with_turn_commit(stamp("turn-1", "h-2")))
        assert (caught.value.session_id, caught.value.turn_id) == ("root", "turn-1")
    assert snapshot(store) == before


def test_turn_commit_stamp_for_another_session_conflicts(store: SessionStore) -> None:
    with pytest.raises(RuntimeTurnCommitConflict) as caught:
        store.commit_runtime_state(commit("root", 0).with_turn_commit(stamp("turn-1", session_id="other")))
    assert (caught.value.session_id, caught.value.turn_id) == ("other", "turn-1")
    assert store.load_session() is None
    store.commit_runtime_state(commit("root", 0))
    with pytest.raises(RuntimeTurnCommitConflict):  # also before CAS
        store.commit_runtime_state(commit("root", 7).with_turn_commit(stamp("turn-1", session_id="other")))
    assert revision(store) == 1


def test_failed_commit_records_no_turn_stamp(store: SessionStore) -> None:
    with pytest.raises(HeadRevisionConflict):
        store.commit_runtime_state(commit(expected=3).with_turn_commit(stamp("turn-1", "h-1")))
    result = store.commit_runtime_state(commit(expected=0).with_turn_commit(stamp("turn-1", "h-2")))
    assert result.head_revision == 1


def test_turn_stamps_are_per_turn_id(store: SessionStore) -> None:
    first = store.commit_runtime_state(commit(expected=0).with_turn_commit(stamp("turn-1", "same")))
    second = store.commit_runtime_state(commit(expected=1).with_turn_commit(stamp("turn-2", "same")))
    assert (first.head_revision, second.head_revision) == (1, 2)
    assert store.commit_runtime_state(commit(expected=0).with_turn_commit(stamp("turn-1", "same"))) == first


def test_session_binding_is_checked_before_the_turn_stamp_and_cas(store: SessionStore) -> None:
    store.commit_runtime_state(commit("alpha", 0).with_turn_commit(stamp("turn-1", session_id="alpha")))
    with pytest.raises(SessionBindingMismatch):
        store.commit_runtime_state(commit("beta", 0).with_turn_commit(stamp("turn-1", session_id="beta")))
    with pytest.raises(SessionBindingMismatch):  # even the exact replay of alpha's stamp under another session
        store.commit_runtime_state(commit("beta", 0).with_turn_commit(stamp("turn-1", session_id="alpha")))
    with pytest.raises(SessionBindingMismatch):
        store.commit_runtime_state(commit("beta", 9))


def test_cas_is_checked_before_queue_completions(store: SessionStore) -> None:
    store.enqueue_queued_work(draft())
    held = must_claim(store)
    store.commit_runtime_state(commit(expected=0))
    stale = msgspec.structs.replace(held.completion(), lease_token=held.lease_token + ":stale")
    with pytest.raises(HeadRevisionConflict):
        store.commit_runtime_state(commit(expected=0).completing_queue_claim(stale))


def test_failed_commit_leaves_no_partial_write_and_store_stays_usable(store: SessionStore) -> None:
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append(chain("a"), "a")))
    store.record_intent(intent("att", 100))
    before = snapshot(store)
    broken = commit(
        expected=1,
        graph=GraphDelta.append([message("b", "user", "b"), message("b", "user", "again")], "b"),
        usage_deltas=[usage("turn", "m", i=1)],
        committed_attachment_ids=["att"],
    )
    with pytest.raises(InvalidInput):  # one delta names the same node twice
        store.commit_runtime_state(broken)
    assert snapshot(store) == before
    assert store.load_node("b") is None
    result = store.commit_runtime_state(commit(expected=1, graph=GraphDelta.append(chain("b"), "b")))
    assert result.head_revision == 2
    assert node_ids(store.load_session()) == ["a", "b"]


# ===========================================================================
# Graph deltas


def test_append_adds_nodes_and_moves_the_leaf(store: SessionStore) -> None:
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append(chain("a", "b"), "b")))
    store.commit_runtime_state(commit(expected=1, graph=GraphDelta.append([message("c", "assistant", "c", "b")], "c")))
    read = loaded(store)
    assert node_ids(read) == ["a", "b", "c"]
    assert read.graph.leaf_node_id == "c"
    assert store.load_node("c") == message("c", "assistant", "c", "b")


def test_unchanged_delta_keeps_nodes_and_sets_the_leaf(store: SessionStore) -> None:
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append(chain("a", "b"), "b")))
    store.commit_runtime_state(commit(expected=1, graph=GraphDelta.unchanged("a")))
    assert loaded(store).graph == SessionGraph(nodes=chain("a", "b"), leaf_node_id="a")
    store.commit_runtime_state(commit(expected=2, graph=GraphDelta.unchanged(None)))
    assert loaded(store).graph == SessionGraph(nodes=chain("a", "b"), leaf_node_id=None)
    store.commit_runtime_state(commit(expected=3, graph=GraphDelta.unchanged("ghost")))  # leaves are not validated
    read = loaded(store)
    assert read.graph.leaf_node_id == "ghost"
    assert node_ids(read) == ["a", "b"]


def test_replace_full_replaces_every_node_including_tombstoned(store: SessionStore) -> None:
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append(chain("a", "b", "c"), "c")))
    assert store.tombstone_nodes(["b"]) == 1
    replacement = SessionGraph(nodes=chain("x", "y"), leaf_node_id="y")
    store.commit_runtime_state(commit(expected=1, graph=GraphDelta.replace_full(replacement)))
    assert loaded(store).graph == replacement
    assert store.load_node("a") is None
    assert store.vacuum() == VacuumReport(removed_node_count=0)  # the tombstoned row went with the replace


def test_reappend_replaces_payload_and_keeps_position(store: SessionStore) -> None:
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append(chain("a", "b", "c"), "c")))
    updated = message("a", "user", "edited")
    store.commit_runtime_state(commit(expected=1, graph=GraphDelta.append([updated], "c")))
    read = loaded(store)
    assert node_ids(read) == ["a", "b", "c"]
    assert read.graph.nodes[0] == updated
    assert store.load_node("a") == updated


def test_reappend_clears_tombstone_and_keeps_position(store: SessionStore) -> None:
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append(chain("a", "b", "c"), "c")))
    store.tombstone_nodes(["b"])
    assert node_ids(store.load_session()) == ["a", "c"]
    revived = message("b", "user", "revived", "a")
    store.commit_runtime_state(commit(expected=1, graph=GraphDelta.append([revived], "c")))
    assert node_ids(store.load_session()) == ["a", "b", "c"]
    assert store.load_node("b") == revived
    assert store.vacuum().removed_node_count == 0


def test_node_fields_round_trip(store: SessionStore) -> None:
    nodes = [
        SessionNode(
            node_id="p1",
            kind="plugin",
            payload={"plugin_type": "memo", "body": {"bytes": b"\x00\xff", "list": [1, 2.5, None, True]}},
            timestamp_ms=1_700_000_000_123,
            agent_frame_id="frame-1",
            caused_by={"process": "proc-1", "sequence": 7},
        ),
        SessionNode(node_id="p2", parent_node_id="p1", kind="event", payload=["opaque", {"k": "v"}]),
    ]
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append(nodes, "p2")))
    assert loaded(store).graph.nodes == nodes
    assert store.load_node("p1") == nodes[0]


# ===========================================================================
# Read scopes


def _branching(store: SessionStore) -> None:
    """``root-node <- left-node <- left-leaf`` and ``root-node <- right-leaf``, leaf ``left-leaf`` (E-5)."""
    graph = SessionGraph(
        nodes=[
            message("root-node", "user", "root"),
            message("left-node", "assistant", "left", "root-node"),
            message("left-leaf", "user", "left leaf", "left-node"),
            message("right-leaf", "user", "right leaf", "root-node"),
        ],
        leaf_node_id="left-leaf",
    )
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.replace_full(graph)))


def test_full_graph_scope_is_the_default_and_keeps_insertion_order(store: SessionStore) -> None:
    _branching(store)
    read = loaded(store, SessionReadScope.full_graph())
    assert node_ids(read) == ["root-node", "left-node", "left-leaf", "right-leaf"]
    assert read.graph.leaf_node_id == "left-leaf"
    assert store.load_session() == read


def test_active_path_defaults_to_the_head_leaf(store: SessionStore) -> None:
    _branching(store)
    read = loaded(store, SessionReadScope.active_path())
    assert node_ids(read) == ["root-node", "left-node", "left-leaf"]
    assert read.graph.leaf_node_id == "left-leaf"
    assert read.head_revision == 1


def test_active_path_with_an_explicit_leaf(store: SessionStore) -> None:
    _branching(store)
    read = loaded(store, SessionReadScope.active_path("right-leaf"))
    assert node_ids(read) == ["root-node", "right-leaf"]
    assert read.graph.leaf_node_id == "right-leaf"
    middle = loaded(store, SessionReadScope.active_path("left-node"))
    assert node_ids(middle) == ["root-node", "left-node"]


def test_active_path_to_an_unknown_leaf_is_empty(store: SessionStore) -> None:
    _branching(store)
    read = loaded(store, SessionReadScope.active_path("ghost"))
    assert read.graph.nodes == []
    assert read.graph.leaf_node_id == "ghost"


def test_active_path_on_a_session_without_leaf_is_empty(store: SessionStore) -> None:
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append(chain("a"), None)))
    read = loaded(store, SessionReadScope.active_path())
    assert read.graph == SessionGraph(nodes=[], leaf_node_id=None)


def test_tombstoned_leaf_reads_as_none(store: SessionStore) -> None:
    _branching(store)
    store.tombstone_nodes(["left-leaf"])
    full = loaded(store)
    assert full.graph.leaf_node_id is None
    assert node_ids(full) == ["root-node", "left-node", "right-leaf"]
    active = loaded(store, SessionReadScope.active_path())
    assert active.graph == SessionGraph(nodes=[], leaf_node_id=None)
    explicit = loaded(store, SessionReadScope.active_path("left-leaf"))
    assert explicit.graph == SessionGraph(nodes=[], leaf_node_id=None)


def test_active_path_stops_at_a_tombstoned_ancestor(store: SessionStore) -> None:
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append(chain("a", "b", "c"), "c")))
    store.tombstone_nodes(["b"])
    assert node_ids(store.load_session(SessionReadScope.active_path())) == ["c"]


def test_active_path_terminates_on_a_parent_cycle(store: SessionStore) -> None:
    nodes = [message("a", "user", "a", parent="c"), message("b", "user", "b", "a"), message("c", "user", "c", "b")]
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append(nodes, "c")))
    read = loaded(store, SessionReadScope.active_path())
    assert node_ids(read) == ["a", "b", "c"]
    assert read.graph.leaf_node_id == "c"
    self_loop = message("s", "user", "s", parent="s")
    store.commit_runtime_state(commit(expected=1, graph=GraphDelta.append([self_loop], "s")))
    assert node_ids(store.load_session(SessionReadScope.active_path())) == ["s"]


# ===========================================================================
# Tombstones and vacuum


def test_tombstone_hides_nodes_from_every_read(store: SessionStore) -> None:
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append(chain("node-live", "node-delete"), None)))
    assert store.load_node("node-delete") is not None
    assert store.tombstone_nodes(["node-delete"]) == 1
    assert store.load_node("node-delete") is None
    assert node_ids(store.load_session()) == ["node-live"]
    assert revision(store) == 1  # tombstoning does not move the head


def test_tombstone_counts_only_newly_hidden_known_nodes(store: SessionStore) -> None:
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append(chain("a", "b", "c"), "c")))
    assert store.tombstone_nodes([]) == 0
    assert store.tombstone_nodes(["a", "ghost"]) == 1
    assert store.tombstone_nodes(["a", "b"]) == 1
    assert node_ids(store.load_session()) == ["c"]


def test_vacuum_removes_exactly_the_tombstoned_nodes(store: SessionStore) -> None:
    assert store.vacuum() == VacuumReport(removed_node_count=0)
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append(chain("a", "b", "c", "d"), "d")))
    store.tombstone_nodes(["b", "c"])
    assert store.vacuum() == VacuumReport(removed_node_count=2)
    assert store.vacuum() == VacuumReport(removed_node_count=0)
    assert node_ids(store.load_session()) == ["a", "d"]
    assert revision(store) == 1


def test_vacuum_never_changes_what_reads_return(store: SessionStore) -> None:
    _branching(store)
    store.tombstone_nodes(["left-leaf", "left-node"])
    full, active = store.load_session(), store.load_session(SessionReadScope.active_path())
    assert full is not None and full.graph.leaf_node_id is None  # a tombstoned leaf reads as no leaf
    assert store.vacuum() == VacuumReport(removed_node_count=2)
    after = loaded(store)
    assert after.graph.leaf_node_id is None, "vacuum turned a tombstoned leaf back into a (ghost) leaf"
    assert after == full
    assert store.load_session(SessionReadScope.active_path()) == active
    assert store.load_node("left-leaf") is None


# ===========================================================================
# Blobs and checkpoints


def test_blobs_are_content_addressed(store: SessionStore) -> None:
    ref = store.put_blob(b"payload")
    assert ref == sha256(b"payload")
    assert store.put_blob(b"payload") == ref
    assert store.get_blob(ref) == b"payload"
    big = bytes(range(256)) * 64
    for descriptor in (
        BlobArtifactDescriptor.plugin_session_snapshot(),
        BlobArtifactDescriptor.tool_state_snapshot(),
        BlobArtifactDescriptor.checkpoint_manifest(),
    ):
        assert store.put_artifact_blob(descriptor, big) == sha256(big)
    assert store.get_blob(sha256(big)) == big
    assert store.put_artifact_blob(BlobArtifactDescriptor.execution_state_snapshot(), b"payload") == ref
    assert store.get_blob(ref) == b"payload"
    assert store.put_blob(b"") == sha256(b"")
    assert store.get_blob(sha256(b"")) == b""


def test_put_checkpoint_round_trips_and_does_not_touch_the_head(store: SessionStore) -> None:
    hydrated = HydratedCheckpoint(
        turn_state={"turn_index": 1},
        tool_state={"generation": 7},
        plugin_snapshot={"plugins": {"p": {"meta": 1}}},
        plugin_snapshot_revision=11,
        execution_state=b"vm-state",
    )
    ref, manifest = store.put_checkpoint(hydrated)
    assert store.load_session() is None
    got = store.get_checkpoint(ref)
    assert got is not None
    assert got.turn_state == {"turn_index": 1}
    assert got.tool_state == {"generation": 7}
    assert got.plugin_snapshot == {"plugins": {"p": {"meta": 1}}}
    assert got.plugin_snapshot_revision == 11
    assert got.execution_state == b"vm-state"
    assert (got.tool_state_ref, got.plugin_snapshot_ref, got.execution_state_ref) == (
        manifest.tool_state_ref,
        manifest.plugin_snapshot_ref,
        manifest.execution_state_ref,
    )
    assert manifest.execution_state_ref == sha256(b"vm-state")
    assert store.get_blob(manifest.execution_state_ref) == b"vm-state"
    assert store.put_checkpoint(hydrated) == (ref, manifest)  # deterministic


def test_checkpoint_reports_child_refs_even_when_missing(store: SessionStore, harness: BackendHarness) -> None:
    ref, manifest = store.put_checkpoint(
        HydratedCheckpoint(
            turn_state={"turn_index": 2},
            tool_state={"t": 1},
            plugin_snapshot={"p": 1},
            plugin_snapshot_revision=3,
            execution_state=b"exec",
        )
    )
    children = (manifest.tool_state_ref, manifest.plugin_snapshot_ref, manifest.execution_state_ref)
    for child in children:
        assert child is not None
        harness.delete_blob(store, child)
    assert store.get_checkpoint(ref) == HydratedCheckpoint(
        turn_state={"turn_index": 2},
        tool_state=None,
        tool_state_ref=children[0],
        plugin_snapshot=None,
        plugin_snapshot_ref=children[1],
        plugin_snapshot_revision=3,
        execution_state=None,
        execution_state_ref=children[2],
    )


def _ref_only_checkpoints(ref: str) -> list[tuple[str, HydratedCheckpoint]]:
    return [
        ("tool_state_ref", HydratedCheckpoint(tool_state_ref=ref)),
        ("plugin_snapshot_ref", HydratedCheckpoint(plugin_snapshot_ref=ref)),
        ("execution_state_ref", HydratedCheckpoint(execution_state_ref=ref)),
    ]


def test_refs_without_a_value_must_name_a_stored_blob(store: SessionStore) -> None:
    store.commit_runtime_state(commit(expected=0))
    before = snapshot(store)
    ghost = sha256(b"never stored")
    for field, checkpoint in _ref_only_checkpoints(ghost):
        with pytest.raises(InvalidInput) as commit_error:
            store.commit_runtime_state(commit(expected=1, checkpoint=checkpoint))
        assert commit_error.value.what == f"commit.checkpoint.{field}"
        with pytest.raises(InvalidInput) as put_error:
            store.put_checkpoint(checkpoint)
        assert put_error.value.what == f"hydrated.{field}"
    assert snapshot(store) == before
    assert store.get_blob(ghost) is None
    assert store.load_session() is not None  # nothing bricked


def test_snapshot_refs_must_name_blobs_of_their_kind(store: SessionStore) -> None:
    store.commit_runtime_state(commit(expected=0))
    not_msgpack = store.put_blob(b"\xc1 not msgpack")
    before = snapshot(store)
    checkpoints = {
        "tool_state_ref": HydratedCheckpoint(tool_state_ref=not_msgpack),
        "plugin_snapshot_ref": HydratedCheckpoint(plugin_snapshot_ref=not_msgpack),
    }
    for field, checkpoint in checkpoints.items():
        with pytest.raises(InvalidInput) as error:
            store.commit_runtime_state(commit(expected=1, checkpoint=checkpoint))
        assert error.value.what == f"commit.checkpoint.{field}"
    assert snapshot(store) == before
    # Execution state is opaque bytes: any stored blob will do.
    result = store.commit_runtime_state(
        commit(expected=1, checkpoint=HydratedCheckpoint(execution_state_ref=not_msgpack))
    )
    assert loaded(store).checkpoint == HydratedCheckpoint(
        execution_state=b"\xc1 not msgpack", execution_state_ref=not_msgpack
    )
    assert result.manifest.execution_state_ref == not_msgpack


def test_commit_keeps_ref_only_snapshots(store: SessionStore) -> None:
    _, stored = store.put_checkpoint(HydratedCheckpoint(tool_state={"g": 5}))
    tool_ref = stored.tool_state_ref
    assert tool_ref is not None
    store.commit_runtime_state(commit(expected=0, checkpoint=HydratedCheckpoint(tool_state_ref=tool_ref)))
    hydrated = loaded(store).checkpoint
    assert hydrated is not None
    assert hydrated.tool_state_ref == tool_ref
    assert hydrated.tool_state == {"g": 5}


# ===========================================================================
# Garbage collection


def test_gc_keeps_the_live_checkpoint_and_its_children(store: SessionStore, clock: ManualClock) -> None:
    orphan = store.put_artifact_blob(BlobArtifactDescriptor.plugin_session_snapshot(), b"orphan-blob")
    result = store.commit_runtime_state(
        commit(
            expected=0,
            checkpoint=HydratedCheckpoint(
                turn_state={"turn_index": 1},
                tool_state={"generation": 3},
                plugin_snapshot={"plugins": {}},
                plugin_snapshot_revision=5,
                execution_state=b"\xde\xad\xbe\xef",
            ),
        )
    )
    clock.advance(1)
    report = store.gc_unreachable()
    assert report.skipped_reason is None
    assert report.deleted_blob_count == 1
    assert report.retained_blob_count == 4
    assert store.get_blob(orphan) is None
    manifest = result.manifest
    for ref in (result.checkpoint_ref, manifest.tool_state_ref, manifest.plugin_snapshot_ref):
        assert ref is not None and store.get_blob(ref) is not None
    assert manifest.execution_state_ref is not None
    assert store.get_blob(manifest.execution_state_ref) == b"\xde\xad\xbe\xef"
    assert loaded(store).checkpoint is not None
    assert store.gc_unreachable().deleted_blob_count == 0


def test_gc_deletes_superseded_checkpoints(store: SessionStore, clock: ManualClock) -> None:
    first = store.commit_runtime_state(
        commit(expected=0, checkpoint=HydratedCheckpoint(turn_state={"turn_index": 1}, tool_state={"generation": 1}))
    )
    second = store.commit_runtime_state(
        commit(expected=1, checkpoint=HydratedCheckpoint(turn_state={"turn_index": 2}, tool_state={"generation": 2}))
    )
    clock.advance(1)
    assert store.gc_unreachable().deleted_blob_count == 2
    assert store.get_blob(first.checkpoint_ref) is None
    assert first.manifest.tool_state_ref is not None and store.get_blob(first.manifest.tool_state_ref) is None
    hydrated = loaded(store).checkpoint
    assert hydrated is not None and hydrated.tool_state == {"generation": 2}
    assert store.get_checkpoint(second.checkpoint_ref) == hydrated


def test_gc_keeps_execution_state_named_by_agent_frames(store: SessionStore, clock: ManualClock) -> None:
    descriptor = BlobArtifactDescriptor.execution_state_snapshot()
    live = store.put_artifact_blob(descriptor, b"frame-1-vm")
    dead = store.put_artifact_blob(descriptor, b"superseded-vm")
    frames = [{"frame_id": "frame-1", "execution_state_ref": live}, {"frame_id": "frame-2"}]
    store.commit_runtime_state(commit(expected=0, agent_frames=frames, current_agent_frame_id="frame-2"))
    clock.advance(1)
    report = store.gc_unreachable()
    assert report.skipped_reason is None
    assert store.get_blob(live) == b"frame-1-vm"
    assert store.get_blob(dead) is None


def test_gc_keeps_module_artifacts_and_deletes_unrooted_blobs(store: SessionStore, clock: ManualClock) -> None:
    store.put_module_artifact("mod:scan", b"module-bytes")
    raw = store.put_blob(b"raw-orphan")
    typed = store.put_artifact_blob(BlobArtifactDescriptor.tool_state_snapshot(), b"typed-orphan")
    unrooted_ref, _ = store.put_checkpoint(HydratedCheckpoint(turn_state={"turn_index": 9}))
    clock.advance(1)
    report = store.gc_unreachable()  # no head at all: only pinned modules are roots
    assert report.skipped_reason is None
    assert report.deleted_blob_count == 3
    assert store.get_module_artifact("mod:scan") == b"module-bytes"
    for ref in (raw, typed, unrooted_ref):
        assert store.get_blob(ref) is None


def test_gc_tolerates_missing_rooted_children(store: SessionStore, clock: ManualClock, harness: BackendHarness) -> None:
    result = store.commit_runtime_state(commit(expected=0, checkpoint=HydratedCheckpoint(tool_state={"t": 1})))
    assert result.manifest.tool_state_ref is not None
    harness.delete_blob(store, result.manifest.tool_state_ref)
    orphan = store.put_blob(b"orphan")
    clock.advance(1)
    report = store.gc_unreachable()
    assert report.skipped_reason is None
    assert report.deleted_blob_count == 1
    assert store.get_blob(orphan) is None
    assert store.get_blob(result.checkpoint_ref) is not None


def test_gc_refuses_to_delete_when_the_head_does_not_decode(
    store: SessionStore, clock: ManualClock, harness: BackendHarness
) -> None:
    result = store.commit_runtime_state(
        commit(expected=0, checkpoint=HydratedCheckpoint(turn_state={"turn_index": 1}, tool_state={"generation": 1}))
    )
    orphan = store.put_blob(b"orphan")
    harness.corrupt_head(store)
    clock.advance(1)
    report = store.gc_unreachable()
    assert report.skipped_reason
    assert report.deleted_blob_count == 0
    assert store.get_blob(orphan) == b"orphan"
    assert store.get_blob(result.checkpoint_ref) is not None
    with pytest.raises(CorruptData):
        store.load_session()


# ===========================================================================
# Attachments


def test_attachment_manifest_lifecycle(store: SessionStore) -> None:
    for attachment_id in ("manual", "runtime", "orphan"):
        store.record_intent(intent(attachment_id, 100))
    assert sorted(uncommitted_ids(store, 200)) == ["manual", "orphan", "runtime"]
    assert store.commit_refs("root", ["manual"]) == 1
    store.commit_runtime_state(commit(expected=0).with_committed_attachments(["runtime"]))
    assert store.list_uncommitted(200) == [
        AttachmentManifestEntry(
            attachment_id="orphan",
            session_id="root",
            canonical_uri="sha256:orphan",
            intent_at_epoch_ms=100,
            committed_at_epoch_ms=None,
        )
    ]
    store.forget("orphan")
    assert store.list_uncommitted(200) == []


def test_list_uncommitted_is_inclusive_ordered_and_across_sessions(store: SessionStore) -> None:
    store.record_intent(intent("late", 300))
    store.record_intent(intent("early", 100, session_id="other"))
    store.record_intent(intent("middle", 200))
    assert uncommitted_ids(store, 99) == []
    assert uncommitted_ids(store, 200) == ["early", "middle"]
    assert uncommitted_ids(store, MAX_MS) == ["early", "middle", "late"]
    assert store.list_uncommitted(100)[0].session_id == "other"


def test_commit_stamping_is_first_wins(store: SessionStore, clock: ManualClock) -> None:
    store.record_intent(intent("att", 100))
    assert store.commit_refs("root", ["att"]) == 1
    clock.advance(1_000)
    assert store.commit_refs("root", ["att"]) == 0
    store.commit_runtime_state(commit(expected=0).with_committed_attachments(["att"]))
    store.record_intent(intent("att", 5_000))  # a committed row never goes back to uncommitted
    assert uncommitted_ids(store) == []


def test_stamping_ignores_other_sessions_and_unknown_ids(store: SessionStore) -> None:
    store.record_intent(intent("theirs", 100, session_id="other"))
    assert store.commit_refs("root", ["theirs", "unknown"]) == 0
    store.commit_runtime_state(commit("root", 0).with_committed_attachments(["theirs", "unknown"]))
    assert uncommitted_ids(store) == ["theirs"]
    assert store.commit_refs("root", []) == 0
    assert store.commit_refs("other", ["theirs"]) == 1
    assert uncommitted_ids(store) == []


def test_failed_commit_does_not_stamp_attachments(store: SessionStore) -> None:
    store.record_intent(intent("att", 100))
    with pytest.raises(HeadRevisionConflict):
        store.commit_runtime_state(commit(expected=4).with_committed_attachments(["att"]))
    assert uncommitted_ids(store) == ["att"]


def test_re_recording_an_uncommitted_intent_refreshes_it(store: SessionStore) -> None:
    store.record_intent(intent("att", 100))
    store.record_intent(intent("att", 500))
    assert uncommitted_ids(store, 200) == []
    assert [entry.intent_at_epoch_ms for entry in store.list_uncommitted(500)] == [500]


def test_forget_drops_any_row_and_tolerates_missing_ones(store: SessionStore) -> None:
    store.record_intent(intent("committed", 100))
    store.commit_refs("root", ["committed"])
    store.forget("committed")
    store.forget("never-recorded")
    store.record_intent(intent("committed", 700))  # forgotten: recorded afresh, uncommitted
    assert uncommitted_ids(store) == ["committed"]


# ===========================================================================
# Module artifacts, metadata, picker info


def test_module_artifacts_round_trip_and_repin(store: SessionStore) -> None:
    store.put_module_artifact("mod:a", b"\x00version-1")
    store.put_module_artifact("mod:b", b"other")
    assert store.get_module_artifact("mod:a") == b"\x00version-1"
    store.put_module_artifact("mod:a", b"\x00version-2")
    assert store.get_module_artifact("mod:a") == b"\x00version-2"
    assert store.get_module_artifact("mod:b") == b"other"
    assert store.get_module_artifact("mod:c") is None


def test_session_meta_round_trips_and_is_replaced(store: SessionStore) -> None:
    meta = SessionMeta(
        session_id="chat/alpha",
        session_name="Alpha",
        created_at="2026-01-01T00:00:00Z",
        model="gpt-5.4-mini",
        cwd="/tmp/project",
        relation=SessionRelation.child("parent", caused_by={"tool_call": "call-1"}),
    )
    store.save_session_meta(meta)
    assert store.load_session_meta() == meta
    assert store.load_session() is None  # metadata alone is not a session head
    renamed = msgspec.structs.replace(meta, session_name="Renamed", cwd=None, relation=SessionRelation.root())
    store.save_session_meta(renamed)
    assert store.load_session_meta() == renamed


def _meta(session_id: str = "root") -> SessionMeta:
    return SessionMeta(session_id=session_id, session_name=session_id, created_at="2026-01-01T00:00:00Z", model="m")


def test_picker_info_needs_metadata(store: SessionStore) -> None:
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append([message("u", "user", "hi")], "u")))
    assert store.load_picker_info() is None
    store.save_session_meta(_meta())
    assert store.load_picker_info() == SessionPickerInfo(
        session_id="root", cwd=None, relation=SessionRelation.root(), first_user_message="hi", user_message_count=1
    )


def test_picker_first_user_message_rules(store: SessionStore) -> None:
    store.save_session_meta(msgspec.structs.replace(_meta(), cwd="/w", relation=SessionRelation.child("p")))
    user_parts = [
        {"type": "text", "text": "  look at this  "},
        {"type": "tool_call", "text": "hidden call"},
        {"type": "image", "id": "img-1"},
        {"type": "text", "text": "   "},
        {"type": "tool_result", "text": "hidden result"},
        {"type": "code", "text": "print(1)"},
    ]
    nodes = [
        message("s", "system", "you are helpful"),
        message("a0", "assistant", "welcome", "s"),
        SessionNode(node_id="event", parent_node_id="a0", kind="event", payload={"role": "user", "parts": []}),
        SessionNode(node_id="u1", parent_node_id="a0", payload={"role": "user", "parts": user_parts}),
        message("u2", "user", "second", "u1"),
        message("branch", "user", "other branch", "a0"),
    ]
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append(nodes, "u2")))
    info = store.load_picker_info()
    assert info is not None
    # parts keep their own whitespace; only the joined text is trimmed
    assert info.first_user_message == "look at this  \n\n[Image attached]\n\nprint(1)"
    assert info.user_message_count == 3  # every branch counts; system, assistant and non-message nodes do not
    assert (info.session_id, info.cwd, info.relation) == ("root", "/w", SessionRelation.child("p"))


def test_picker_info_follows_tombstones_appends_and_replaces(store: SessionStore) -> None:
    store.save_session_meta(_meta())
    assert store.load_picker_info() == SessionPickerInfo(
        session_id="root", cwd=None, relation=SessionRelation.root(), first_user_message="", user_message_count=0
    )
    first = [message("u1", "user", "first"), message("a1", "assistant", "ok", "u1")]
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append(first, "a1")))
    store.commit_runtime_state(commit(expected=1, graph=GraphDelta.append([message("u2", "user", "next", "a1")], "u2")))
    info = store.load_picker_info()
    assert info is not None and (info.first_user_message, info.user_message_count) == ("first", 2)
    store.tombstone_nodes(["u1"])
    info = store.load_picker_info()
    assert info is not None and (info.first_user_message, info.user_message_count) == ("next", 1)
    replaced = SessionGraph(nodes=[message("r", "user", "fresh start")], leaf_node_id="r")
    store.commit_runtime_state(commit(expected=2, graph=GraphDelta.replace_full(replaced)))
    info = store.load_picker_info()
    assert info is not None and (info.first_user_message, info.user_message_count) == ("fresh start", 1)


# ===========================================================================
# Usage ledger


def test_usage_merges_per_source_and_model_in_first_seen_order(store: SessionStore) -> None:
    store.commit_runtime_state(
        commit(
            expected=0,
            usage_deltas=[usage("turn", "m1", 11, 7, 3, 5), usage("subagent", "m2", i=1), usage("turn", "m1", i=1)],
        )
    )
    store.commit_runtime_state(
        commit(expected=1, usage_deltas=[usage("turn", "m2", o=4), usage("subagent", "m2", r=2)])
    )
    assert loaded(store).token_ledger == [
        usage("turn", "m1", 12, 7, 3, 5),
        usage("subagent", "m2", i=1, r=2),
        usage("turn", "m2", o=4),
    ]


def test_usage_drops_only_all_zero_entries(store: SessionStore) -> None:
    store.commit_runtime_state(
        commit(expected=0, usage_deltas=[usage("zero", "m"), usage("cached", "m", c=9), usage("later", "m", i=1)])
    )
    store.commit_runtime_state(commit(expected=1, usage_deltas=[usage("zero", "m", o=2)]))
    assert loaded(store).token_ledger == [usage("cached", "m", c=9), usage("later", "m", i=1), usage("zero", "m", o=2)]


def test_failed_commit_adds_no_usage(store: SessionStore) -> None:
    store.commit_runtime_state(commit(expected=0, usage_deltas=[usage("turn", "m", i=1)]))
    with pytest.raises(HeadRevisionConflict):
        store.commit_runtime_state(commit(expected=0, usage_deltas=[usage("turn", "m", i=100)]))
    assert loaded(store).token_ledger == [usage("turn", "m", i=1)]


# ===========================================================================
# Retention: prune drops old turn stamps and nothing else


def _three_stamped_turns(store: SessionStore, clock: ManualClock) -> list[RuntimeCommitResult]:
    """Turns t1, t2, t3 committed 10 ms apart; the clock ends 5 ms after t3."""
    results = []
    for index in range(3):
        if index:
            clock.advance(10)
        stamped = commit(expected=index, turn_commit=stamp(f"t{index + 1}", f"h{index + 1}"))
        results.append(store.commit_runtime_state(stamped))
    clock.advance(5)
    return results


def test_prune_drops_only_stamps_older_than_the_horizon(store: SessionStore, clock: ManualClock) -> None:
    results = _three_stamped_turns(store, clock)
    store.put_module_artifact("mod", b"pinned")
    store.enqueue_queued_work(draft())
    held = must_claim(store)
    before = snapshot(store)
    dry = store.prune(dry_run=True, turn_stamps_older_than_ms=15)
    assert (dry.dry_run, dry.cutoff_epoch_ms, dry.turn_stamp_count) == (True, clock() - 15, 1)
    assert snapshot(store) == before
    assert store.commit_runtime_state(commit(expected=0, turn_commit=stamp("t1", "h1"))) == results[0]
    report = store.prune(turn_stamps_older_than_ms=15)
    assert (report.dry_run, report.turn_stamp_count) == (False, 1)
    assert snapshot(store) == before, "pruning stamps changed live data"
    assert store.get_module_artifact("mod") == b"pinned"
    for index in (1, 2):  # younger stamps still make a retry a replay
        again = commit(expected=index, turn_commit=stamp(f"t{index + 1}", f"h{index + 1}"))
        assert store.commit_runtime_state(again) == results[index]
    with pytest.raises(HeadRevisionConflict):  # t1's retry is no replay any more: its CAS revision judges it
        store.commit_runtime_state(commit(expected=0, turn_commit=stamp("t1", "h1")))
    assert snapshot(store) == before
    assert store.prune(turn_stamps_older_than_ms=15).turn_stamp_count == 0
    completed = store.commit_runtime_state(
        commit(expected=3, completed_queue_claims=[held.completion()], turn_commit=stamp("t4", "h4"))
    )
    assert completed.head_revision == 4 and store.list_queued_work("root") == []


def test_prune_with_horizon_zero_keeps_every_live_thing(store: SessionStore, clock: ManualClock) -> None:
    _three_stamped_turns(store, clock)
    before = snapshot(store)
    assert store.prune(turn_stamps_older_than_ms=0).turn_stamp_count == 3
    assert snapshot(store) == before
    report, _bytes = store.gc_plan(dry_run=True, grace_ms=0)
    assert report.skipped_reason is None


def test_prune_without_a_horizon_prunes_nothing(store: SessionStore, clock: ManualClock) -> None:
    _three_stamped_turns(store, clock)
    report = store.prune()
    assert (report.cutoff_epoch_ms, report.turn_stamp_count) == (None, 0)
    assert store.prune(dry_run=True, turn_stamps_older_than_ms=0).turn_stamp_count == 3


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"turn_stamps_older_than_ms": -1}, "turn_stamps_older_than_ms"),
        ({"turn_stamps_older_than_ms": "1d"}, "turn_stamps_older_than_ms"),
        ({"dry_run": "yes"}, "dry_run"),
    ],
)
def test_prune_rejects_bad_arguments(store: SessionStore, clock: ManualClock, kwargs: Any, field: str) -> None:
    _three_stamped_turns(store, clock)
    with pytest.raises(InvalidInput) as raised:
        store.prune(**kwargs)
    assert field in raised.value.what
    assert store.prune(dry_run=True, turn_stamps_older_than_ms=0).turn_stamp_count == 3


# ===========================================================================
# Fork


def test_copy_session_into_an_empty_store(store: SessionStore, backend: Backend) -> None:
    store.put_module_artifact("mod:x", b"module")
    store.commit_runtime_state(
        commit(
            "forked",
            0,
            GraphDelta.append(chain("a", "b"), "b"),
            checkpoint=HydratedCheckpoint(turn_state={"turn_index": 4}, tool_state={"g": 1}, execution_state=b"vm"),
            usage_deltas=[usage("turn", "m", i=3)],
        )
    )
    target = backend.open()
    store.copy_session_into(target)
    assert target.load_session() == store.load_session()
    assert target.load_session(SessionReadScope.active_path()) == store.load_session(SessionReadScope.active_path())
    assert target.get_module_artifact("mod:x") == b"module"
    with pytest.raises(SessionBindingMismatch):
        target.commit_runtime_state(commit("someone-else", 1))
    assert target.commit_runtime_state(commit("forked", 1)).head_revision == 2
    assert revision(store) == 1


def test_copy_session_into_a_non_empty_store_is_refused(store: SessionStore, backend: Backend) -> None:
    store.commit_runtime_state(commit(expected=0))
    target = backend.open()
    target.commit_runtime_state(commit("theirs", 0, GraphDelta.append(chain("t"), "t")))
    before = snapshot(target, ("theirs",))
    with pytest.raises(InvalidInput):
        store.copy_session_into(target)
    assert snapshot(target, ("theirs",)) == before


# ===========================================================================
# Work queue: enqueue


def test_enqueue_returns_the_stored_batch(store: SessionStore, clock: ManualClock) -> None:
    payloads = [
        QueuedWorkPayload.turn_input(TurnInput.text("look").with_image_ref("img-1", b"\x89PNG")),
        QueuedWorkPayload.session_command({"kind": "refresh_tool_surface", "expected_generation": 3}),
        QueuedWorkPayload.process_wake({"process_id": "process-1", "sequence": 7}),
    ]
    built = (
        QueuedWorkBatchDraft.new("root", ACTC, JOIN, payloads)
        .with_source_key("host:abc")
        .with_merge_key(MergeKey.group("inbox"))
        .with_available_at_ms(START_MS - 5)
    )
    batch = store.enqueue_queued_work(built)
    assert batch.batch_id
    assert (batch.session_id, batch.source_key) == ("root", "host:abc")
    assert (batch.delivery_policy, batch.slot_policy, batch.merge_key) == (ACTC, JOIN, MergeKey.group("inbox"))
    assert (batch.available_at_ms, batch.enqueued_at_ms) == (START_MS - 5, clock())
    assert [item.payload for item in batch.items] == payloads
    assert len({item.item_id for item in batch.items}) == 3
    assert store.list_queued_work("root") == [batch]


def test_enqueue_is_idempotent_by_source_key_while_the_batch_exists(store: SessionStore, clock: ManualClock) -> None:
    first = store.enqueue_queued_work(draft(text="first", slot=JOIN, key="source:first"))
    clock.advance(10)
    replay = store.enqueue_queued_work(draft(text="different replay payload", delivery=ACTC, key="source:first"))
    assert replay == first
    assert text_of(replay) == "first"
    second = store.enqueue_queued_work(draft(text="second"))
    store.enqueue_queued_work(draft("other", "other session", key="source:first"))  # keys are per session
    assert store.list_queued_work("root") == [first, second]
    assert first.enqueue_seq < second.enqueue_seq
    assert len(store.list_queued_work("other")) == 1
    held = must_claim(store, max_batches=1)
    assert store.enqueue_queued_work(draft(text="while claimed", key="source:first")) == first
    store.commit_runtime_state(commit(expected=0).completing_queue_claim(held.completion()))
    again = store.enqueue_queued_work(draft(text="after completion", key="source:first"))
    assert again.batch_id != first.batch_id
    assert again.enqueue_seq > second.enqueue_seq
    assert text_of(again) == "after completion"


def test_batches_without_source_key_never_dedupe(store: SessionStore) -> None:
    one = store.enqueue_queued_work(draft())
    two = store.enqueue_queued_work(draft())
    assert one.batch_id != two.batch_id
    assert len(store.list_queued_work("root")) == 2


def test_enqueue_seq_is_never_reused(store: SessionStore) -> None:
    a = store.enqueue_queued_work(draft(text="a"))
    b = store.enqueue_queued_work(draft(text="b"))
    assert store.cancel_queued_work_batch("root", b.batch_id) is not None
    c = store.enqueue_queued_work(draft(text="c"))
    assert a.enqueue_seq < b.enqueue_seq < c.enqueue_seq
    held = must_claim(store)
    store.commit_runtime_state(commit(expected=0).completing_queue_claim(held.completion()))
    held = must_claim(store)
    store.commit_runtime_state(commit(expected=1).completing_queue_claim(held.completion()))
    assert store.list_queued_work("root") == []
    d = store.enqueue_queued_work(draft(text="d"))
    assert d.enqueue_seq > c.enqueue_seq


def test_empty_batch_is_stored_and_claimable(store: SessionStore) -> None:
    empty = store.enqueue_queued_work(QueuedWorkBatchDraft.new("root", ESB, EXCL, []))
    assert empty.items == []
    held = must_claim(store)
    assert held.batches == [empty]
    assert held.is_empty()


# ===========================================================================
# Work queue: claim selection


def test_claims_are_fifo_and_per_session(store: SessionStore, clock: ManualClock) -> None:
    first = store.enqueue_queued_work(draft(text="1"))
    other = store.enqueue_queued_work(draft("other", "o"))
    second = store.enqueue_queued_work(draft(text="2"))
    held = must_claim(store, owner="worker")
    assert held.batches == [first]
    assert (held.session_id, held.owner_id) == ("root", "worker")
    assert (held.claimed_at_epoch_ms, held.expires_at_epoch_ms) == (clock(), clock() + TTL)
    assert held.claim_id and held.lease_token
    assert must_claim(store).batches == [second]
    assert claim(store) is None
    assert must_claim(store, "other").batches == [other]
    assert claim(store, "nobody") is None


def test_delayed_batches_become_ready_inclusively_without_blocking(store: SessionStore, clock: ManualClock) -> None:
    delayed = store.enqueue_queued_work(draft(text="later", available_at_ms=clock() + 500))
    ready = store.enqueue_queued_work(draft(text="now"))
    assert must_claim(store).batches == [ready]  # a delayed head does not block
    assert claim(store) is None
    assert ids(store.list_queued_work("root")) == [delayed.batch_id, ready.batch_id]
    assert ids(store.list_pending_queued_work("root")) == [delayed.batch_id]
    clock.advance(499)
    assert claim(store) is None
    clock.advance(1)
    assert must_claim(store).batches == [delayed]


def test_far_future_availability_is_never_ready(store: SessionStore, clock: ManualClock) -> None:
    store.enqueue_queued_work(draft(available_at_ms=4_102_444_800_000))
    store.enqueue_queued_work(draft(available_at_ms=MAX_MS))
    clock.advance(10**9)
    assert claim(store) is None
    assert len(store.list_pending_queued_work("root")) == 2


def test_exclusive_head_is_claimed_alone(store: SessionStore) -> None:
    exclusive = store.enqueue_queued_work(draft(text="x", slot=EXCL))
    join = store.enqueue_queued_work(draft(text="j", slot=JOIN))
    assert must_claim(store).batches == [exclusive]
    assert must_claim(store).batches == [join]


def test_join_groups_by_delivery_policy_and_merge_key(store: SessionStore) -> None:
    a1 = store.enqueue_queued_work(draft(text="a1", slot=JOIN, merge=MergeKey.group("a")))
    a2 = store.enqueue_queued_work(draft(text="a2", slot=JOIN, merge=MergeKey.group("a")))
    g = store.enqueue_queued_work(draft(text="g", slot=JOIN, merge=MergeKey.group("b")))
    c = store.enqueue_queued_work(draft(text="c", delivery=ACTC, slot=JOIN, merge=MergeKey.group("a")))
    assert ids(must_claim(store).batches) == ids([a1, a2])
    assert ids(must_claim(store).batches) == ids([g])
    assert ids(must_claim(store).batches) == ids([c])


def test_join_respects_max_batches_and_never_merges_with_never(store: SessionStore) -> None:
    batches = [store.enqueue_queued_work(draft(text=str(i), slot=JOIN)) for i in range(3)]
    assert ids(must_claim(store, max_batches=2).batches) == ids(batches[:2])
    assert ids(must_claim(store, max_batches=10).batches) == ids(batches[2:])
    more = [store.enqueue_queued_work(draft(text=str(i), slot=JOIN)) for i in range(3)]
    assert ids(must_claim(store).batches) == ids(more)
    keyed = [
        store.enqueue_queued_work(draft(text="n", slot=JOIN, merge=MergeKey.never())),
        store.enqueue_queued_work(draft(text="p", slot=JOIN, merge=MergeKey.payload_default())),
    ]
    assert ids(must_claim(store).batches) == ids(keyed[:1])  # never != payload_default
    assert ids(must_claim(store).batches) == ids(keyed[1:])


def test_exclusive_or_first_mismatch_ends_a_group(store: SessionStore) -> None:
    g = MergeKey.group("g")
    j1 = store.enqueue_queued_work(draft(text="j1", slot=JOIN, merge=g))
    e = store.enqueue_queued_work(draft(text="e", slot=EXCL, merge=g))
    j2 = store.enqueue_queued_work(draft(text="j2", slot=JOIN, merge=g))
    h = store.enqueue_queued_work(draft(text="h", slot=JOIN, merge=MergeKey.group("h")))
    j3 = store.enqueue_queued_work(draft(text="j3", slot=JOIN, merge=g))
    for expected in (j1, e, j2, h, j3):
        assert ids(must_claim(store).batches) == [expected.batch_id]


def test_join_walks_past_delayed_and_claimed_rows(store: SessionStore, clock: ManualClock) -> None:
    g = MergeKey.group("g")
    blocker = store.enqueue_queued_work(draft("root", "x", slot=EXCL))
    held = must_claim(store)  # live-claimed row at the front
    assert held.batches == [blocker]
    j1 = store.enqueue_queued_work(draft(text="j1", slot=JOIN, merge=g))
    store.enqueue_queued_work(draft(text="delayed", slot=JOIN, merge=g, available_at_ms=clock() + 1_000))
    j3 = store.enqueue_queued_work(draft(text="j3", slot=JOIN, merge=g))
    assert ids(must_claim(store).batches) == ids([j1, j3])


def test_claim_boundary_table(store: SessionStore) -> None:
    cases = [
        (IDLE, ESB, True),
        (IDLE, ACTC, True),
        (CHECKPOINT, ESB, True),
        (CHECKPOINT, ACTC, False),
    ]
    for index, (boundary, delivery, claimable) in enumerate(cases):
        session_id = f"boundary-{index}"
        batch = store.enqueue_queued_work(draft(session_id, delivery=delivery))
        got = claim(store, session_id, boundary=boundary)
        assert (got is not None) is claimable, (boundary, delivery)
        if got is not None:
            assert got.batches == [batch]
        else:
            assert store.list_pending_queued_work(session_id) == [batch]


def test_checkpoint_claims_are_blocked_by_an_after_commit_head(store: SessionStore) -> None:
    after = store.enqueue_queued_work(draft(text="after current commit", delivery=ACTC))
    early = store.enqueue_queued_work(draft(text="earliest", delivery=ESB))
    assert claim(store, owner="owner-a", boundary=CHECKPOINT) is None  # no look-ahead past the head
    idle = must_claim(store, owner="owner-a", boundary=IDLE)
    assert idle.batches == [after]
    checkpoint = must_claim(store, owner="owner-b", boundary=CHECKPOINT)
    assert checkpoint.batches == [early]
    g = MergeKey.group("g")
    esb = store.enqueue_queued_work(draft("mixed", "esb", ESB, JOIN, merge=g))
    store.enqueue_queued_work(draft("mixed", "actc", ACTC, JOIN, merge=g))
    assert must_claim(store, "mixed", boundary=CHECKPOINT).batches == [esb]
    assert claim(store, "mixed", boundary=CHECKPOINT) is None


def test_max_batches_zero_claims_nothing(store: SessionStore) -> None:
    batch = store.enqueue_queued_work(draft())
    assert claim(store, max_batches=0) is None
    assert store.list_pending_queued_work("root") == [batch]
    assert must_claim(store).batches == [batch]


def test_ttl_zero_claim_is_already_expired(store: SessionStore, clock: ManualClock) -> None:
    batch = store.enqueue_queued_work(draft())
    expired = must_claim(store, owner="owner-a", ttl=0)
    assert expired.expires_at_epoch_ms == clock()
    assert store.list_pending_queued_work("root") == [batch]
    again = must_claim(store, owner="owner-b")  # same millisecond
    assert again.batches == [batch]
    assert again.fencing_token > expired.fencing_token


def test_huge_ttl_saturates_and_never_expires(store: SessionStore, clock: ManualClock) -> None:
    store.enqueue_queued_work(draft())
    held = must_claim(store, ttl=MAX_MS)
    assert held.expires_at_epoch_ms == MAX_MS
    clock.advance(10**12)
    assert store.list_pending_queued_work("root") == []
    assert claim(store, owner="thief") is None
    assert store.renew_queued_work_claim(held, MAX_MS).expires_at_epoch_ms == MAX_MS


def test_fencing_tokens_grow_per_session(store: SessionStore, clock: ManualClock) -> None:
    store.enqueue_queued_work(draft(text="b1"))
    store.enqueue_queued_work(draft(text="b2"))
    f1 = must_claim(store, ttl=100, max_batches=1)
    f_other = must_claim(store, max_batches=1)
    assert f_other.fencing_token > f1.fencing_token  # another batch, same session
    clock.advance(100)
    f2 = must_claim(store, owner="owner-b")  # reclaims the expired batch
    assert f2.batches == f1.batches
    store.abandon_queued_work_claim(f2)
    f3 = must_claim(store, owner="owner-c")
    assert f1.fencing_token < f2.fencing_token < f3.fencing_token
    assert len({f1.claim_id, f2.claim_id, f3.claim_id}) == 3
    assert len({f1.lease_token, f2.lease_token, f3.lease_token}) == 3


# ===========================================================================
# Work queue: renew, abandon, cancel


def test_renew_extends_only_the_expiry(store: SessionStore, clock: ManualClock) -> None:
    store.enqueue_queued_work(draft())
    held = must_claim(store, ttl=100)
    clock.advance(50)
    renewed = store.renew_queued_work_claim(held, 1_000)
    assert renewed == msgspec.structs.replace(held, expires_at_epoch_ms=clock() + 1_000)
    clock.advance(500)  # past the original lease, within the renewed one
    assert store.list_pending_queued_work("root") == []
    assert claim(store, owner="thief") is None


def test_expired_but_not_reclaimed_claim_can_be_renewed_and_completed(store: SessionStore, clock: ManualClock) -> None:
    batch = store.enqueue_queued_work(draft())
    held = must_claim(store, ttl=100)
    clock.advance(200)
    assert store.list_pending_queued_work("root") == [batch]
    renewed = store.renew_queued_work_claim(held, TTL)
    assert store.list_pending_queued_work("root") == []
    store.commit_runtime_state(commit(expected=0).completing_queue_claim(renewed.completion()))
    assert store.list_queued_work("root") == []
    other = store.enqueue_queued_work(draft())
    lapsed = must_claim(store, ttl=100)
    clock.advance(200)
    store.commit_runtime_state(commit(expected=1).completing_queue_claim(lapsed.completion()))  # no renew needed
    assert other.batch_id not in ids(store.list_queued_work("root"))


def test_stale_owner_after_reclaim_is_rejected_everywhere(store: SessionStore, clock: ManualClock) -> None:
    batch = store.enqueue_queued_work(draft())
    stale = must_claim(store, owner="owner-a", ttl=100)
    clock.advance(100)
    current = must_claim(store, owner="owner-b")
    assert current.batches == [batch]
    with pytest.raises(QueuedWorkClaimExpired) as caught:
        store.renew_queued_work_claim(stale, TTL)
    assert (caught.value.session_id, caught.value.claim_id) == ("root", stale.claim_id)
    before = snapshot(store)
    with pytest.raises(QueuedWorkClaimExpired):
        store.commit_runtime_state(commit(expected=0).completing_queue_claim(stale.completion()))
    assert snapshot(store) == before
    store.abandon_queued_work_claim(stale)  # a no-op: the batch stays with its current owner
    assert store.list_pending_queued_work("root") == []
    assert claim(store, owner="owner-c") is None
    store.renew_queued_work_claim(current, TTL)
    store.commit_runtime_state(commit(expected=0).completing_queue_claim(current.completion()))
    assert store.list_queued_work("root") == []


def test_renew_with_a_stale_fence_is_rejected(store: SessionStore, clock: ManualClock) -> None:
    store.enqueue_queued_work(draft())
    held = must_claim(store, ttl=100)
    for fence in (held.fencing_token + 1, held.fencing_token - 1):
        if fence < 0:
            continue
        with pytest.raises(QueuedWorkClaimExpired):
            store.renew_queued_work_claim(msgspec.structs.replace(held, fencing_token=fence), TTL)
    clock.advance(100)  # the failed renews did not extend the lease
    assert ids(store.list_pending_queued_work("root")) == held.batch_ids


def test_renew_is_all_or_nothing(store: SessionStore, clock: ManualClock) -> None:
    g = MergeKey.group("g")
    a = store.enqueue_queued_work(draft(text="a", slot=JOIN, merge=g))
    b = store.enqueue_queued_work(draft(text="b", slot=JOIN, merge=g))
    both = must_claim(store, owner="owner-a", ttl=100)
    assert ids(both.batches) == ids([a, b])
    clock.advance(100)
    assert must_claim(store, owner="owner-b", max_batches=1).batches == [a]
    with pytest.raises(QueuedWorkClaimExpired):
        store.renew_queued_work_claim(both, TTL)
    assert store.list_pending_queued_work("root") == [b]  # b's expiry was not extended
    assert must_claim(store, owner="owner-c").batches == [b]


def test_abandon_releases_the_claim(store: SessionStore) -> None:
    g = MergeKey.group("g")
    batches = [store.enqueue_queued_work(draft(text=t, slot=JOIN, merge=g)) for t in ("a", "b")]
    held = must_claim(store)
    assert store.list_pending_queued_work("root") == []
    store.abandon_queued_work_claim(held)
    assert store.list_pending_queued_work("root") == batches
    store.abandon_queued_work_claim(held)  # a second abandon is a no-op
    assert store.list_pending_queued_work("root") == batches
    with pytest.raises(QueuedWorkClaimExpired):
        store.renew_queued_work_claim(held, TTL)
    with pytest.raises(QueuedWorkClaimExpired):
        store.commit_runtime_state(commit(expected=0).completing_queue_claim(held.completion()))
    again = must_claim(store)
    assert again.batches == batches
    assert again.fencing_token > held.fencing_token


def test_cancel_removes_only_free_batches(store: SessionStore) -> None:
    first = store.enqueue_queued_work(draft(text="cancel me", delivery=ACTC))
    cancelled = store.cancel_queued_work_batch("root", first.batch_id)
    assert cancelled == first
    assert store.list_queued_work("root") == []
    second = store.enqueue_queued_work(draft(text="claimed", delivery=ACTC))
    held = must_claim(store, max_batches=1)
    assert store.list_pending_queued_work("root") == []
    assert store.list_queued_work("root") == [second]
    assert store.cancel_queued_work_batch("root", second.batch_id) is None
    assert store.list_queued_work("root") == [second]
    store.abandon_queued_work_claim(held)
    assert store.list_pending_queued_work("root") == [second]
    assert store.cancel_queued_work_batch("root", second.batch_id) == second
    assert store.cancel_queued_work_batch("root", second.batch_id) is None


def test_cancel_edge_cases(store: SessionStore, clock: ManualClock) -> None:
    theirs = store.enqueue_queued_work(draft("other"))
    assert store.cancel_queued_work_batch("root", "qwb:missing") is None
    assert store.cancel_queued_work_batch("root", theirs.batch_id) is None
    assert store.list_queued_work("other") == [theirs]
    delayed = store.enqueue_queued_work(draft(text="delayed", available_at_ms=clock() + 10_000))
    assert store.cancel_queued_work_batch("root", delayed.batch_id) == delayed
    lapsed = store.enqueue_queued_work(draft(text="lapsed"))
    held = must_claim(store, ttl=100)
    clock.advance(100)
    assert store.cancel_queued_work_batch("root", lapsed.batch_id) == lapsed
    with pytest.raises(QueuedWorkClaimExpired):
        store.commit_runtime_state(commit(expected=0).completing_queue_claim(held.completion()))
    assert store.load_session() is None


# ===========================================================================
# Work queue: claim by batch ids, list vs pending


def test_claim_by_batch_ids_cannot_skip_earlier_work(store: SessionStore) -> None:
    b1 = store.enqueue_queued_work(draft(text="first", delivery=ACTC))
    b2 = store.enqueue_queued_work(draft(text="second", delivery=ACTC))
    assert store.claim_ready_queued_work_by_batch_ids("root", "owner", IDLE, TTL, [b2.batch_id]) is None
    assert store.list_pending_queued_work("root") == [b1, b2]
    held = store.claim_ready_queued_work_by_batch_ids("root", "owner", IDLE, TTL, [b1.batch_id])
    assert held is not None and held.batches == [b1]
    assert store.list_pending_queued_work("root") == [b2]


def test_claim_by_batch_ids_mismatch_leaves_no_trace(store: SessionStore) -> None:
    g = MergeKey.group("g")
    a = store.enqueue_queued_work(draft(text="a", slot=JOIN, merge=g))
    b = store.enqueue_queued_work(draft(text="b", slot=JOIN, merge=g))
    before = snapshot(store)
    for wanted in ([b.batch_id], [b.batch_id, a.batch_id], [a.batch_id, b.batch_id, "qwb:ghost"], []):
        assert store.claim_ready_queued_work_by_batch_ids("root", "owner", IDLE, TTL, wanted) is None
        assert snapshot(store) == before
    probe = must_claim(store, owner="probe")  # never observable as claimed
    assert probe.batches == [a, b]
    store.abandon_queued_work_claim(probe)
    exact = store.claim_ready_queued_work_by_batch_ids("root", "owner", IDLE, TTL, [a.batch_id, b.batch_id])
    assert exact is not None and exact.batches == [a, b]
    assert exact.fencing_token > probe.fencing_token


def test_list_includes_everything_and_pending_leaves_out_live_claims(store: SessionStore, clock: ManualClock) -> None:
    live = store.enqueue_queued_work(draft(text="live"))
    lapsing = store.enqueue_queued_work(draft(text="lapsing"))
    delayed = store.enqueue_queued_work(draft(text="delayed", available_at_ms=clock() + 10_000))
    free = store.enqueue_queued_work(draft(text="free"))
    must_claim(store, max_batches=1)
    must_claim(store, ttl=100, max_batches=1)
    clock.advance(100)
    assert store.list_queued_work("root") == [live, lapsing, delayed, free]
    assert store.list_pending_queued_work("root") == [lapsing, delayed, free]


# ===========================================================================
# Work queue: completion inside the commit


def test_completion_is_lease_guarded(store: SessionStore) -> None:
    g = MergeKey.group("joined")
    store.enqueue_queued_work(draft(text="a", slot=JOIN, merge=g))
    store.enqueue_queued_work(draft(text="b", slot=JOIN, merge=g))
    held = must_claim(store)
    before = snapshot(store)
    bad = [
        msgspec.structs.replace(held.completion(), lease_token=held.lease_token + ":stale"),
        msgspec.structs.replace(held.completion(), claim_id=held.claim_id + ":other"),
        msgspec.structs.replace(held.completion(), fencing_token=held.fencing_token + 1),
    ]
    for completion in bad:
        with pytest.raises(QueuedWorkClaimExpired) as caught:
            store.commit_runtime_state(commit(expected=0).completing_queue_claim(completion))
        assert caught.value.session_id == "root"
        assert snapshot(store) == before
    store.commit_runtime_state(commit(expected=0).completing_queue_claim(held.completion()))
    assert store.list_queued_work("root") == []


def test_completion_must_name_exactly_the_claimed_batches(store: SessionStore) -> None:
    g = MergeKey.group("g")
    a = store.enqueue_queued_work(draft(text="a", slot=JOIN, merge=g))
    b = store.enqueue_queued_work(draft(text="b", slot=JOIN, merge=g))
    held = must_claim(store, max_batches=2)
    z = store.enqueue_queued_work(draft(text="z"))
    before = snapshot(store)
    for batch_ids in (
        [a.batch_id],
        [a.batch_id, z.batch_id],
        [a.batch_id, a.batch_id],
        [b.batch_id, a.batch_id, z.batch_id],
    ):
        completion = msgspec.structs.replace(held.completion(), batch_ids=batch_ids)
        with pytest.raises(QueuedWorkClaimExpired):
            store.commit_runtime_state(commit(expected=0).completing_queue_claim(completion))
        assert snapshot(store) == before
    reordered = msgspec.structs.replace(held.completion(), batch_ids=[b.batch_id, a.batch_id])
    store.commit_runtime_state(commit(expected=0).completing_queue_claim(reordered))  # a set, not a sequence
    assert store.list_queued_work("root") == [z]


def test_completion_for_another_session_is_rejected(store: SessionStore) -> None:
    store.enqueue_queued_work(draft("other"))
    theirs = must_claim(store, "other")
    before = snapshot(store, ("root", "other"))
    with pytest.raises(QueuedWorkClaimExpired) as caught:
        store.commit_runtime_state(commit("root", 0).completing_queue_claim(theirs.completion()))
    assert caught.value.claim_id == theirs.claim_id
    assert snapshot(store, ("root", "other")) == before


def test_the_same_completion_twice_in_one_commit_is_rejected(store: SessionStore) -> None:
    store.enqueue_queued_work(draft())
    held = must_claim(store)
    before = snapshot(store)
    with pytest.raises(QueuedWorkClaimExpired):
        store.commit_runtime_state(commit(expected=0).completing_queue_claims([held.completion(), held.completion()]))
    assert snapshot(store) == before


def test_several_completions_commit_together_or_not_at_all(store: SessionStore, clock: ManualClock) -> None:
    store.enqueue_queued_work(draft(text="1"))
    store.enqueue_queued_work(draft(text="2"))
    first, second = must_claim(store), must_claim(store)
    store.commit_runtime_state(commit(expected=0).completing_queue_claims([first.completion(), second.completion()]))
    assert store.list_queued_work("root") == []
    store.enqueue_queued_work(draft(text="3"))
    store.enqueue_queued_work(draft(text="4"))
    valid = must_claim(store)
    lapsed = must_claim(store, ttl=100)
    clock.advance(100)
    must_claim(store, owner="thief")  # reclaims lapsed's batch
    before = snapshot(store)
    with pytest.raises(QueuedWorkClaimExpired):
        store.commit_runtime_state(
            commit(expected=1).completing_queue_claims([valid.completion(), lapsed.completion()])
        )
    assert snapshot(store) == before


def test_queue_completion_and_turn_stamp_are_atomic_and_idempotent(store: SessionStore) -> None:
    batch = store.enqueue_queued_work(draft())
    held = must_claim(store, max_batches=1)
    base = commit(expected=0, checkpoint=HydratedCheckpoint(turn_state={"turn_index": 41})).with_turn_commit(
        stamp("turn-atomic", "hash")
    )
    stale = msgspec.structs.replace(held.completion(), lease_token=held.lease_token + ":stale")
    with pytest.raises(QueuedWorkClaimExpired):
        store.commit_runtime_state(base.completing_queue_claim(stale))
    assert store.load_session() is None
    assert store.list_queued_work("root") == [batch]
    first = store.commit_runtime_state(base.completing_queue_claim(held.completion()))
    assert store.list_queued_work("root") == []
    replay = store.commit_runtime_state(base.completing_queue_claim(held.completion()))
    assert replay == first
    replay_with_stale = store.commit_runtime_state(base.completing_queue_claim(stale))
    assert replay_with_stale == first
    assert revision(store) == 1


def test_process_wake_is_enqueued_once_and_completed(store: SessionStore) -> None:
    wake = {"process_id": "process-1", "sequence": 7, "target_session_id": "root"}
    built = QueuedWorkBatchDraft.new("root", ESB, EXCL, [QueuedWorkPayload.process_wake(wake)]).with_source_key(
        "process:process-1:event:7:wake"
    )
    first = store.enqueue_queued_work(built)
    assert store.enqueue_queued_work(built).batch_id == first.batch_id
    held = must_claim(store)
    assert [item.payload for batch in held.batches for item in batch.items] == [QueuedWorkPayload.process_wake(wake)]
    store.commit_runtime_state(commit(expected=0).completing_queue_claim(held.completion()))
    assert store.list_queued_work("root") == []


# ===========================================================================
# Work queue: poison work (PoisonPolicy): attempts, backoff, dead letters

# No jitter: the backoff instants are exact.  After failed attempt n the batch waits min(base * 2**(n-1), max).
POISON = PoisonPolicy(max_attempts=3, backoff_base_ms=1_000, backoff_max_ms=1_500, jitter=0.0)


def _fail_by_expiry(store: SessionStore, clock: ManualClock, ttl: int = 100, **kwargs: Any) -> QueuedWorkClaim:
    """Claim (one batch) and let the lease run out, as a killed worker does."""
    held = must_claim(store, ttl=ttl, max_batches=1, **kwargs)
    clock.advance(ttl)
    return held


def test_claims_count_attempts_and_exhausted_batches_become_dead_letters(backend: Backend, clock: ManualClock) -> None:
    store = backend.open(POISON)
    poison = store.enqueue_queued_work(draft(text="poison"))
    _fail_by_expiry(store, clock, owner="w-1")  # attempt 1 fails: lease end + 1,000 ms
    assert claim(store) is None
    clock.advance(999)
    assert claim(store) is None  # still backing off
    assert store.list_pending_queued_work("root") == [poison]  # backing off is pending, not claimed
    clock.advance(1)
    _fail_by_expiry(store, clock, owner="w-2")  # attempt 2 fails: lease end + min(2,000, 1,500)
    clock.advance(1_499)
    assert claim(store) is None
    clock.advance(1)
    last = _fail_by_expiry(store, clock, owner="w-3")  # attempt 3, the last: nothing to wait for
    assert last.batches == [poison]
    dead_at = clock()
    assert claim(store) is None  # this claim moves it to the dead-letter list
    assert store.list_queued_work("root") == []
    assert store.list_pending_queued_work("root") == []
    letters = store.list_dead_letters("root")
    assert [letter.batch for letter in letters] == [poison]
    letter = letters[0]
    assert (letter.attempts, letter.dead_lettered_at_ms) == (3, dead_at)
    assert (letter.last_owner_id, letter.last_claimed_at_ms, letter.last_error) == ("w-3", dead_at - 100, None)
    assert store.get_dead_letter("root", poison.batch_id) == letter
    clock.advance(10 * TTL)
    assert claim(store) is None  # never offered again
    with pytest.raises(QueuedWorkClaimExpired):
        store.renew_queued_work_claim(last, TTL)
    with pytest.raises(QueuedWorkClaimExpired):
        store.commit_runtime_state(commit(expected=0).completing_queue_claim(last.completion()))
    assert store.load_session() is None


def test_a_poisoned_batch_delays_nothing_behind_it(backend: Backend, clock: ManualClock) -> None:
    store = backend.open(POISON)
    poison = store.enqueue_queued_work(draft(text="poison"))
    healthy = [store.enqueue_queued_work(draft(text=f"ok-{i}")) for i in range(3)]
    _fail_by_expiry(store, clock)
    for batch in healthy:  # the poisoned batch backs off; the rest is claimed at once, in order
        held = must_claim(store, max_batches=1)
        assert held.batches == [batch]
        store.commit_runtime_state(commit().completing_queue_claim(held.completion()))
    assert store.list_queued_work("root") == [poison]


@pytest.mark.parametrize("slot", [EXCL, JOIN])
def test_a_claim_dead_letters_every_exhausted_batch_not_only_those_it_reads(
    backend: Backend, clock: ManualClock, slot: SlotPolicy
) -> None:
    # Which batches are dead letters must not depend on how far a backend reads ready rows for the claim's
    # group (PostgreSQL reads max_batches of them, SQLite until the group is decided): every claim under a
    # policy dead-letters all exhausted ready batches first, also those queued behind the group it takes.
    store = backend.open(PoisonPolicy(max_attempts=1, backoff_base_ms=1_000, backoff_max_ms=1_000, jitter=0.0))
    later = clock() + 10_000
    fresh = store.enqueue_queued_work(draft(text="fresh", slot=slot, available_at_ms=later))
    exhausted = [store.enqueue_queued_work(draft(text=f"poison-{i}", slot=slot)) for i in range(2)]
    for batch in exhausted:  # the only attempt of each fails
        assert _fail_by_expiry(store, clock, ttl=100).batches == [batch]
    clock.advance(later - clock())
    taken = must_claim(store, max_batches=1)
    assert taken.batches == [fresh]
    assert [letter.batch for letter in store.list_dead_letters("root")] == exhausted
    assert store.list_queued_work("root") == [fresh]


def test_a_successful_attempt_completes_and_leaves_no_dead_letter(backend: Backend, clock: ManualClock) -> None:
    store = backend.open(POISON)
    batch = store.enqueue_queued_work(draft())
    _fail_by_expiry(store, clock)
    clock.advance(1_000)
    _fail_by_expiry(store, clock)  # attempt 2 also fails
    clock.advance(1_500)
    held = must_claim(store)  # attempt 3 of 3
    assert held.batches == [batch]
    store.commit_runtime_state(commit(expected=0).completing_queue_claim(held.completion()))
    assert store.list_queued_work("root") == []
    assert store.list_dead_letters("root") == []


def test_abandon_is_a_failed_attempt_that_backs_off_from_now_and_keeps_the_error(
    backend: Backend, clock: ManualClock
) -> None:
    store = backend.open(POISON)
    batch = store.enqueue_queued_work(draft())
    held = must_claim(store)
    clock.advance(10)
    assert store.abandon_queued_work_claim(held, "tool crashed") == 1
    assert claim(store) is None
    clock.advance(999)
    assert claim(store) is None
    clock.advance(1)
    second = must_claim(store, owner="w-2")
    assert store.abandon_queued_work_claim(second) == 1  # no error given: the last one stays
    clock.advance(1_500)
    third = must_claim(store, owner="w-3")
    assert store.abandon_queued_work_claim(third, "x" * 10_000) == 1  # kept, cut to a bounded length
    assert claim(store) is None  # exhausted: dead-lettered by this claim, without waiting
    letter = store.get_dead_letter("root", batch.batch_id)
    assert letter is not None and letter.attempts == 3 and letter.last_owner_id == "w-3"
    assert letter.last_error is not None and letter.last_error.startswith("xxx") and len(letter.last_error) < 10_000


def test_a_hand_back_is_no_attempt_and_offers_the_batch_again_at_once(backend: Backend, clock: ManualClock) -> None:
    store = backend.open(POISON)
    batch = store.enqueue_queued_work(draft())
    for round_ in range(5):  # more hand-backs than the policy allows attempts: none of them counts
        held = must_claim(store, owner=f"h-{round_}")
        assert store.abandon_queued_work_claim(held, counts_as_attempt=False) == 1
        assert store.list_dead_letters("root") == []
    clock.advance(10)
    _fail_by_expiry(store, clock)
    clock.advance(1_000)
    _fail_by_expiry(store, clock)
    clock.advance(1_500)
    last = must_claim(store, owner="w-3")  # attempt 3 of 3: the hand-backs left every attempt to real work
    assert store.abandon_queued_work_claim(last, "failed") == 1
    assert claim(store) is None
    letter = store.get_dead_letter("root", batch.batch_id)
    assert letter is not None and letter.attempts == 3 and letter.last_error == "failed"


def test_a_stale_hand_back_takes_nothing_back(backend: Backend, clock: ManualClock) -> None:
    store = backend.open(POISON)
    batch = store.enqueue_queued_work(draft())
    stale = _fail_by_expiry(store, clock)  # attempt 1, lease run out
    clock.advance(1_000)
    current = must_claim(store, owner="w-2")  # attempt 2
    assert store.abandon_queued_work_claim(stale, counts_as_attempt=False) == 0
    assert claim(store, owner="w-3") is None  # still held by w-2
    with pytest.raises(InvalidInput):
        store.abandon_queued_work_claim(current, counts_as_attempt="no")  # type: ignore[arg-type]
    assert claim(store, owner="w-3") is None  # the refused call released nothing
    assert store.abandon_queued_work_claim(current, "boom") == 1  # attempt 2 failed
    clock.advance(1_500)
    must_claim(store, owner="w-3")  # attempt 3: had the stale hand-back uncounted one, this would not be the last
    clock.advance(TTL)
    assert claim(store) is None
    letter = store.get_dead_letter("root", batch.batch_id)
    assert letter is not None and letter.attempts == 3


def test_renew_moves_the_backoff_with_the_lease(backend: Backend, clock: ManualClock) -> None:
    store = backend.open(POISON)
    store.enqueue_queued_work(draft())
    held = must_claim(store, ttl=100)
    clock.advance(50)
    store.renew_queued_work_claim(held, 100)  # the lease now ends at +150, a retry at +1,150
    clock.advance(100)
    assert claim(store) is None
    clock.advance(999)
    assert claim(store) is None
    clock.advance(1)
    assert must_claim(store).fencing_token > held.fencing_token


def test_a_retry_is_claimed_alone_and_never_takes_its_group_to_the_dead_letters(
    backend: Backend, clock: ManualClock
) -> None:
    store = backend.open(POISON)
    g = MergeKey.group("g")
    a, b, c = (store.enqueue_queued_work(draft(text=t, slot=JOIN, merge=g)) for t in "abc")
    first = must_claim(store, ttl=100)
    assert first.batches == [a, b, c]  # a first attempt joins as always
    clock.advance(100 + 1_000)
    retry = must_claim(store, ttl=100)
    assert retry.batches == [a]  # every batch is a retry now: each goes alone
    store.commit_runtime_state(commit().completing_queue_claim(retry.completion()))
    rest = must_claim(store)
    assert rest.batches == [b]


def test_requeue_puts_a_dead_letter_back_with_attempts_reset(
    store: SessionStore, backend: Backend, clock: ManualClock
) -> None:
    poisoned = backend.open(PoisonPolicy(max_attempts=1, backoff_base_ms=1_000, backoff_max_ms=1_000, jitter=0.0))
    first = poisoned.enqueue_queued_work(draft(text="first"))
    second = poisoned.enqueue_queued_work(draft(text="second"))
    _fail_by_expiry(poisoned, clock)
    held = must_claim(poisoned, max_batches=1)  # dead-letters `first`, takes `second`
    assert held.batches == [second]
    assert [letter.batch for letter in poisoned.list_dead_letters("root")] == [first]
    assert poisoned.requeue_dead_letter("root", second.batch_id) is None  # not a dead letter
    assert poisoned.drop_dead_letter("root", second.batch_id) is None
    assert poisoned.requeue_dead_letter("root", first.batch_id) == first  # same id, same place in the FIFO
    assert poisoned.list_dead_letters("root") == []
    assert poisoned.requeue_dead_letter("root", first.batch_id) is None
    assert poisoned.list_queued_work("root") == [first, second]
    again = must_claim(poisoned, max_batches=1)  # at once: the backoff went with the attempts
    assert again.batches == [first]
    poisoned.commit_runtime_state(commit().completing_queue_claim(again.completion()))
    assert poisoned.list_queued_work("root") == [second]
    assert poisoned.list_dead_letters("root") == []
    assert store.list_dead_letters("root") == []  # the plain store of the test has none


def test_drop_deletes_a_dead_letter_for_good(backend: Backend, clock: ManualClock) -> None:
    store = backend.open(PoisonPolicy(max_attempts=1, jitter=0.0))
    batch = store.enqueue_queued_work(draft(key="source-1"))
    _fail_by_expiry(store, clock)
    assert claim(store) is None
    # A producer retrying its enqueue gets the dead letter back, not a new copy of the poison.
    assert store.enqueue_queued_work(draft(key="source-1")) == batch
    assert store.list_queued_work("root") == []
    assert store.cancel_queued_work_batch("root", batch.batch_id) is None  # cancel is for queued work
    dropped = store.drop_dead_letter("root", batch.batch_id)
    assert dropped is not None and dropped.batch == batch and dropped.attempts == 1
    assert store.list_dead_letters("root") == []
    assert store.get_dead_letter("root", batch.batch_id) is None
    assert store.drop_dead_letter("root", batch.batch_id) is None
    fresh = store.enqueue_queued_work(draft(key="source-1"))  # the source key is free again
    assert fresh.batch_id != batch.batch_id


def test_dead_letters_are_per_session(backend: Backend, clock: ManualClock) -> None:
    store = backend.open(PoisonPolicy(max_attempts=1, jitter=0.0))
    mine = store.enqueue_queued_work(draft("root"))
    theirs = store.enqueue_queued_work(draft("other"))
    _fail_by_expiry(store, clock)
    assert claim(store) is None
    assert [letter.batch for letter in store.list_dead_letters("root")] == [mine]
    assert store.list_dead_letters("other") == []
    assert store.get_dead_letter("other", mine.batch_id) is None
    assert store.requeue_dead_letter("other", mine.batch_id) is None
    assert store.drop_dead_letter("other", mine.batch_id) is None
    assert must_claim(store, "other").batches == [theirs]


def test_claim_by_batch_ids_sets_exhausted_batches_aside(backend: Backend, clock: ManualClock) -> None:
    store = backend.open(PoisonPolicy(max_attempts=1, jitter=0.0))
    poison = store.enqueue_queued_work(draft(text="poison"))
    after = store.enqueue_queued_work(draft(text="after"))
    _fail_by_expiry(store, clock)
    assert store.claim_ready_queued_work_by_batch_ids("root", "o", IDLE, TTL, [poison.batch_id]) is None
    assert [letter.batch for letter in store.list_dead_letters("root")] == [poison]
    held = store.claim_ready_queued_work_by_batch_ids("root", "o", IDLE, TTL, [after.batch_id])
    assert held is not None and held.batches == [after]


def test_jitter_only_shortens_the_backoff(backend: Backend, clock: ManualClock) -> None:
    policy = PoisonPolicy(max_attempts=None, backoff_base_ms=10_000, backoff_max_ms=10_000, jitter=0.5)
    store = backend.open(policy)
    for i in range(8):
        store.enqueue_queued_work(draft(text=f"b-{i}"))
    start = clock()
    for _ in range(8):
        must_claim(store, ttl=100, max_batches=1)
    clock.advance(100)
    assert claim(store) is None  # nobody waits less than half the backoff
    clock.advance(5_000 - 1)
    assert claim(store) is None
    clock.set(start + 100 + 10_000)
    retried = 0
    while (held := claim(store, max_batches=1)) is not None:  # and everybody is back after the full backoff
        retried += 1
        store.commit_runtime_state(commit().completing_queue_claim(held.completion()))
    assert retried == 8


def test_without_a_policy_nothing_backs_off_or_is_dead_lettered(store: SessionStore, clock: ManualClock) -> None:
    batch = store.enqueue_queued_work(draft())
    for _ in range(20):
        _fail_by_expiry(store, clock)
    held = must_claim(store)
    store.abandon_queued_work_claim(held, "still failing")
    assert must_claim(store).batches == [batch]
    assert store.list_dead_letters("root") == []


def test_dead_letters_survive_reopen_export_and_import(backend: Backend, clock: ManualClock) -> None:
    store = backend.open(PoisonPolicy(max_attempts=1, jitter=0.0))
    batch = store.enqueue_queued_work(draft())
    held = must_claim(store, ttl=100, owner="w")
    store.abandon_queued_work_claim(held, "boom")
    assert claim(store) is None
    letters = store.list_dead_letters("root")
    assert [(letter.batch, letter.last_error) for letter in letters] == [(batch, "boom")]
    assert backend.reopen(store).list_dead_letters("root") == letters
    target = backend.open()
    target.import_session(store.export_session())  # a fork leaves the queue behind; an export carries it
    assert target.list_dead_letters("root") == letters
    assert target.requeue_dead_letter("root", batch.batch_id) == batch
    assert must_claim(target).batches == [batch]
    assert store.list_dead_letters("root") == letters  # the source is untouched


def test_bad_poison_arguments_raise_invalid_input_and_write_nothing(backend: Backend, clock: ManualClock) -> None:
    store = backend.open(POISON)
    store.enqueue_queued_work(draft())
    held = must_claim(store)
    before = snapshot(store)
    calls: list[tuple[str, Callable[[], object]]] = [
        ("error", lambda: store.abandon_queued_work_claim(held, 42)),  # type: ignore[arg-type]
        ("error", lambda: store.abandon_queued_work_claim(held, "bad\x00text")),
        ("batch_id", lambda: store.requeue_dead_letter("root", 7)),  # type: ignore[arg-type]
        ("batch_id", lambda: store.drop_dead_letter("root", None)),  # type: ignore[arg-type]
        ("session_id", lambda: store.get_dead_letter(b"root", "qwb:x")),  # type: ignore[arg-type]
        ("session_id", lambda: store.list_dead_letters(["root"])),  # type: ignore[arg-type]
    ]
    for field, call in calls:
        with pytest.raises(InvalidInput) as caught:
            call()
        assert field in caught.value.what, (field, caught.value.what)
        assert snapshot(store) == before


# ===========================================================================
# Input validation: typed errors naming the field, nothing written

_BAD_MS: list[Any] = [-1, 2**63, 1.5, True, "10", None]


def _bad_time_calls() -> list[tuple[str, str, Callable[[SessionStore, Any], object]]]:
    return [
        (
            "available_at_ms",
            "available_at_ms",
            lambda s, v: s.enqueue_queued_work(msgspec.structs.replace(draft(), available_at_ms=v)),
        ),
        ("lease_ttl_ms", "lease_ttl_ms", lambda s, v: s.claim_ready_queued_work("root", "o", IDLE, v, 1)),
        (
            "by_ids_lease_ttl_ms",
            "lease_ttl_ms",
            lambda s, v: s.claim_ready_queued_work_by_batch_ids("root", "o", IDLE, v, ["qwb:x"]),
        ),
        ("max_batches", "max_batches", lambda s, v: s.claim_ready_queued_work("root", "o", IDLE, TTL, v)),
        ("intent_at_epoch_ms", "intent_at_epoch_ms", lambda s, v: s.record_intent(intent("att", v))),
        ("older_than_epoch_ms", "older_than_epoch_ms", lambda s, v: s.list_uncommitted(v)),
    ]


@pytest.mark.parametrize("call", _bad_time_calls(), ids=lambda call: call[0])
def test_invalid_times_and_counts_raise_invalid_input(store: SessionStore, call: Any) -> None:
    _, field_name, invoke = call
    store.enqueue_queued_work(draft(key="keep"))
    before = snapshot(store)
    for value in _BAD_MS:
        try:
            invoke(store, value)
        except InvalidInput as exc:
            assert field_name in exc.what, (value, exc.what)
            assert isinstance(exc, ValueError)
        else:
            pytest.fail(f"{field_name}={value!r} did not raise InvalidInput")
    assert snapshot(store) == before


def test_renew_rejects_an_invalid_ttl(store: SessionStore) -> None:
    store.enqueue_queued_work(draft())
    held = must_claim(store)
    before = snapshot(store)
    bad: list[Any] = [-1, 2**63, 2**64 - 1, 0.5]
    for value in bad:
        with pytest.raises(InvalidInput):
            store.renew_queued_work_claim(held, value)
    assert snapshot(store) == before


def _bad_id_calls() -> list[tuple[str, Callable[[SessionStore], object]]]:
    return [
        ("commit.session_id", lambda s: s.commit_runtime_state(commit(""))),
        (
            "node_id",
            lambda s: s.commit_runtime_state(commit(graph=GraphDelta.append([message("", "user", "x")], None))),
        ),
        (
            "parent_node_id",
            lambda s: s.commit_runtime_state(commit(graph=GraphDelta.append([message("n", "user", "x", "")], "n"))),
        ),
        ("turn_id", lambda s: s.commit_runtime_state(commit().with_turn_commit(stamp("")))),
        ("committed_attachment_ids", lambda s: s.commit_runtime_state(commit().with_committed_attachments([""]))),
        ("draft.session_id", lambda s: s.enqueue_queued_work(draft(""))),
        ("source_key", lambda s: s.enqueue_queued_work(draft(key=""))),
        ("owner_id", lambda s: s.claim_ready_queued_work("root", "", IDLE, TTL, 1)),
        ("session_id", lambda s: s.claim_ready_queued_work("", "o", IDLE, TTL, 1)),
        ("batch_ids", lambda s: s.claim_ready_queued_work_by_batch_ids("root", "o", IDLE, TTL, [""])),
        ("batch_id", lambda s: s.cancel_queued_work_batch("root", "")),
        ("session_id", lambda s: s.list_queued_work("")),
        ("session_id", lambda s: s.list_pending_queued_work("")),
        ("session_id", lambda s: s.list_dead_letters("")),
        ("batch_id", lambda s: s.get_dead_letter("root", "")),
        ("batch_id", lambda s: s.requeue_dead_letter("root", "")),
        ("session_id", lambda s: s.drop_dead_letter("", "qwb:x")),
        ("attachment_id", lambda s: s.record_intent(intent("", 1))),
        ("session_id", lambda s: s.commit_refs("", ["a"])),
        ("attachment_ids", lambda s: s.commit_refs("root", [""])),
        ("attachment_id", lambda s: s.forget("")),
        ("module_ref", lambda s: s.put_module_artifact("", b"x")),
        ("module_ref", lambda s: s.get_module_artifact("")),
        ("node_id", lambda s: s.load_node("")),
        ("node_ids", lambda s: s.tombstone_nodes([""])),
        ("leaf_node_id", lambda s: s.load_session(SessionReadScope.active_path(""))),
        ("meta.session_id", lambda s: s.save_session_meta(msgspec.structs.replace(_meta(), session_id=""))),
    ]


@pytest.mark.parametrize("call", _bad_id_calls(), ids=lambda call: call[0])
def test_empty_ids_raise_invalid_input(store: SessionStore, call: Any) -> None:
    field_name, invoke = call
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append(chain("a"), "a")))
    store.enqueue_queued_work(draft())
    before = snapshot(store)
    with pytest.raises(InvalidInput) as caught:
        invoke(store)
    assert field_name.split(".")[-1] in caught.value.what
    assert snapshot(store) == before
    assert store.load_session_meta() is None


def test_invalid_commit_fields_raise_invalid_input(store: SessionStore) -> None:
    store.commit_runtime_state(commit(expected=0))
    before = snapshot(store)
    invalid = [
        ("expected_head_revision", commit(expected=-1)),
        (
            "node_id",
            commit(expected=1, graph=GraphDelta.append([message("d", "user", "1"), message("d", "user", "2")], "d")),
        ),
        ("payload", commit(expected=1, graph=GraphDelta.append([SessionNode(node_id="n", payload={1j})], "n"))),
        ("config", commit(expected=1, config={"bad": object()})),
    ]
    for field_name, bad in invalid:
        with pytest.raises(InvalidInput) as caught:
            store.commit_runtime_state(bad)
        assert field_name in caught.value.what, caught.value.what
        assert snapshot(store) == before


# ===========================================================================
# Durability: data survives a reopen (through the one handle for harnesses with durable = False)


def test_reopen_preserves_everything(store: SessionStore, backend: Backend) -> None:
    meta = SessionMeta(session_id="root", session_name="kept", created_at="2026-01-01T00:00:00Z", model="m")
    store.save_session_meta(meta)
    store.put_module_artifact("mod:kept", b"module")
    blob = store.put_blob(b"raw blob")
    stamped = commit(
        expected=0,
        graph=GraphDelta.append(chain("a", "b", "c"), "c"),
        checkpoint=HydratedCheckpoint(
            turn_state={"turn_index": 1}, tool_state={"generation": 77}, execution_state=b"vm"
        ),
        usage_deltas=[usage("turn", "m", i=3, o=4)],
        agent_frames=[{"frame_id": "f", "execution_state_snapshot": b"frame"}],
    ).with_turn_commit(stamp("turn-1"))
    first = store.commit_runtime_state(stamped)
    store.tombstone_nodes(["b"])
    batch = store.enqueue_queued_work(draft(text="survives reopen", key="reopen:queued"))
    store.record_intent(intent("att", 100))

    reopened = backend.reopen(store)
    assert reopened.load_session() == store.load_session()
    assert reopened.load_session(SessionReadScope.active_path("c")) == store.load_session(
        SessionReadScope.active_path("c")
    )
    read = loaded(reopened)
    assert node_ids(read) == ["a", "c"]
    assert read.checkpoint is not None and read.checkpoint.tool_state == {"generation": 77}
    assert read.token_ledger == [usage("turn", "m", i=3, o=4)]
    assert reopened.load_node("b") is None
    assert reopened.load_session_meta() == meta
    assert reopened.load_picker_info() == store.load_picker_info()
    assert reopened.get_module_artifact("mod:kept") == b"module"
    assert reopened.get_blob(blob) == b"raw blob"
    assert reopened.list_queued_work("root") == [batch]
    assert text_of(reopened.list_queued_work("root")[0]) == "survives reopen"
    assert uncommitted_ids(reopened) == ["att"]
    assert reopened.commit_runtime_state(stamped) == first  # the turn stamp is durable too
    with pytest.raises(RuntimeTurnCommitConflict):
        reopened.commit_runtime_state(commit(expected=1).with_turn_commit(stamp("turn-1", "h-other")))
    assert reopened.commit_runtime_state(commit(expected=1)).head_revision == 2
    assert revision(store) == 2  # the first handle sees the second handle's commit


def test_reopened_handles_share_compare_and_set(store: SessionStore, backend: Backend) -> None:
    other = backend.reopen(store)
    store.commit_runtime_state(commit(expected=0))
    with pytest.raises(HeadRevisionConflict) as caught:
        other.commit_runtime_state(commit(expected=0))
    assert (caught.value.expected, caught.value.actual) == (0, 1)
    with pytest.raises(SessionBindingMismatch):
        other.commit_runtime_state(commit("someone-else", 1))
    assert other.commit_runtime_state(commit(expected=1)).head_revision == 2
    assert revision(store) == 2


def test_claims_survive_reopen_and_work_across_handles(store: SessionStore, backend: Backend) -> None:
    batch = store.enqueue_queued_work(draft())
    held = must_claim(store)
    other = backend.reopen(store)
    assert claim(other, owner="thief") is None
    assert other.list_pending_queued_work("root") == []
    renewed = other.renew_queued_work_claim(held, TTL)
    assert renewed.batches == [batch]
    other.commit_runtime_state(commit(expected=0).completing_queue_claim(renewed.completion()))
    assert store.list_queued_work("root") == []


def test_fencing_and_enqueue_seq_keep_growing_across_reopen(store: SessionStore, backend: Backend) -> None:
    first = store.enqueue_queued_work(draft(text="1"))
    last = store.enqueue_queued_work(draft(text="2"))
    held = must_claim(store, max_batches=1)
    store.abandon_queued_work_claim(held)
    store.cancel_queued_work_batch("root", last.batch_id)
    other = backend.reopen(store)
    later = other.enqueue_queued_work(draft(text="3"))
    assert later.enqueue_seq > last.enqueue_seq
    again = must_claim(other, max_batches=1)
    assert again.batches == [first]
    assert again.fencing_token > held.fencing_token


# ===========================================================================
# Damaged stored data (through the harness's damage hook): CorruptData naming what is broken, never a
# crash, a silent skip of live data, or a write; everything else keeps working.

NOT_MSGPACK = b"\xc1"
TRUNCATED = b"\x92\x01"  # an array announcing two items and holding one
WRONG_SHAPE = msgspec.msgpack.encode({"unexpected": ["shape"]})  # a map, but not a head, relation or record
RECORD_DAMAGE = {"not-msgpack": NOT_MSGPACK, "truncated": TRUNCATED, "wrong-shape": WRONG_SHAPE}


def _populate(store: SessionStore) -> RuntimeCommitResult:
    store.save_session_meta(_meta())
    store.commit_runtime_state(
        commit(expected=0, graph=GraphDelta.append(chain("u1", "a1"), "a1"), turn_commit=stamp("turn-1", "h1"))
    )
    return store.commit_runtime_state(
        commit(
            expected=1,
            graph=GraphDelta.append([message("u2", "user", "two", "a1")], "u2"),
            checkpoint=HydratedCheckpoint(turn_state={"t": 2}, tool_state={"log": ["x" * 50] * 200}),
            usage_deltas=[usage("turn", "m", i=5)],
            turn_commit=stamp("turn-2", "h2"),
        )
    )


@pytest.mark.parametrize("damage", sorted(RECORD_DAMAGE))
def test_damaged_head_body_is_corrupt_data_and_gc_deletes_nothing(
    store: SessionStore, harness: BackendHarness, clock: ManualClock, damage: str
) -> None:
    _populate(store)
    orphan = store.put_blob(b"orphan")
    harness.damage(store, "head.body", None, RECORD_DAMAGE[damage])
    with pytest.raises(CorruptData) as raised:
        store.load_session()
    assert "head" in raised.value.what
    clock.advance(1)
    report = store.gc_unreachable()
    assert report.skipped_reason and report.deleted_blob_count == 0
    assert store.get_blob(orphan) == b"orphan"
    assert store.load_node("u1") is not None  # the graph itself is unaffected


@pytest.mark.parametrize("damage", sorted(RECORD_DAMAGE))
def test_damaged_usage_ledger_is_corrupt_data(store: SessionStore, harness: BackendHarness, damage: str) -> None:
    _populate(store)
    harness.damage(store, "head.usage_ledger", None, RECORD_DAMAGE[damage])
    with pytest.raises(CorruptData) as raised:
        store.load_session()
    assert raised.value.what == "usage ledger"


@pytest.mark.parametrize("damage", sorted(RECORD_DAMAGE))
def test_damaged_node_names_the_node(store: SessionStore, harness: BackendHarness, damage: str) -> None:
    _populate(store)
    harness.damage(store, "node.body", "a1", RECORD_DAMAGE[damage])
    with pytest.raises(CorruptData, match="a1"):
        store.load_node("a1")
    with pytest.raises(CorruptData, match="a1"):
        store.load_session()
    assert store.load_node("u2") is not None


@pytest.mark.parametrize("damage", ["flipped", "empty", "wrong-bytes"])
def test_damaged_blob_content_fails_its_hash(store: SessionStore, harness: BackendHarness, damage: str) -> None:
    result = _populate(store)
    tool_ref = result.manifest.tool_state_ref
    plain = store.put_blob(b"plain bytes")
    assert tool_ref is not None
    value = {"flipped": b"\x00" * 16, "empty": b"", "wrong-bytes": b"plain bytes!"}[damage]
    harness.damage(store, "blob.content", plain, value)
    with pytest.raises(CorruptData, match=plain):
        store.get_blob(plain)
    harness.damage(store, "blob.content", tool_ref, value)
    with pytest.raises(CorruptData, match=tool_ref):
        store.load_session()
    assert store.get_blob(result.checkpoint_ref) is not None


def test_gc_refuses_when_the_rooted_manifest_is_damaged(
    store: SessionStore, harness: BackendHarness, clock: ManualClock
) -> None:
    result = _populate(store)
    orphan = store.put_blob(b"orphan")
    harness.damage(store, "blob.content", result.checkpoint_ref, NOT_MSGPACK)
    clock.advance(1)
    report = store.gc_unreachable()
    assert report.skipped_reason and report.deleted_blob_count == 0
    assert store.get_blob(orphan) == b"orphan"


@pytest.mark.parametrize("damage", sorted(RECORD_DAMAGE))
def test_damaged_meta_relation_is_corrupt_data(store: SessionStore, harness: BackendHarness, damage: str) -> None:
    _populate(store)
    harness.damage(store, "meta.relation", None, RECORD_DAMAGE[damage])
    with pytest.raises(CorruptData) as raised:
        store.load_session_meta()
    assert raised.value.what == "session meta relation"
    with pytest.raises(CorruptData):
        store.load_picker_info()
    assert loaded(store).head_revision == 2  # the session itself is unaffected


@pytest.mark.parametrize("damage", sorted(RECORD_DAMAGE))
def test_damaged_turn_record_fails_its_replay_and_writes_nothing(
    store: SessionStore, harness: BackendHarness, damage: str
) -> None:
    _populate(store)
    harness.damage(store, "turn.record", "turn-2", RECORD_DAMAGE[damage])
    before = snapshot(store)
    replay = commit(expected=1, turn_commit=stamp("turn-2", "h2"))
    with pytest.raises(CorruptData, match="turn-2"):
        store.commit_runtime_state(replay)
    assert snapshot(store) == before
    assert store.commit_runtime_state(commit(expected=2, turn_commit=stamp("turn-3", "h3"))).head_revision == 3


@pytest.mark.parametrize("max_batches", [1, 8])
@pytest.mark.parametrize("damage", sorted(RECORD_DAMAGE))
def test_damaged_queued_row_blocks_nobody_and_is_named(
    store: SessionStore, harness: BackendHarness, damage: str, max_batches: int
) -> None:
    # max_batches=1: a backend that reads only as many ready rows as the claim may take must read further when
    # a row of its window cannot be decoded.
    bad = store.enqueue_queued_work(draft("root", "bad", slot=JOIN))
    good = store.enqueue_queued_work(draft("root", "good"))
    harness.damage(store, "batch.payloads", bad.batch_id, RECORD_DAMAGE[damage])
    assert ids(store.list_queued_work("root")) == [good.batch_id]
    assert ids(store.list_pending_queued_work("root")) == [good.batch_id]
    taken = must_claim(store, max_batches=max_batches)
    assert taken.batch_ids == [good.batch_id], "a damaged row blocks nobody"
    with pytest.raises(CorruptData, match=bad.batch_id):
        store.cancel_queued_work_batch("root", bad.batch_id)
    with pytest.raises(CorruptData, match=bad.batch_id):
        store.claim_ready_queued_work_by_batch_ids("root", "w", IDLE, TTL, [bad.batch_id])


def test_many_damaged_queued_rows_ahead_block_nobody(store: SessionStore, harness: BackendHarness) -> None:
    bad = [store.enqueue_queued_work(draft("root", f"bad-{i}", slot=JOIN)) for i in range(11)]
    good = [store.enqueue_queued_work(draft("root", f"good-{i}", slot=JOIN)) for i in range(3)]
    for batch in bad:
        harness.damage(store, "batch.payloads", batch.batch_id, NOT_MSGPACK)
    assert must_claim(store, max_batches=1).batch_ids == [good[0].batch_id]
    assert must_claim(store, max_batches=2).batch_ids == [good[1].batch_id, good[2].batch_id]
    assert claim(store, max_batches=1) is None
    assert store.list_queued_work("root") == good


def test_a_damaged_store_still_exports_nothing_silently(store: SessionStore, harness: BackendHarness) -> None:
    result = _populate(store)
    harness.damage(store, "blob.content", result.checkpoint_ref, b"tampered")
    with pytest.raises(CorruptData):
        store.export_session()


# ===========================================================================
# Hostile values at every nesting level: InvalidInput naming the field, and nothing written.


# Typed as Any so that the table can hand the store what a careless caller would.
_HOSTILE_NONE: Any = None
_HOSTILE_INT: Any = 5


def _with_usage(usage: Any) -> RuntimeCommit:
    return commit(expected=1, usage_deltas=[TokenLedgerEntry(source="s", model="m", usage=usage)])


def _enqueue_input(**fields: Any) -> Callable[[SessionStore], object]:
    payload = QueuedWorkPayload.turn_input(TurnInput(**fields))
    return lambda store: store.enqueue_queued_work(QueuedWorkBatchDraft.new("root", ESB, EXCL, [payload]))


HOSTILE_VALUES: list[tuple[str, Callable[[SessionStore], object], str]] = [
    ("usage-not-a-struct", lambda s: s.commit_runtime_state(_with_usage({"input_tokens": 1})), "usage"),
    ("usage-none", lambda s: s.commit_runtime_state(_with_usage(None)), "usage"),
    ("usage-counter-text", lambda s: s.commit_runtime_state(_with_usage(TokenUsage(input_tokens="1"))), "input_tokens"),  # type: ignore[arg-type]
    (
        "usage-counter-2**63",
        lambda s: s.commit_runtime_state(_with_usage(TokenUsage(output_tokens=2**63))),
        "output_tokens",
    ),
    (
        "usage-counter-bool",
        lambda s: s.commit_runtime_state(_with_usage(TokenUsage(reasoning_tokens=True))),
        "reasoning_tokens",
    ),
    ("turn-input-item-int", _enqueue_input(items=[42]), "items"),
    ("turn-input-text-int", _enqueue_input(items=[TextItem(text=5)]), "text"),  # type: ignore[arg-type]
    ("turn-input-image-not-bytes", _enqueue_input(image_blobs={"i": "x"}), "image_blobs"),
    ("turn-input-trace-int", _enqueue_input(trace_turn_id=5), "trace_turn_id"),
    (
        "merge-key-surrogate",
        lambda s: s.enqueue_queued_work(draft(merge=MergeKey.group("\ud800"), slot=JOIN)),
        "merge_key",
    ),
    (
        "node-timestamp-negative",
        lambda s: s.commit_runtime_state(
            commit(expected=1, graph=GraphDelta.append([SessionNode(node_id="n", timestamp_ms=-1)], "n"))
        ),
        "timestamp_ms",
    ),
    (
        "node-kind-int",
        lambda s: s.commit_runtime_state(
            commit(expected=1, graph=GraphDelta.append([SessionNode(node_id="n", kind=5)], "n"))  # type: ignore[arg-type]
        ),
        "kind",
    ),
    (
        "node-caused-by-unencodable",
        lambda s: s.commit_runtime_state(
            commit(expected=1, graph=GraphDelta.append([SessionNode(node_id="n", caused_by={1j})], "n"))
        ),
        "caused_by",
    ),
    (
        "completion-batch-ids-none",
        lambda s: s.commit_runtime_state(
            msgspec.structs.replace(
                commit(expected=1),
                completed_queue_claims=[
                    QueuedWorkCompletion(
                        session_id="root", claim_id="c", lease_token="t", batch_ids=_HOSTILE_NONE, fencing_token=1
                    )
                ],
            )
        ),
        "batch_ids",
    ),
    (
        "attachment-id-int",
        lambda s: s.commit_runtime_state(commit(expected=1, committed_attachment_ids=[_HOSTILE_INT])),
        "committed_attachment_ids",
    ),
    (
        "plugin-revision-negative",
        lambda s: s.commit_runtime_state(
            commit(expected=1, checkpoint=HydratedCheckpoint(plugin_snapshot_revision=-1))
        ),
        "plugin_snapshot_revision",
    ),
    (
        "relation-kind-unknown",
        lambda s: s.save_session_meta(
            msgspec.structs.replace(_meta(), relation=SessionRelation(kind="grandchild"))  # type: ignore[arg-type]
        ),
        "relation",
    ),
    (
        "descriptor-hints-text",
        lambda s: s.put_artifact_blob(
            BlobArtifactDescriptor(kind=BlobArtifactDescriptor.tool_state_snapshot().kind, hints={"compressible"}),  # type: ignore[arg-type]
            b"x",
        ),
        "hints",
    ),
    (
        "usage-source-nul",
        lambda s: s.commit_runtime_state(commit(expected=1, usage_deltas=[usage("s\x00", "m")])),
        "source",
    ),
    ("merge-key-nul", lambda s: s.enqueue_queued_work(draft(merge=MergeKey.group("g\x00"), slot=JOIN)), "merge_key"),
    ("meta-cwd-nul", lambda s: s.save_session_meta(msgspec.structs.replace(_meta(), cwd="/a\x00b")), "cwd"),
    ("meta-model-nul", lambda s: s.save_session_meta(msgspec.structs.replace(_meta(), model="m\x00")), "model"),
    (
        "intent-uri-nul",
        lambda s: s.record_intent(msgspec.structs.replace(intent("att", 1), canonical_uri="sha256:\x00")),
        "canonical_uri",
    ),
    ("scope-kind-unknown", lambda s: s.load_session(SessionReadScope(kind="weird")), "scope"),  # type: ignore[arg-type]
    ("config-unencodable", lambda s: s.commit_runtime_state(commit(expected=1, config={"x": object()})), "config"),
]


@pytest.mark.parametrize(
    ("call", "field"), [(c, f) for _, c, f in HOSTILE_VALUES], ids=[n for n, _, _ in HOSTILE_VALUES]
)
def test_hostile_values_are_invalid_input_naming_the_field_and_write_nothing(
    store: SessionStore, call: Callable[[SessionStore], object], field: str
) -> None:
    store.save_session_meta(_meta())
    store.commit_runtime_state(commit(expected=0))
    before = (snapshot(store), store.load_session_meta())
    with pytest.raises(InvalidInput) as raised:
        call(store)
    assert field in raised.value.what, f"{raised.value.what!r} does not name {field!r}"
    assert (snapshot(store), store.load_session_meta()) == before


def test_ids_up_to_the_limit_work_and_longer_ones_are_invalid_input(store: SessionStore) -> None:
    """Ids are index keys on every backend: 768 UTF-8 bytes work everywhere, more is InvalidInput."""
    longest = "é" * 384  # 768 bytes
    node = message(longest, "user", "hi")
    stamped = commit(expected=0, graph=GraphDelta.append([node], longest), turn_commit=stamp(longest, "h"))
    assert store.commit_runtime_state(stamped).head_revision == 1
    assert store.load_node(longest) is not None
    assert store.enqueue_queued_work(draft(key=longest)).source_key == longest
    before = snapshot(store)
    with pytest.raises(InvalidInput) as raised:
        store.commit_runtime_state(
            commit(expected=1, graph=GraphDelta.append([message(longest + "x", "user", "")], None))
        )
    assert "node_id" in raised.value.what
    assert snapshot(store) == before


def test_nul_in_a_message_payload_round_trips_and_reads_as_replacement_in_the_picker(store: SessionStore) -> None:
    """Payloads are encoded, so any text fits; the picker text is a text column and shows NUL as U+FFFD."""
    store.save_session_meta(_meta())
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append([message("u", "user", "a\x00b")], "u")))
    loaded = store.load_node("u")
    assert loaded is not None and loaded.payload["parts"][0]["text"] == "a\x00b"
    info = store.load_picker_info()
    assert info is not None and info.first_user_message == "a\ufffdb"


def test_one_shot_iterables_in_a_commit_are_applied_in_full(store: SessionStore) -> None:
    """A generator given for a commit's collections is consumed once and every item applies (exactly-once)."""
    store.record_intent(intent("att-1", 1))
    store.enqueue_queued_work(draft())
    held = must_claim(store)
    result = store.commit_runtime_state(
        msgspec.structs.replace(
            commit(expected=0),
            completed_queue_claims=(completion for completion in [held.completion()]),
            committed_attachment_ids=(attachment for attachment in ["att-1"]),
            usage_deltas=(entry for entry in [usage("s", "m", i=3)]),
        )
    )
    assert result.head_revision == 1
    assert store.list_queued_work("root") == [], "the completed batch is consumed"
    assert uncommitted_ids(store) == [], "the attachment is committed"
    assert loaded(store).token_ledger == [usage("s", "m", i=3)]


# Every test above, and what a backend's test module needs (kept last: it lists the tests defined above).


# ===========================================================================
# The node index, composite blobs, blobs and tombstones inside a commit, staged writes, ancestor walks
# (layout revision 4 / PostgreSQL schema 2: what framework adapters build on)


def record(node_id: str, lane: str, key: str, parent: str | None = None, **tags: Any) -> SessionNode:
    """An indexed, non-message node (a checkpoint-like record)."""
    return SessionNode(
        node_id=node_id, parent_node_id=parent, kind="rec", payload={"k": key}, lane=lane, sort_key=key, tags=tags
    )


def queried(store: SessionStore, **query: Any) -> list[str]:
    return [node.node_id for node in store.query_nodes(**query)]


def _records(store: SessionStore) -> None:
    nodes = [
        record("a1", "", "0001", step=1, source="input"),
        record("a2", "", "0002", "a1", step=2, source="loop", run="r1"),
        record("a3", "", "0003", "a2", step=3, source="loop", run="r2"),
        record("b1", "sub:x", "0002", step=1, source="loop", run="r1"),
        message("m1", "user", "hello"),
    ]
    store.commit_runtime_state(commit(graph=GraphDelta.append(nodes, "a3")))


def test_indexed_node_fields_round_trip(store: SessionStore) -> None:
    node = SessionNode(
        node_id="n1",
        kind="rec",
        lane="ns|a:b",
        sort_key="ü-0001",
        tags={"s": "x", "i": -(2**63), "f": 1.5, "b": True, "z": None},
        blob_refs=["r" * 64],
    )
    store.commit_runtime_state(commit(graph=GraphDelta.append([node], "n1")))
    assert store.load_node("n1") == node
    assert loaded(store).graph.nodes == [node]
    plain = message("m1", "user", "hi")
    store.commit_runtime_state(commit(graph=GraphDelta.append([plain], "m1")))
    assert store.load_node("m1") == plain  # defaults stay defaults


def test_query_nodes_lists_the_largest_sort_key_first(store: SessionStore) -> None:
    _records(store)
    assert queried(store, kind="rec") == ["a3", "b1", "a2", "a1"]  # equal keys: later insertion first
    assert queried(store) == ["a3", "b1", "a2", "a1", "m1"]  # no sort key: after the keyed ones
    assert queried(store, kind="message") == ["m1"]
    assert queried(store, kind="nothing") == []


def test_query_nodes_filters_by_lane_sort_key_tags_and_limit(store: SessionStore) -> None:
    _records(store)
    assert queried(store, lane="") == ["a3", "a2", "a1"]
    assert queried(store, lane="sub:x") == ["b1"]
    assert queried(store, lane="none") == []
    assert queried(store, sort_before="0003") == ["b1", "a2", "a1"]
    assert queried(store, lane="", sort_before="0002") == ["a1"]
    assert queried(store, sort_key="0002") == ["b1", "a2"]
    assert queried(store, tags={"run": "r1"}) == ["b1", "a2"]
    assert queried(store, tags={"run": "r1", "step": 2}) == ["a2"]
    assert queried(store, tags={"run": "r1", "step": "2"}) == []  # values compare with their type
    assert queried(store, tags={"step": True}) == []
    assert queried(store, tags={"source": "loop"}, limit=2) == ["a3", "b1"]
    assert queried(store, kind="rec", limit=0) == []
    assert queried(store, kind="rec", limit=1) == ["a3"]


def test_query_nodes_sees_only_live_nodes_and_current_tags(store: SessionStore) -> None:
    _records(store)
    store.tombstone_nodes(["a2"])
    assert queried(store, tags={"run": "r1"}) == ["b1"]
    store.commit_runtime_state(commit(graph=GraphDelta.append([record("a2", "", "0002", "a1", run="r9")], "a3")))
    assert queried(store, tags={"run": "r1"}) == ["b1"]  # a re-append replaces the tags
    assert queried(store, tags={"run": "r9"}) == ["a2"]
    store.vacuum()
    assert queried(store, tags={"run": "r9"}) == ["a2"]


def test_query_nodes_rejects_bad_arguments(store: SessionStore) -> None:
    bad_tags: list[Any] = [{"k": [1]}, {"k": {"a": 1}}, {1: "x"}, {"": 1}, {"k": float("nan")}, {"k": 2**64}]
    for bad in bad_tags:
        with pytest.raises(InvalidInput):
            store.query_nodes(tags=bad)
    for bad_node in (
        SessionNode(node_id="x", tags={"k": [1]}),  # type: ignore[dict-item]
        SessionNode(node_id="x", lane=3),  # type: ignore[arg-type]
        SessionNode(node_id="x", sort_key=b"k"),  # type: ignore[arg-type]
        SessionNode(node_id="x", blob_refs=[""]),
    ):
        with pytest.raises(InvalidInput):
            store.commit_runtime_state(commit(graph=GraphDelta.append([bad_node], "x")))
    with pytest.raises(InvalidInput):
        store.query_nodes(limit=-1)
    assert store.load_session() is None


def test_commit_writes_new_blobs_and_tombstones_atomically(store: SessionStore) -> None:
    store.commit_runtime_state(commit(expected=0, graph=GraphDelta.append(chain("u1", "u2", "u3"), "u3")))
    blob = NewBlob(content=b"value" * 100, descriptor=BlobArtifactDescriptor.tool_state_snapshot())
    result = store.commit_runtime_state(
        commit(expected=1, graph=GraphDelta.unchanged("u2"), new_blobs=[blob], tombstone_node_ids=["u3", "zz"])
    )
    assert result.head_revision == 2
    assert store.get_blob(sha256(blob.content)) == blob.content
    assert store.load_node("u3") is None
    assert store.graph_node_count() == 2
    picker_before = store.load_session()
    failed = NewBlob(content=b"never stored")
    with pytest.raises(HeadRevisionConflict):
        store.commit_runtime_state(commit(expected=1, new_blobs=[failed], tombstone_node_ids=["u1"]))
    assert store.get_blob(sha256(failed.content)) is None
    assert store.load_session() == picker_before
    with pytest.raises(InvalidInput):
        store.commit_runtime_state(commit(new_blobs=[NewBlob(content="text")]))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        store.commit_runtime_state(commit(new_blobs=[NewBlob(content=b"x", children=[""])]))


def test_tombstoning_in_a_commit_sees_the_commits_own_nodes(store: SessionStore) -> None:
    store.commit_runtime_state(commit(graph=GraphDelta.append(chain("u1", "u2"), "u1"), tombstone_node_ids=["u2"]))
    assert node_ids(loaded(store)) == ["u1"]
    assert store.graph_node_count() == 1
    assert store.load_picker_info() is None or store.load_picker_info() is not None  # no metadata: either is fine


def test_gc_keeps_blobs_named_by_live_nodes_and_everything_they_reach(store: SessionStore, clock: ManualClock) -> None:
    leaf, mid, root, orphan = b"leaf" * 50, b"mid" * 50, b"root" * 50, b"orphan" * 50
    blobs = [
        NewBlob(content=leaf),
        NewBlob(content=mid, children=[sha256(leaf)]),
        NewBlob(content=root, children=[sha256(mid), sha256(b"never stored")]),
        NewBlob(content=orphan, children=[sha256(leaf)]),
    ]
    holder = SessionNode(node_id="h", kind="rec", blob_refs=[sha256(root)])
    store.commit_runtime_state(commit(graph=GraphDelta.append([holder], "h"), new_blobs=blobs))
    clock.advance(1)
    report = store.gc_unreachable()
    assert report.skipped_reason is None
    assert [store.get_blob(sha256(c)) is not None for c in (leaf, mid, root, orphan)] == [True, True, True, False]
    store.tombstone_nodes(["h"])
    clock.advance(1)
    store.gc_unreachable()
    assert [store.get_blob(sha256(c)) for c in (leaf, mid, root)] == [None, None, None]


def test_gc_keeps_a_blob_shared_by_a_tombstoned_and_a_live_node(store: SessionStore, clock: ManualClock) -> None:
    shared = b"shared" * 40
    nodes = [
        SessionNode(node_id="a", kind="rec", blob_refs=[sha256(shared)]),
        SessionNode(node_id="b", kind="rec", blob_refs=[sha256(shared)]),
    ]
    store.commit_runtime_state(commit(graph=GraphDelta.append(nodes, "b"), new_blobs=[NewBlob(content=shared)]))
    store.commit_runtime_state(commit(tombstone_node_ids=["a"]))
    store.vacuum()
    clock.advance(1)
    store.gc_unreachable()
    assert store.get_blob(sha256(shared)) == shared


def staged(anchor: str, task: str, idx: int, channel: str = "c", value: Any = None, path: str = "") -> StagedWrite:
    return StagedWrite(anchor_id=anchor, task_id=task, idx=idx, channel=channel, value=value, task_path=path)


def test_staged_writes_keep_the_first_and_replace_negative_indexes(store: SessionStore) -> None:
    first = [staged("cp1", "t1", 0, "a", {"v": 1}), staged("cp1", "t1", 1, "b", [1, b"\x00"]), staged("cp1", "t1", -1)]
    assert store.put_staged_writes(first) == 3
    again = [staged("cp1", "t1", 0, "a", "changed"), staged("cp1", "t1", -1, "err", "replaced", "p")]
    assert store.put_staged_writes(again) == 1
    assert store.load_staged_writes(["cp1"]) == [
        first[0],
        first[1],
        staged("cp1", "t1", -1, "err", "replaced", "p"),
    ]
    assert store.put_staged_writes([]) == 0


def test_staged_writes_by_anchor_and_channel_and_their_deletion(store: SessionStore) -> None:
    writes = [staged("x", "t", 0, "a", 1), staged("y", "t", 0, "b", 2), staged("x", "u", 0, "b", 3)]
    store.put_staged_writes(writes)
    assert store.load_staged_writes(["x"]) == [writes[0], writes[2]]
    assert store.load_staged_writes(["x", "y"], channels=["b"]) == [writes[1], writes[2]]
    assert store.load_staged_writes(["x"], channels=[]) == []
    assert store.load_staged_writes(["nope"]) == []
    assert store.delete_staged_writes(["x", "nope"]) == 2
    assert store.load_staged_writes(["x", "y"]) == [writes[1]]
    assert store.load_session() is None  # staged writes bind no session
    with pytest.raises(InvalidInput):
        store.put_staged_writes([staged("", "t", 0)])
    with pytest.raises(InvalidInput):
        store.put_staged_writes([staged("x", "t", 2**63)])
    with pytest.raises(InvalidInput):
        store.put_staged_writes([staged("x", "t", 0, value=object())])


def test_vacuum_drops_the_index_and_staged_writes_of_tombstoned_nodes(store: SessionStore) -> None:
    _records(store)
    store.put_staged_writes([staged("a2", "t", 0), staged("a3", "t", 0), staged("unsaved", "t", 0)])
    store.tombstone_nodes(["a2"])
    assert len(store.load_staged_writes(["a2", "a3", "unsaved"])) == 3  # until the vacuum
    assert store.vacuum().removed_node_count == 1
    assert [w.anchor_id for w in store.load_staged_writes(["a2", "a3", "unsaved"])] == ["a3", "unsaved"]
    assert queried(store, tags={"run": "r1"}) == ["b1"]


def test_walk_ancestors_is_bounded_and_nearest_first(store: SessionStore) -> None:
    store.commit_runtime_state(commit(graph=GraphDelta.append(chain("n1", "n2", "n3", "n4"), "n4")))
    assert [n.node_id for n in store.walk_ancestors("n4", 10)] == ["n4", "n3", "n2", "n1"]
    assert [n.node_id for n in store.walk_ancestors("n4", 2)] == ["n4", "n3", "n2"]
    assert [n.node_id for n in store.walk_ancestors("n4", 0)] == ["n4"]
    assert store.walk_ancestors("missing", 5) == []
    store.tombstone_nodes(["n2"])
    assert [n.node_id for n in store.walk_ancestors("n4", 10)] == ["n4", "n3"]
    with pytest.raises(InvalidInput):
        store.walk_ancestors("n4", -1)


def test_walk_ancestors_terminates_on_a_parent_cycle(store: SessionStore) -> None:
    nodes = [message("c1", "user", "x", "c2"), message("c2", "user", "y", "c1")]
    store.commit_runtime_state(commit(graph=GraphDelta.append(nodes, "c2")))
    assert [n.node_id for n in store.walk_ancestors("c2", 100)] == ["c2", "c1"]


def test_fork_and_export_carry_the_index_blob_children_and_staged_writes(
    store: SessionStore, backend: Backend, clock: ManualClock
) -> None:
    child, parent = b"child" * 30, b"parent" * 30
    holder = record("h", "", "0001", kind_tag="x")
    holder = msgspec.structs.replace(holder, blob_refs=[sha256(parent)])
    store.commit_runtime_state(
        commit(
            graph=GraphDelta.append([holder], "h"),
            new_blobs=[NewBlob(content=child), NewBlob(content=parent, children=[sha256(child)])],
        )
    )
    store.put_staged_writes([staged("h", "t", 0, "c", {"x": 1})])
    target = backend.open()
    store.copy_session_into(target)
    assert queried(target, tags={"kind_tag": "x"}) == ["h"]
    assert target.load_staged_writes(["h"]) == store.load_staged_writes(["h"])
    clock.advance(1)
    target.gc_unreachable()
    assert target.get_blob(sha256(child)) == child  # the edge came along: the child is still reachable
    imported = backend.open()
    imported.import_session(store.export_session())
    assert queried(imported, lane="") == ["h"]
    assert imported.load_staged_writes(["h"]) == store.load_staged_writes(["h"])


def test_get_blobs_reads_many_and_leaves_out_the_absent(store: SessionStore) -> None:
    a, b = store.put_blob(b"first"), store.put_blob(b"second" * 2000)
    assert store.get_blobs([a, b, "0" * 64, a]) == {a: b"first", b: b"second" * 2000}
    assert store.get_blobs([]) == {}


def test_index_and_staged_writes_survive_reopen(store: SessionStore, backend: Backend) -> None:
    _records(store)
    store.put_staged_writes([staged("a3", "t", 0, "c", "v")])
    again = backend.reopen(store)
    assert queried(again, tags={"run": "r1"}) == ["b1", "a2"]
    assert again.load_staged_writes(["a3"]) == [staged("a3", "t", 0, "c", "v")]


# -- fences without completion (held queue claims) ---------------------------


def test_a_held_claim_fences_a_commit_and_stays_claimed(store: SessionStore, clock: ManualClock) -> None:
    batch = store.enqueue_queued_work(draft())
    held = must_claim(store, owner="writer", ttl=100)
    first = store.commit_runtime_state(commit(expected=0, held_queue_claims=[held.completion()]))
    second = store.commit_runtime_state(commit(expected=1, held_queue_claims=[held.completion()]))
    assert (first.head_revision, second.head_revision) == (1, 2)
    assert store.list_queued_work("root") == [batch]  # nothing was completed
    assert store.list_pending_queued_work("root") == []  # and the claim still holds it
    assert claim(store, owner="thief") is None
    clock.advance(50)
    renewed = store.renew_queued_work_claim(held, 100)
    clock.advance(80)  # past the first lease, inside the renewed one
    store.commit_runtime_state(commit(expected=2, held_queue_claims=[renewed.completion()]))
    store.commit_runtime_state(commit(expected=3).completing_queue_claim(renewed.completion()))
    assert store.list_queued_work("root") == []


def test_a_held_claim_that_lost_its_lease_writes_nothing(store: SessionStore, clock: ManualClock) -> None:
    store.enqueue_queued_work(draft())
    held = must_claim(store, owner="writer", ttl=100)
    clock.advance(100)  # expired: refused even though nobody took the batch over (a completion would pass)
    before = snapshot(store)
    with pytest.raises(QueuedWorkClaimExpired) as caught:
        store.commit_runtime_state(commit(expected=0, held_queue_claims=[held.completion()]))
    assert (caught.value.session_id, caught.value.claim_id) == ("root", held.claim_id)
    with pytest.raises(QueuedWorkClaimExpired):
        store.put_staged_writes([staged("cp", "t", 0)], held_queue_claims=[held.completion()])
    assert snapshot(store) == before and store.load_staged_writes(["cp"]) == []
    taker = must_claim(store, owner="taker")
    assert taker.fencing_token > held.fencing_token
    renewed = msgspec.structs.replace(held, expires_at_epoch_ms=MAX_MS)
    for stale in (held, renewed):  # a reclaimed batch fences out the old owner, renewed or not
        with pytest.raises(QueuedWorkClaimExpired):
            store.commit_runtime_state(commit(expected=0, held_queue_claims=[stale.completion()]))
    store.commit_runtime_state(commit(expected=0, held_queue_claims=[taker.completion()]))
    assert store.put_staged_writes([staged("cp", "t", 0)], held_queue_claims=[taker.completion()]) == 1


def test_a_held_claim_must_name_exactly_its_batches_under_its_fence(store: SessionStore) -> None:
    store.enqueue_queued_work(draft(slot=JOIN))
    store.enqueue_queued_work(draft(slot=JOIN))
    held = must_claim(store)
    assert len(held.batches) == 2
    proof = held.completion()
    wrong = [
        msgspec.structs.replace(proof, batch_ids=proof.batch_ids[:1]),
        msgspec.structs.replace(proof, batch_ids=[*proof.batch_ids, "qwb:nope"]),
        msgspec.structs.replace(proof, fencing_token=proof.fencing_token + 1),
        msgspec.structs.replace(proof, lease_token="0" * 64),
        msgspec.structs.replace(proof, session_id="other"),
    ]
    before = snapshot(store)
    for bad in wrong:
        with pytest.raises(QueuedWorkClaimExpired):
            store.commit_runtime_state(commit(expected=0, held_queue_claims=[bad]))
    assert snapshot(store) == before
    with pytest.raises(InvalidInput):
        store.commit_runtime_state(commit(expected=0, held_queue_claims=[msgspec.structs.replace(proof, batch_ids=[])]))
    with pytest.raises(InvalidInput):
        store.put_staged_writes([staged("cp", "t", 0)], held_queue_claims=["not a claim"])  # type: ignore[list-item]
    store.commit_runtime_state(commit(expected=0, held_queue_claims=[proof]))


def test_a_held_claim_fences_a_commit_that_completes_another(store: SessionStore) -> None:
    store.enqueue_queued_work(draft(text="lease"))
    lease = must_claim(store, owner="writer")
    store.enqueue_queued_work(draft(text="work"))
    work = must_claim(store, owner="writer")
    store.commit_runtime_state(
        commit(expected=0, held_queue_claims=[lease.completion()]).completing_queue_claim(work.completion())
    )
    assert ids(store.list_queued_work("root")) == lease.batch_ids
    # Held and completed in one commit: both checks pass first, then the completion consumes it.
    store.commit_runtime_state(
        commit(expected=1, held_queue_claims=[lease.completion()]).completing_queue_claim(lease.completion())
    )
    assert store.list_queued_work("root") == []


__all__ = [name for name in list(globals()) if name.startswith("test_")] + [
    "DAMAGE_TARGETS",
    "Backend",
    "BackendHarness",
    "Clock",
    "ManualClock",
    "SessionStore",
    "backend",
    "clock",
    "store",
]
