"""Work-queue acceptance scenarios (reference/queued-work.md 10.1, 10.2, 10.4) under the SPEC 6 decisions.

Every test runs against a real SQLite file whose time is driven by a :class:`ManualClock`
(``clocked_store``), except where a scenario is about another kind of store.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lash_store import Store, StoreOptions
from lash_store.errors import CorruptData, HeadRevisionConflict, InvalidInput, QueuedWorkClaimExpired
from lash_store.model import (
    DeliveryPolicy,
    MergeKey,
    QueuedWorkBatch,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkPayload,
    RuntimeCommitResult,
    SlotPolicy,
    TextItem,
    TurnCommitStamp,
    TurnInput,
)
from tests.helpers import ManualClock, commit_at, draft

TTL = 60_000
MAX_MS = 2**63 - 1
IDLE = QueuedWorkClaimBoundary.IDLE
CKPT = QueuedWorkClaimBoundary.ACTIVE_TURN_CHECKPOINT
ESB = DeliveryPolicy.EARLIEST_SAFE_BOUNDARY
ACTC = DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT
J = SlotPolicy.JOIN
X = SlotPolicy.EXCLUSIVE


# ---------------------------------------------------------------------------
# Helpers


def claim(
    store: Store,
    session_id: str = "root",
    owner_id: str = "owner",
    boundary: QueuedWorkClaimBoundary = IDLE,
    ttl: int = TTL,
    max_batches: int = 10,
) -> QueuedWorkClaim | None:
    return store.claim_ready_queued_work(session_id, owner_id, boundary, ttl, max_batches)


def must_claim(store: Store, **kwargs: Any) -> QueuedWorkClaim:
    got = claim(store, **kwargs)
    assert got is not None, f"expected a claim for {kwargs}"
    return got


def ids(batches: list[QueuedWorkBatch] | QueuedWorkClaim | None) -> list[str]:
    if batches is None:
        return []
    if isinstance(batches, QueuedWorkClaim):
        return batches.batch_ids
    return [batch.batch_id for batch in batches]


def text_of(batch: QueuedWorkBatch) -> str:
    payload = batch.items[0].payload
    assert payload.kind == "turn_input" and payload.input is not None
    item = payload.input.items[0]
    assert isinstance(item, TextItem)
    return item.text


def head_revision(store: Store) -> int | None:
    read = store.load_session()
    return None if read is None else read.head_revision


def complete(store: Store, *claims: QueuedWorkClaim, expected: int | None = None) -> RuntimeCommitResult:
    commit = commit_at("root", expected).completing_queue_claims(c.completion() for c in claims)
    return store.commit_runtime_state(commit)


def raw_dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the queue and a commit could have written, read over an independent connection."""
    con = sqlite3.connect(str(path))
    try:
        return {
            "batches": con.execute("SELECT * FROM queued_work_batches ORDER BY enqueue_seq").fetchall(),
            "fences": con.execute("SELECT * FROM queued_work_sessions ORDER BY session_id").fetchall(),
            "sequence": con.execute("SELECT * FROM sqlite_sequence ORDER BY name").fetchall(),
            "head": con.execute("SELECT session_id, head_revision, checkpoint_ref FROM session_head").fetchall(),
            "stamps": con.execute("SELECT session_id, turn_id, record FROM runtime_turn_commits").fetchall(),
        }
    finally:
        con.close()


def raw_batch_row(path: Path, batch_id: str) -> dict[str, Any] | None:
    con = sqlite3.connect(str(path))
    con.row_factory = sqlite3.Row
    try:
        row = con.execute("SELECT * FROM queued_work_batches WHERE batch_id = ?", (batch_id,)).fetchone()
        return None if row is None else dict(row)
    finally:
        con.close()


def corrupt_delivery_policy(path: Path, batch_id: str) -> None:
    con = sqlite3.connect(str(path), timeout=15)
    try:
        with con:
            changed = con.execute(
                "UPDATE queued_work_batches SET delivery_policy = 'bogus' WHERE batch_id = ?", (batch_id,)
            ).rowcount
        assert changed == 1
    finally:
        con.close()


def stamp(turn_id: str, turn_hash: str) -> TurnCommitStamp:
    return TurnCommitStamp(session_id="root", turn_id=turn_id, turn_commit_hash=turn_hash)


def wake_dict(process_id: str = "process-1", sequence: int = 7, target: str = "root") -> dict[str, Any]:
    return {
        "wake_id": f"wake:{process_id}:{sequence}",
        "target_session_id": target,
        "target_scope_id": "scope-main",
        "process_id": process_id,
        "sequence": sequence,
        "event_type": "process.wake",
        "event_invocation": {
            "scope": {"session_id": target, "turn_id": "turn-3", "turn_index": 3},
            "subject": {
                "type": "process_event",
                "process_id": process_id,
                "sequence": sequence,
                "event_type": "process.wake",
            },
        },
        "dedupe_key": f"{process_id}:{sequence}",
        "input": "the build finished",
        "created_at_ms": 1_767_225_600_000,
    }


def process_wake_draft(wake: dict[str, Any]) -> QueuedWorkBatchDraft:
    """What ``process_wake_batch_draft(wake)`` builds (reference 2.6), by hand."""
    return QueuedWorkBatchDraft.new(
        wake["target_session_id"], ESB, X, [QueuedWorkPayload.process_wake(wake)]
    ).with_source_key(f"process:{wake['process_id']}:event:{wake['sequence']}:wake")


def jg(text: str, group: str, delivery: DeliveryPolicy = ESB) -> QueuedWorkBatchDraft:
    return draft("root", text, delivery, J).with_merge_key(MergeKey.group(group))


# ---------------------------------------------------------------------------
# 10.1 lash-core conformance suite


def test_c1_source_key_idempotency_and_list_order(clocked_store: Store) -> None:
    store = clocked_store
    b1 = store.enqueue_queued_work(draft("root", "first", ESB, J).with_source_key("source:first"))
    replay = store.enqueue_queued_work(
        draft("root", "different replay payload", ESB, J).with_source_key("source:first")
    )
    b2 = store.enqueue_queued_work(draft("root", "second", ESB, X))
    other = store.enqueue_queued_work(draft("other", "other session", ESB, X))
    # The same key in another session is a different batch.
    other_same_key = store.enqueue_queued_work(draft("other", "x", ESB, J).with_source_key("source:first"))

    assert replay.batch_id == b1.batch_id
    assert replay.items[0].item_id == b1.items[0].item_id
    assert text_of(replay) == "first"
    assert replay == b1
    listed = store.list_queued_work("root")
    assert listed == [b1, b2]
    assert b1.enqueue_seq < b2.enqueue_seq
    assert other_same_key.batch_id != b1.batch_id
    assert ids(store.list_queued_work("other")) == [other.batch_id, other_same_key.batch_id]


def test_c2_cancel_removes_only_unclaimed_batches(clocked_store: Store) -> None:
    store = clocked_store
    b1 = store.enqueue_queued_work(draft("root", "cancel me", ACTC, X))
    cancelled = store.cancel_queued_work_batch("root", b1.batch_id)
    assert cancelled is not None and text_of(cancelled) == "cancel me"
    assert cancelled == b1
    assert store.list_queued_work("root") == []

    b2 = store.enqueue_queued_work(draft("root", "claimed", ACTC, X))
    held = must_claim(store, max_batches=1)
    assert ids(held) == [b2.batch_id]
    assert store.list_pending_queued_work("root") == []
    assert ids(store.list_queued_work("root")) == [b2.batch_id]
    assert store.cancel_queued_work_batch("root", b2.batch_id) is None
    assert ids(store.list_queued_work("root")) == [b2.batch_id]

    assert store.abandon_queued_work_claim(held) == 1
    assert ids(store.list_pending_queued_work("root")) == [b2.batch_id]
    again = store.cancel_queued_work_batch("root", b2.batch_id)
    assert again is not None and again.batch_id == b2.batch_id
    assert store.list_queued_work("root") == []


def test_c3_exact_claim_by_batch_ids_cannot_skip_earlier_work(clocked_store: Store) -> None:
    store = clocked_store
    b1 = store.enqueue_queued_work(draft("root", "first", ACTC, X))
    b2 = store.enqueue_queued_work(draft("root", "second", ACTC, X))

    assert store.claim_ready_queued_work_by_batch_ids("root", "owner", IDLE, TTL, [b2.batch_id]) is None
    assert ids(store.list_pending_queued_work("root")) == [b1.batch_id, b2.batch_id]

    exact = store.claim_ready_queued_work_by_batch_ids("root", "owner", IDLE, TTL, [b1.batch_id])
    assert exact is not None and ids(exact) == [b1.batch_id]
    assert exact.fencing_token == 1  # the rejected attempt consumed no fence
    assert ids(store.list_pending_queued_work("root")) == [b2.batch_id]


def test_c4_boundaries_renewal_abandon(clocked_store: Store, clock: ManualClock) -> None:
    store = clocked_store
    b1 = store.enqueue_queued_work(draft("root", "after current commit", ACTC, X))
    b2 = store.enqueue_queued_work(draft("root", "earliest", ESB, X))

    assert claim(store, owner_id="owner-a", boundary=CKPT) is None
    idle_claim = must_claim(store, owner_id="owner-a")
    assert ids(idle_claim) == [b1.batch_id]
    checkpoint_claim = must_claim(store, owner_id="owner-b", boundary=CKPT)
    assert ids(checkpoint_claim) == [b2.batch_id]

    store.abandon_queued_work_claim(idle_claim)
    reclaimed = must_claim(store, owner_id="owner-c")
    assert ids(reclaimed) == [b1.batch_id]
    assert reclaimed.fencing_token > idle_claim.fencing_token
    assert reclaimed.owner_id == "owner-c"

    clock.advance(10)
    renewed = store.renew_queued_work_claim(reclaimed, TTL)
    assert renewed.claim_id == reclaimed.claim_id
    assert renewed.lease_token == reclaimed.lease_token
    assert renewed.fencing_token == reclaimed.fencing_token
    assert renewed.claimed_at_epoch_ms == reclaimed.claimed_at_epoch_ms
    assert ids(renewed) == ids(reclaimed)
    assert renewed.batches == reclaimed.batches
    assert renewed.expires_at_epoch_ms >= reclaimed.expires_at_epoch_ms
    assert renewed.expires_at_epoch_ms == clock() + TTL


def test_c5_availability_limits_exclusivity_reclaim_isolation(clocked_store: Store) -> None:
    store = clocked_store
    delayed = store.enqueue_queued_work(draft("root", "later", ESB, X).with_available_at_ms(4_102_444_800_000))
    e = store.enqueue_queued_work(draft("root", "exclusive", ESB, X))
    j = store.enqueue_queued_work(jg("joinable", "root"))
    o = store.enqueue_queued_work(draft("other", "other", ESB, X))

    first = must_claim(store, owner_id="owner-a")
    assert ids(first) == [e.batch_id]
    second = must_claim(store, owner_id="owner-b")
    assert ids(second) == [j.batch_id]
    assert claim(store, owner_id="owner-x") is None  # only the delayed batch is left
    third = must_claim(store, session_id="other", owner_id="owner-c")
    assert ids(third) == [o.batch_id]
    assert delayed.batch_id in ids(store.list_pending_queued_work("root"))

    r = store.enqueue_queued_work(draft("reclaim", "reclaim", ESB, X))
    expired = must_claim(store, session_id="reclaim", owner_id="owner-a", ttl=0, max_batches=1)
    assert expired.expires_at_epoch_ms <= expired.claimed_at_epoch_ms
    taken = must_claim(store, session_id="reclaim", owner_id="owner-b", max_batches=1)
    assert ids(taken) == [r.batch_id]
    assert taken.fencing_token > expired.fencing_token

    limited = [
        store.enqueue_queued_work(draft("limited", f"L{i}", ESB, J).with_merge_key(MergeKey.group("limited")))
        for i in (1, 2, 3)
    ]
    two = must_claim(store, session_id="limited", max_batches=2)
    assert ids(two) == ids(limited[:2])
    rest = must_claim(store, session_id="limited", max_batches=10)
    assert ids(rest) == ids(limited[2:])


def test_c6_join_groups_by_delivery_policy_and_merge_key(clocked_store: Store) -> None:
    store = clocked_store
    a1 = store.enqueue_queued_work(jg("a1", "a"))
    a2 = store.enqueue_queued_work(jg("a2", "a"))
    g = store.enqueue_queued_work(jg("g", "b"))
    c = store.enqueue_queued_work(jg("c", "a", ACTC))
    assert ids(must_claim(store)) == [a1.batch_id, a2.batch_id]
    assert ids(must_claim(store)) == [g.batch_id]
    assert ids(must_claim(store)) == [c.batch_id]
    assert claim(store) is None


def test_c7_completion_is_lease_guarded(clocked_store: Store) -> None:
    store = clocked_store
    for text in ("one", "two"):
        store.enqueue_queued_work(jg(text, "joined"))
    held = must_claim(store)
    assert len(held.batches) == 2

    stale = msgspec.structs.replace(held.completion(), lease_token=held.lease_token + ":stale")
    with pytest.raises(QueuedWorkClaimExpired) as info:
        store.commit_runtime_state(commit_at("root", None).completing_queue_claim(stale))
    assert info.value.session_id == "root" and info.value.claim_id == held.claim_id
    assert len(store.list_queued_work("root")) == 2
    assert store.load_session() is None

    store.commit_runtime_state(commit_at("root", None).completing_queue_claim(held.completion()))
    assert store.list_queued_work("root") == []
    assert head_revision(store) == 1


def test_c8_completion_and_turn_stamp_are_atomic_and_idempotent(clocked_store: Store) -> None:
    store = clocked_store
    store.enqueue_queued_work(draft("root", "work", ESB, X))
    held = must_claim(store, max_batches=1)
    base = commit_at("root", None, turn_state={"turn_index": 41}).with_turn_commit(stamp("turn-atomic", "hash-atomic"))
    stale = msgspec.structs.replace(held.completion(), lease_token="stale-token")

    with pytest.raises(QueuedWorkClaimExpired):
        store.commit_runtime_state(base.completing_queue_claim(stale))
    assert store.load_session() is None
    assert len(store.list_queued_work("root")) == 1

    first = store.commit_runtime_state(base.completing_queue_claim(held.completion()))
    retry = store.commit_runtime_state(base.completing_queue_claim(held.completion()))
    assert retry.head_revision == first.head_revision
    assert retry.checkpoint_ref == first.checkpoint_ref
    assert retry == first
    read = store.load_session()
    assert read is not None and read.head_revision == first.head_revision
    assert read.checkpoint is not None and read.checkpoint.turn_state == {"turn_index": 41}
    assert store.list_queued_work("root") == []


def test_c9_process_wake_enqueue_is_idempotent_and_claimed_once(clocked_store: Store) -> None:
    store = clocked_store
    wake = wake_dict("process-1", 7)
    first = store.enqueue_queued_work(process_wake_draft(wake))
    second = store.enqueue_queued_work(process_wake_draft(wake))
    assert first.batch_id == second.batch_id
    assert first.source_key == "process:process-1:event:7:wake"
    assert len(store.list_queued_work("root")) == 1

    held = must_claim(store)
    assert len(held.batches) == 1 and len(held.batches[0].items) == 1
    payload = held.batches[0].items[0].payload
    assert payload.kind == "process_wake"
    assert payload.wake == wake
    assert claim(store, owner_id="someone-else") is None

    store.commit_runtime_state(commit_at("root", None).completing_queue_claim(held.completion()))
    assert store.list_queued_work("root") == []


def test_c10_queue_survives_reopen(db_path: Path) -> None:
    with Store.open(db_path) as store:
        batch = store.enqueue_queued_work(draft("root", "survives reopen").with_source_key("reopen:queued"))
    with Store.open(db_path) as reopened:
        listed = reopened.list_queued_work("root")
        assert len(listed) == 1
        assert listed[0].batch_id == batch.batch_id
        assert text_of(listed[0]) == "survives reopen"
        assert listed[0] == batch


# ---------------------------------------------------------------------------
# 10.2 storage_fixes.rs "Finding 2" (variants over several connections; exact ports in test_queue_seed.py)


def test_f2a_second_claim_on_held_batch_is_not_won_across_connections(db_path: Path, clock: ManualClock) -> None:
    options = StoreOptions(clock=clock)
    with Store.open(db_path, options) as a, Store.open(db_path, options) as b:
        a.enqueue_queued_work(draft("root", "work"))
        claim_a = must_claim(a, owner_id="owner-a")
        assert len(claim_a.batches) == 1
        assert claim(b, owner_id="owner-b") is None
        assert claim(a, owner_id="owner-b") is None
        b.renew_queued_work_claim(claim_a, TTL)  # any connection may renew with the proof


def test_f2b_many_threads_race_for_one_batch(db_path: Path) -> None:
    with Store.open(db_path) as seed:
        batch = seed.enqueue_queued_work(draft("root", "work"))
    workers = 4
    barrier = threading.Barrier(workers)
    results: list[QueuedWorkClaim | None] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(owner: str) -> None:
        try:
            with Store.open(db_path) as store:
                barrier.wait(timeout=30)
                got = claim(store, owner_id=owner)
            with lock:
                results.append(got)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"owner-{i}",)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    winners = [r for r in results if r is not None]
    assert len(results) == workers
    assert len(winners) == 1
    assert ids(winners[0]) == [batch.batch_id]
    with Store.open(db_path) as verify:
        verify.renew_queued_work_claim(winners[0], TTL)
        assert verify.list_pending_queued_work("root") == []


# ---------------------------------------------------------------------------
# Boundary table (4.2): all four cells


@pytest.mark.parametrize(
    ("boundary", "delivery", "claimed"),
    [(IDLE, ESB, True), (IDLE, ACTC, True), (CKPT, ESB, True), (CKPT, ACTC, False)],
)
def test_boundary_table(
    clocked_store: Store, boundary: QueuedWorkClaimBoundary, delivery: DeliveryPolicy, claimed: bool
) -> None:
    batch = clocked_store.enqueue_queued_work(draft("root", "head", delivery, X))
    before = clocked_store.list_pending_queued_work("root")
    got = claim(clocked_store, boundary=boundary)
    if claimed:
        assert got is not None and ids(got) == [batch.batch_id]
    else:
        assert got is None
        assert clocked_store.list_pending_queued_work("root") == before


# ---------------------------------------------------------------------------
# 10.4 missing scenarios


def test_n1_stale_owner_after_expiry_and_reclaim(clocked_store: Store, clock: ManualClock, db_path: Path) -> None:
    store = clocked_store
    store.commit_runtime_state(commit_at("root", None))
    batch = store.enqueue_queued_work(draft("root", "work"))
    claim_a = must_claim(store, owner_id="owner-a", ttl=100)
    clock.advance(100)
    claim_b2 = must_claim(store, owner_id="owner-b")
    assert ids(claim_b2) == [batch.batch_id]
    assert claim_b2.fencing_token > claim_a.fencing_token

    with pytest.raises(QueuedWorkClaimExpired):
        store.renew_queued_work_claim(claim_a, TTL)

    before = raw_dump(db_path)
    stale_commit = (
        commit_at("root", 1, turn_state={"by": "owner-a"})
        .with_turn_commit(stamp("turn-a", "hash-a"))
        .completing_queue_claim(claim_a.completion())
    )
    with pytest.raises(QueuedWorkClaimExpired):
        store.commit_runtime_state(stale_commit)
    assert head_revision(store) == 1
    assert ids(store.list_queued_work("root")) == [batch.batch_id]
    assert raw_dump(db_path) == before  # no head, no stamp, no queue change

    assert store.abandon_queued_work_claim(claim_a) == 0
    assert claim(store, owner_id="owner-c") is None  # B2 still holds it
    renewed = store.renew_queued_work_claim(claim_b2, TTL)
    # The stale commit's stamp was never recorded: the same turn with another hash commits fine.
    result = store.commit_runtime_state(
        commit_at("root", 1).with_turn_commit(stamp("turn-a", "hash-b2")).completing_queue_claim(renewed.completion())
    )
    assert result.head_revision == 2
    assert store.list_queued_work("root") == []


def test_n2_expired_but_not_reclaimed_compatible_mode(clocked_store: Store, clock: ManualClock) -> None:
    store = clocked_store
    batch = store.enqueue_queued_work(draft("root", "work"))
    claim_a = must_claim(store, ttl=100)
    assert store.list_pending_queued_work("root") == []
    clock.advance(200)
    assert ids(store.list_pending_queued_work("root")) == [batch.batch_id]

    renewed = store.renew_queued_work_claim(claim_a, 100)
    assert renewed.expires_at_epoch_ms == clock() + 100
    assert store.list_pending_queued_work("root") == []
    assert claim(store, owner_id="thief") is None

    complete(store, claim_a)
    assert store.list_queued_work("root") == []


def test_n2_variant_expired_completion_without_renew_succeeds(clocked_store: Store, clock: ManualClock) -> None:
    store = clocked_store
    store.enqueue_queued_work(draft("root", "work"))
    claim_a = must_claim(store, ttl=100)
    clock.advance(200)
    result = complete(store, claim_a)
    assert result.head_revision == 1
    assert store.list_queued_work("root") == []


def test_n3_fencing_is_monotonic_and_ids_are_random(clocked_store: Store, clock: ManualClock) -> None:
    store = clocked_store
    batch = store.enqueue_queued_work(draft("root", "work"))
    first = must_claim(store, ttl=100)
    clock.advance(100)
    second = must_claim(store)
    store.abandon_queued_work_claim(second)
    third = must_claim(store)

    assert (first.fencing_token, second.fencing_token, third.fencing_token) == (1, 2, 3)
    assert len({first.claim_id, second.claim_id, third.claim_id}) == 3
    assert len({first.lease_token, second.lease_token, third.lease_token}) == 3
    for held in (first, second, third):
        assert re.fullmatch(r"qwc:[0-9a-f]{32}", held.claim_id)
        assert re.fullmatch(r"[0-9a-f]{64}", held.lease_token)
        assert held.completion().fencing_token == held.fencing_token
    assert re.fullmatch(r"qwb:[0-9a-f]{32}", batch.batch_id)
    assert batch.items[0].item_id == f"{batch.batch_id}:item:0"
    # The counter is per session: another session starts at 1.
    store.enqueue_queued_work(draft("other", "work"))
    assert must_claim(store, session_id="other").fencing_token == 1


def test_stale_fence_is_rejected_by_renew_and_completion(clocked_store: Store, db_path: Path) -> None:
    store = clocked_store
    store.enqueue_queued_work(draft("root", "work"))
    held = must_claim(store)
    before = raw_dump(db_path)
    wrong_fence = msgspec.structs.replace(held, fencing_token=held.fencing_token + 1)
    with pytest.raises(QueuedWorkClaimExpired):
        store.renew_queued_work_claim(wrong_fence, TTL)
    with pytest.raises(QueuedWorkClaimExpired):
        store.commit_runtime_state(
            commit_at("root", None).completing_queue_claim(
                msgspec.structs.replace(held.completion(), fencing_token=held.fencing_token - 1)
            )
        )
    assert raw_dump(db_path) == before
    complete(store, held)
    assert store.list_queued_work("root") == []


def test_n4_fencing_across_join_members(clocked_store: Store) -> None:
    store = clocked_store
    a = store.enqueue_queued_work(jg("a", "g"))
    b = store.enqueue_queued_work(jg("b", "g"))
    both = must_claim(store)
    assert ids(both) == [a.batch_id, b.batch_id]
    assert both.fencing_token == 1
    store.abandon_queued_work_claim(both)
    assert store.cancel_queued_work_batch("root", a.batch_id) is not None
    only_b = must_claim(store)
    assert ids(only_b) == [b.batch_id]
    assert only_b.fencing_token == 2
    assert only_b.fencing_token > both.fencing_token


def test_n5_delayed_availability_is_inclusive(clocked_store: Store, clock: ManualClock) -> None:
    store = clocked_store
    now = clock()
    batch = store.enqueue_queued_work(draft("root", "later").with_available_at_ms(now + 500))
    assert batch.available_at_ms == now + 500
    assert batch.enqueued_at_ms == now
    assert claim(store) is None
    assert ids(store.list_pending_queued_work("root")) == [batch.batch_id]
    assert ids(store.list_queued_work("root")) == [batch.batch_id]
    clock.advance(499)
    assert claim(store) is None
    clock.advance(1)
    got = must_claim(store)
    assert ids(got) == [batch.batch_id]
    assert got.claimed_at_epoch_ms == now + 500
    assert got.expires_at_epoch_ms == now + 500 + TTL


def test_n6_join_walks_past_a_delayed_row(clocked_store: Store, clock: ManualClock) -> None:
    store = clocked_store
    j1 = store.enqueue_queued_work(jg("j1", "g"))
    store.enqueue_queued_work(jg("d", "g").with_available_at_ms(clock() + 1_000))
    j3 = store.enqueue_queued_work(jg("j3", "g"))
    assert ids(must_claim(store)) == [j1.batch_id, j3.batch_id]


def test_n6_join_walks_past_a_live_claimed_row(clocked_store: Store, clock: ManualClock) -> None:
    store = clocked_store
    j1 = store.enqueue_queued_work(jg("j1", "g").with_available_at_ms(clock() + 10))
    d = store.enqueue_queued_work(jg("d", "g"))
    j3 = store.enqueue_queued_work(jg("j3", "g"))
    held_d = must_claim(store, owner_id="holder", max_batches=1)
    assert ids(held_d) == [d.batch_id]
    clock.advance(10)
    assert ids(must_claim(store)) == [j1.batch_id, j3.batch_id]


def test_n7_never_merges_with_never(clocked_store: Store) -> None:
    store = clocked_store
    batches = [store.enqueue_queued_work(draft("root", f"t{i}", ESB, J)) for i in range(3)]
    assert all(b.merge_key == MergeKey.never() for b in batches)
    assert ids(must_claim(store)) == ids(batches)


def test_n7_never_group_respects_max_batches(clocked_store: Store) -> None:
    store = clocked_store
    batches = [store.enqueue_queued_work(draft("root", f"t{i}", ESB, J)) for i in range(3)]
    assert ids(must_claim(store, max_batches=2)) == ids(batches[:2])
    assert ids(must_claim(store, max_batches=2)) == ids(batches[2:])


def test_join_of_several_batches_under_one_merge_key_is_completed_together(clocked_store: Store) -> None:
    store = clocked_store
    batches = [store.enqueue_queued_work(jg(f"g{i}", "inbox")) for i in range(4)]
    held = must_claim(store, max_batches=64)
    assert ids(held) == ids(batches)
    assert [b.enqueue_seq for b in held.batches] == sorted(b.enqueue_seq for b in batches)
    assert held.batches == batches
    assert held.completion().batch_ids == ids(batches)
    complete(store, held)
    assert store.list_queued_work("root") == []


def test_n8_exclusive_ends_a_group(clocked_store: Store) -> None:
    store = clocked_store
    j1 = store.enqueue_queued_work(jg("j1", "g"))
    e = store.enqueue_queued_work(draft("root", "e", ESB, X))
    j2 = store.enqueue_queued_work(jg("j2", "g"))
    assert ids(must_claim(store)) == [j1.batch_id]
    assert ids(must_claim(store)) == [e.batch_id]
    assert ids(must_claim(store)) == [j2.batch_id]


def test_exclusive_head_is_claimed_alone_even_before_a_compatible_join(clocked_store: Store) -> None:
    store = clocked_store
    e = store.enqueue_queued_work(draft("root", "e", ESB, X))
    j1 = store.enqueue_queued_work(draft("root", "j1", ESB, J))
    j2 = store.enqueue_queued_work(draft("root", "j2", ESB, J))
    assert e.merge_key == j1.merge_key == MergeKey.never()
    assert ids(must_claim(store, max_batches=64)) == [e.batch_id]
    assert ids(must_claim(store, max_batches=64)) == [j1.batch_id, j2.batch_id]


def test_n9_first_mismatch_ends_the_group(clocked_store: Store) -> None:
    store = clocked_store
    j1 = store.enqueue_queued_work(jg("j1", "g"))
    j2 = store.enqueue_queued_work(jg("j2", "h"))
    j3 = store.enqueue_queued_work(jg("j3", "g"))
    assert ids(must_claim(store)) == [j1.batch_id]
    assert ids(must_claim(store)) == [j2.batch_id]
    assert ids(must_claim(store)) == [j3.batch_id]


def test_n9_delivery_policy_mismatch_ends_the_group(clocked_store: Store) -> None:
    store = clocked_store
    first = store.enqueue_queued_work(jg("esb", "g", ESB))
    second = store.enqueue_queued_work(jg("actc", "g", ACTC))
    assert ids(must_claim(store)) == [first.batch_id]
    assert ids(must_claim(store)) == [second.batch_id]


def test_n10_head_of_line_blocking_at_checkpoints(clocked_store: Store) -> None:
    store = clocked_store
    actc = store.enqueue_queued_work(draft("root", "after", ACTC, X))
    esb = store.enqueue_queued_work(draft("root", "earliest", ESB, X))
    assert claim(store, boundary=CKPT) is None
    assert ids(store.list_pending_queued_work("root")) == [actc.batch_id, esb.batch_id]
    assert ids(must_claim(store, boundary=IDLE)) == [actc.batch_id]
    assert ids(must_claim(store, boundary=CKPT)) == [esb.batch_id]


def test_n10_variant_checkpoint_group_stops_at_actc(clocked_store: Store) -> None:
    store = clocked_store
    esb = store.enqueue_queued_work(jg("esb", "g", ESB))
    store.enqueue_queued_work(jg("actc", "g", ACTC))
    assert ids(must_claim(store, boundary=CKPT)) == [esb.batch_id]
    assert claim(store, boundary=CKPT) is None


@pytest.mark.parametrize("shape", ["subset", "wrong_member", "duplicate", "superset", "reordered_dup"])
def test_n11_completion_with_wrong_batch_list_is_rejected(clocked_store: Store, db_path: Path, shape: str) -> None:
    store = clocked_store
    a = store.enqueue_queued_work(jg("a", "g"))
    b = store.enqueue_queued_work(jg("b", "g"))
    z = store.enqueue_queued_work(draft("root", "z", ESB, X))
    held = must_claim(store)
    assert ids(held) == [a.batch_id, b.batch_id]
    batch_ids = {
        "subset": [a.batch_id],
        "wrong_member": [a.batch_id, z.batch_id],
        "duplicate": [a.batch_id, a.batch_id],
        "superset": [a.batch_id, b.batch_id, z.batch_id],
        "reordered_dup": [b.batch_id, a.batch_id, b.batch_id],
    }[shape]
    bad = msgspec.structs.replace(held.completion(), batch_ids=batch_ids)
    before = raw_dump(db_path)
    with pytest.raises(QueuedWorkClaimExpired):
        store.commit_runtime_state(commit_at("root", None).completing_queue_claim(bad))
    assert raw_dump(db_path) == before
    assert store.load_session() is None
    assert ids(store.list_queued_work("root")) == [a.batch_id, b.batch_id, z.batch_id]

    # The claim is intact: its real completion (in any order) consumes exactly A and B.
    good = msgspec.structs.replace(held.completion(), batch_ids=[b.batch_id, a.batch_id])
    store.commit_runtime_state(commit_at("root", None).completing_queue_claim(good))
    assert ids(store.list_queued_work("root")) == [z.batch_id]


def test_n12_completion_for_another_session_is_rejected(clocked_store: Store, db_path: Path) -> None:
    store = clocked_store
    batch = store.enqueue_queued_work(draft("other", "elsewhere"))
    held = must_claim(store, session_id="other")
    before = raw_dump(db_path)
    with pytest.raises(QueuedWorkClaimExpired):
        store.commit_runtime_state(commit_at("root", None).completing_queue_claim(held.completion()))
    assert raw_dump(db_path) == before
    assert store.load_session() is None
    assert ids(store.list_queued_work("other")) == [batch.batch_id]
    store.renew_queued_work_claim(held, TTL)


def test_n13_cancel_edge_cases(clocked_store: Store, clock: ManualClock) -> None:
    store = clocked_store
    assert store.cancel_queued_work_batch("root", "qwb:missing") is None

    foreign = store.enqueue_queued_work(draft("other", "foreign"))
    assert store.cancel_queued_work_batch("root", foreign.batch_id) is None
    assert ids(store.list_queued_work("other")) == [foreign.batch_id]

    delayed = store.enqueue_queued_work(draft("root", "delayed").with_available_at_ms(clock() + 10_000))
    assert store.cancel_queued_work_batch("root", delayed.batch_id) == delayed

    expiring = store.enqueue_queued_work(draft("root", "expiring"))
    held = must_claim(store, ttl=100)
    assert ids(held) == [expiring.batch_id]
    assert store.cancel_queued_work_batch("root", expiring.batch_id) is None  # live claim
    clock.advance(100)
    assert store.cancel_queued_work_batch("root", expiring.batch_id) == expiring
    with pytest.raises(QueuedWorkClaimExpired):
        complete(store, held)
    with pytest.raises(QueuedWorkClaimExpired):
        store.renew_queued_work_claim(held, TTL)
    assert store.load_session() is None
    assert store.list_queued_work("root") == []


def test_n14_source_key_after_removal_creates_a_new_batch(clocked_store: Store) -> None:
    store = clocked_store
    first = store.enqueue_queued_work(draft("root", "one").with_source_key("host:K"))
    held = must_claim(store)
    # While the row exists (even live-claimed) the key dedupes.
    assert store.enqueue_queued_work(draft("root", "two").with_source_key("host:K")) == first
    complete(store, held)
    again = store.enqueue_queued_work(draft("root", "three").with_source_key("host:K"))
    assert again.batch_id != first.batch_id
    assert again.enqueue_seq > first.enqueue_seq
    assert text_of(again) == "three"


def test_n15_null_source_keys_never_dedupe(clocked_store: Store) -> None:
    store = clocked_store
    one = store.enqueue_queued_work(draft("root", "same"))
    two = store.enqueue_queued_work(draft("root", "same"))
    assert one.batch_id != two.batch_id
    assert one.enqueue_seq < two.enqueue_seq
    assert ids(store.list_queued_work("root")) == [one.batch_id, two.batch_id]


def test_n16_max_batches_zero_writes_nothing(clocked_store: Store, db_path: Path) -> None:
    store = clocked_store
    batch = store.enqueue_queued_work(draft("root", "work"))
    before = raw_dump(db_path)
    assert claim(store, max_batches=0) is None
    assert raw_dump(db_path) == before
    got = must_claim(store)
    assert ids(got) == [batch.batch_id]
    assert got.fencing_token == 1


def test_n18_by_ids_mismatch_has_no_side_effects(clocked_store: Store, db_path: Path) -> None:
    store = clocked_store
    b1 = store.enqueue_queued_work(draft("root", "first"))
    b2 = store.enqueue_queued_work(draft("root", "second"))
    before = raw_dump(db_path)
    for wanted in ([b2.batch_id], [b1.batch_id, b2.batch_id], [b2.batch_id, b1.batch_id], ["qwb:unknown"]):
        assert store.claim_ready_queued_work_by_batch_ids("root", "owner", IDLE, TTL, wanted) is None
    assert store.claim_ready_queued_work_by_batch_ids("root", "owner", IDLE, TTL, []) is None
    assert raw_dump(db_path) == before  # no fence consumed, no claim left behind
    assert raw_batch_row(db_path, b1.batch_id)["claim_token"] is None  # type: ignore[index]
    exact = store.claim_ready_queued_work_by_batch_ids("root", "owner", IDLE, TTL, [b1.batch_id])
    assert exact is not None and ids(exact) == [b1.batch_id]
    assert exact.fencing_token == 1


def test_n18_head_is_never_observable_as_claimed_during_rejected_exact_claims(db_path: Path) -> None:
    with Store.open(db_path) as store:
        b1 = store.enqueue_queued_work(draft("root", "first"))
        b2 = store.enqueue_queued_work(draft("root", "second"))
        stop = threading.Event()
        reading = threading.Event()
        seen: list[list[str]] = []
        errors: list[BaseException] = []

        def watch() -> None:
            try:
                with Store.open(db_path) as watcher:
                    while not stop.is_set():
                        seen.append(ids(watcher.list_pending_queued_work("root")))
                        reading.set()
            except BaseException as exc:
                errors.append(exc)
            finally:
                reading.set()

        thread = threading.Thread(target=watch)
        thread.start()
        # On a loaded machine the claims below could all finish before the watcher has opened its store.
        reading.wait(timeout=30)
        try:
            for _ in range(200):
                assert store.claim_ready_queued_work_by_batch_ids("root", "o", IDLE, TTL, [b2.batch_id]) is None
        finally:
            stop.set()
            thread.join(timeout=30)
        assert errors == []
        assert seen, "the watcher never read"
        assert all(view == [b1.batch_id, b2.batch_id] for view in seen)
        assert must_claim(store).fencing_token == 1


def test_n19_partial_renew_rolls_back(clocked_store: Store, clock: ManualClock, db_path: Path) -> None:
    store = clocked_store
    a = store.enqueue_queued_work(jg("a", "g"))
    b = store.enqueue_queued_work(jg("b", "g"))
    claim_a = must_claim(store, owner_id="owner-a", ttl=100)
    assert ids(claim_a) == [a.batch_id, b.batch_id]
    clock.advance(100)
    claim_b = must_claim(store, owner_id="owner-b", max_batches=1)
    assert ids(claim_b) == [a.batch_id]

    row_before = raw_batch_row(db_path, b.batch_id)
    with pytest.raises(QueuedWorkClaimExpired):
        store.renew_queued_work_claim(claim_a, TTL)
    assert raw_batch_row(db_path, b.batch_id) == row_before
    assert row_before is not None and row_before["claim_expires_at_ms"] == claim_a.expires_at_epoch_ms
    assert ids(store.list_pending_queued_work("root")) == [b.batch_id]
    taken = must_claim(store, owner_id="owner-c")
    assert ids(taken) == [b.batch_id]
    assert taken.fencing_token > claim_b.fencing_token


def test_n20_ttl_zero_claim_is_born_expired(clocked_store: Store, clock: ManualClock) -> None:
    store = clocked_store
    batch = store.enqueue_queued_work(draft("root", "work"))
    zero = must_claim(store, ttl=0)
    assert zero.expires_at_epoch_ms == zero.claimed_at_epoch_ms == clock()
    assert ids(store.list_pending_queued_work("root")) == [batch.batch_id]
    other = must_claim(store, owner_id="other")
    assert ids(other) == [batch.batch_id]
    assert other.fencing_token > zero.fencing_token
    with pytest.raises(QueuedWorkClaimExpired):
        complete(store, zero)
    complete(store, other)
    assert store.list_queued_work("root") == []


def test_n21_list_pending_versus_list(clocked_store: Store, clock: ManualClock) -> None:
    store = clocked_store
    expired = store.enqueue_queued_work(draft("root", "expired"))
    assert ids(must_claim(store, ttl=100)) == [expired.batch_id]
    live = store.enqueue_queued_work(draft("root", "live"))
    assert ids(must_claim(store)) == [live.batch_id]
    delayed = store.enqueue_queued_work(draft("root", "delayed").with_available_at_ms(clock() + 10_000))
    ready = store.enqueue_queued_work(draft("root", "ready"))
    clock.advance(100)
    assert ids(store.list_queued_work("root")) == [b.batch_id for b in (expired, live, delayed, ready)]
    assert ids(store.list_pending_queued_work("root")) == [b.batch_id for b in (expired, delayed, ready)]
    # Listing exposes no claim state: a claimed batch lists exactly as it was enqueued.
    assert store.list_queued_work("root") == [expired, live, delayed, ready]


def test_n22_several_completions_in_one_commit(clocked_store: Store) -> None:
    store = clocked_store
    store.enqueue_queued_work(draft("root", "one"))
    store.enqueue_queued_work(draft("root", "two"))
    first = must_claim(store)
    second = must_claim(store)
    complete(store, first, second)
    assert store.list_queued_work("root") == []
    assert head_revision(store) == 1


def test_n22_one_stale_completion_voids_the_whole_commit(
    clocked_store: Store, clock: ManualClock, db_path: Path
) -> None:
    store = clocked_store
    one = store.enqueue_queued_work(draft("root", "one"))
    two = store.enqueue_queued_work(draft("root", "two"))
    valid = must_claim(store)
    stale = must_claim(store, ttl=100)
    clock.advance(100)
    thief = must_claim(store, owner_id="thief")
    assert ids(thief) == [two.batch_id]
    before = raw_dump(db_path)
    with pytest.raises(QueuedWorkClaimExpired):
        complete(store, valid, stale)
    assert raw_dump(db_path) == before
    assert ids(store.list_queued_work("root")) == [one.batch_id, two.batch_id]
    store.renew_queued_work_claim(valid, TTL)  # the valid claim was not consumed
    complete(store, valid, thief)
    assert store.list_queued_work("root") == []


def test_n23_stamp_replay_skips_completion_checks(clocked_store: Store) -> None:
    store = clocked_store
    store.enqueue_queued_work(draft("root", "work"))
    held = must_claim(store)
    commit = commit_at("root", None).with_turn_commit(stamp("turn-1", "hash-1"))
    first = store.commit_runtime_state(commit.completing_queue_claim(held.completion()))
    replay = store.commit_runtime_state(commit.completing_queue_claim(held.completion()))
    assert replay == first
    bogus = msgspec.structs.replace(held.completion(), lease_token="nonsense", batch_ids=["qwb:nothing"])
    assert store.commit_runtime_state(commit.completing_queue_claim(bogus)) == first
    assert head_revision(store) == first.head_revision == 1
    assert store.list_queued_work("root") == []


def test_n24_concurrent_claimers_on_separate_connections(db_path: Path) -> None:
    total, workers = 100, 8
    with Store.open(db_path) as seed:
        enqueued = [seed.enqueue_queued_work(draft("root", f"work-{i}")) for i in range(total)]
    barrier = threading.Barrier(workers)
    delivered: dict[str, list[tuple[int, str]]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(owner: str) -> None:
        mine: list[tuple[int, str]] = []
        try:
            with Store.open(db_path) as store:
                barrier.wait(timeout=30)
                while True:
                    held = claim(store, owner_id=owner)
                    if held is None:
                        if not store.list_queued_work("root"):
                            break
                        continue
                    mine.extend((b.enqueue_seq, b.batch_id) for b in held.batches)
                    store.commit_runtime_state(commit_at("root", None).completing_queue_claim(held.completion()))
        except BaseException as exc:
            with lock:
                errors.append(exc)
        with lock:
            delivered[owner] = mine

    threads = [threading.Thread(target=run, args=(f"worker-{i}",)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    all_ids = [batch_id for mine in delivered.values() for _, batch_id in mine]
    assert len(all_ids) == total
    assert set(all_ids) == {b.batch_id for b in enqueued}
    for mine in delivered.values():
        seqs = [seq for seq, _ in mine]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    with Store.open(db_path) as check:
        assert check.list_queued_work("root") == []
        assert head_revision(check) == total


def test_n25_huge_ttl_never_expires(clocked_store: Store, clock: ManualClock) -> None:
    store = clocked_store
    batch = store.enqueue_queued_work(draft("root", "work"))
    held = must_claim(store, ttl=MAX_MS)
    assert held.expires_at_epoch_ms == MAX_MS  # saturated, not wrapped
    clock.set(MAX_MS - 1)
    assert claim(store, owner_id="thief") is None
    assert store.list_pending_queued_work("root") == []
    assert store.cancel_queued_work_batch("root", batch.batch_id) is None
    renewed = store.renew_queued_work_claim(held, MAX_MS)
    assert renewed.expires_at_epoch_ms == MAX_MS


@pytest.mark.parametrize("ttl", [2**64 - 1, 2**63, -1])
def test_n25_out_of_range_ttl_is_rejected(clocked_store: Store, db_path: Path, ttl: int) -> None:
    store = clocked_store
    store.enqueue_queued_work(draft("root", "work"))
    before = raw_dump(db_path)
    with pytest.raises(InvalidInput):
        claim(store, ttl=ttl)
    assert raw_dump(db_path) == before
    held = must_claim(store)
    with pytest.raises(InvalidInput):
        store.renew_queued_work_claim(held, ttl)
    assert claim(store, owner_id="thief") is None  # still live after the rejected renew


def test_n25_available_at_out_of_range_is_rejected_and_max_is_never_ready(
    clocked_store: Store, clock: ManualClock, db_path: Path
) -> None:
    store = clocked_store
    before = raw_dump(db_path)
    with pytest.raises(InvalidInput):
        store.enqueue_queued_work(draft("root", "too late").with_available_at_ms(2**63))
    assert raw_dump(db_path) == before
    assert store.list_queued_work("root") == []

    far = store.enqueue_queued_work(draft("root", "far").with_available_at_ms(MAX_MS))
    assert far.available_at_ms == MAX_MS
    assert claim(store) is None
    clock.set(MAX_MS - 1)
    assert claim(store) is None
    clock.set(MAX_MS)
    assert ids(must_claim(store)) == [far.batch_id]


def test_n26_empty_batch(clocked_store: Store) -> None:
    store = clocked_store
    empty = store.enqueue_queued_work(QueuedWorkBatchDraft.new("root", ESB, X, []))
    assert empty.items == []
    assert store.list_queued_work("root") == [empty]
    held = must_claim(store)
    assert held.is_empty()
    assert held.batches == [empty]
    complete(store, held)
    assert store.list_queued_work("root") == []


def test_n27_corrupt_row_is_skipped_and_reported(
    clocked_store: Store, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = clocked_store
    bad = store.enqueue_queued_work(draft("root", "bad"))
    a = store.enqueue_queued_work(draft("root", "a"))
    c = store.enqueue_queued_work(draft("root", "c"))
    corrupt_delivery_policy(db_path, bad.batch_id)

    with caplog.at_level(logging.ERROR, logger="lash_store"):
        assert ids(store.list_queued_work("root")) == [a.batch_id, c.batch_id]
        assert ids(store.list_pending_queued_work("root")) == [a.batch_id, c.batch_id]
    assert bad.batch_id in caplog.text

    with pytest.raises(CorruptData) as cancel_error:
        store.cancel_queued_work_batch("root", bad.batch_id)
    assert bad.batch_id in str(cancel_error.value)
    assert raw_batch_row(db_path, bad.batch_id) is not None

    with pytest.raises(CorruptData) as by_ids_error:
        store.claim_ready_queued_work_by_batch_ids("root", "o", IDLE, TTL, [bad.batch_id])
    assert bad.batch_id in str(by_ids_error.value)
    bad_row = raw_batch_row(db_path, bad.batch_id)
    assert bad_row is not None and bad_row["claim_token"] is None

    first = must_claim(store)  # the corrupt head does not block the queue
    assert ids(first) == [a.batch_id]
    second = must_claim(store)
    assert ids(second) == [c.batch_id]
    assert claim(store) is None
    complete(store, first, second)
    assert store.list_queued_work("root") == []
    assert raw_batch_row(db_path, bad.batch_id) is not None  # quarantined, never deleted silently


def test_n27_corrupt_row_in_the_middle_of_a_join_group(clocked_store: Store, db_path: Path) -> None:
    store = clocked_store
    j1 = store.enqueue_queued_work(jg("j1", "g"))
    bad = store.enqueue_queued_work(jg("bad", "g"))
    j3 = store.enqueue_queued_work(jg("j3", "g"))
    corrupt_delivery_policy(db_path, bad.batch_id)
    # Like a delayed row, the quarantined row neither joins nor ends the group.
    assert ids(must_claim(store)) == [j1.batch_id, j3.batch_id]


def test_n28_enqueue_seq_is_never_reused(clocked_store: Store) -> None:
    store = clocked_store
    a = store.enqueue_queued_work(draft("root", "a"))
    b = store.enqueue_queued_work(draft("root", "b"))
    assert store.cancel_queued_work_batch("root", b.batch_id) is not None
    c = store.enqueue_queued_work(draft("root", "c"))
    assert a.enqueue_seq < b.enqueue_seq < c.enqueue_seq
    held = must_claim(store, max_batches=1)
    store.abandon_queued_work_claim(held)
    for batch in store.list_queued_work("root"):
        assert store.cancel_queued_work_batch("root", batch.batch_id) is not None
    d = store.enqueue_queued_work(draft("root", "d"))
    assert d.enqueue_seq > c.enqueue_seq


def test_n28_seq_not_reused_after_completion_or_reopen(db_path: Path) -> None:
    with Store.open(db_path) as store:
        only = store.enqueue_queued_work(draft("root", "only"))
        complete(store, must_claim(store))
    with Store.open(db_path) as store:
        after = store.enqueue_queued_work(draft("root", "after"))
        assert after.enqueue_seq > only.enqueue_seq


# ---------------------------------------------------------------------------
# Round-trip exactness


def rich_turn_input() -> TurnInput:
    return TurnInput(
        items=[TextItem(text="what is this?")],
        protocol_turn_options={"payload": {"mode": "fast", "n": [1, 2.5, None, True]}},
        trace_turn_id="turn-42",
    ).with_image_ref("img-1", bytes(range(256)) + b"\x00\x89PNG")


ROUND_TRIP_PAYLOADS: dict[str, QueuedWorkPayload] = {
    "turn_input": QueuedWorkPayload.turn_input(rich_turn_input()),
    "session_command": QueuedWorkPayload.session_command(
        {"kind": "refresh_tool_surface", "reason": "plugin reloaded", "expected_generation": 3}
    ),
    "reset_command": QueuedWorkPayload.session_command({"kind": "reset_session", "reason": "user asked"}),
    "process_wake": QueuedWorkPayload.process_wake(wake_dict("process-9", 12)),
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_PAYLOADS))
def test_payload_round_trip_is_exact(db_path: Path, clock: ManualClock, name: str) -> None:
    payload = ROUND_TRIP_PAYLOADS[name]
    draft_ = QueuedWorkBatchDraft.new("root", ESB, J, [payload, payload]).with_source_key(f"host:{name}")
    draft_ = draft_.with_merge_key(MergeKey.group("rt")).with_available_at_ms(clock() - 5)
    with Store.open(db_path, StoreOptions(clock=clock)) as store:
        enqueued = store.enqueue_queued_work(draft_)
        assert [item.payload for item in enqueued.items] == [payload, payload]
        assert [item.item_id for item in enqueued.items] == [f"{enqueued.batch_id}:item:{i}" for i in (0, 1)]
        assert (enqueued.session_id, enqueued.source_key) == ("root", f"host:{name}")
        assert (enqueued.delivery_policy, enqueued.slot_policy) == (ESB, J)
        assert enqueued.merge_key == MergeKey.group("rt")
        assert enqueued.available_at_ms == clock() - 5
        assert store.list_queued_work("root") == [enqueued]
        assert store.list_pending_queued_work("root") == [enqueued]
    with Store.open(db_path, StoreOptions(clock=clock)) as reopened:
        assert reopened.list_queued_work("root") == [enqueued]
        held = must_claim(reopened)
        assert held.batches == [enqueued]
    if name == "turn_input":
        ti = held.batches[0].items[0].payload.input
        assert ti is not None
        assert ti.image_blobs == {"img-1": bytes(range(256)) + b"\x00\x89PNG"}
        assert isinstance(ti.image_blobs["img-1"], bytes)
        assert ti.trace_turn_id == "turn-42"
        assert ti.protocol_turn_options == {"payload": {"mode": "fast", "n": [1, 2.5, None, True]}}


# ---------------------------------------------------------------------------
# Bad input: InvalidInput naming the field, nothing written


@pytest.fixture
def busy_store(clocked_store: Store) -> Iterator[tuple[Store, QueuedWorkClaim]]:
    """A store with a live claim, a ready batch, a delayed batch and another session's batch."""
    store = clocked_store
    store.enqueue_queued_work(draft("root", "held"))
    store.enqueue_queued_work(draft("root", "ready").with_source_key("host:ready"))
    store.enqueue_queued_work(draft("root", "delayed").with_available_at_ms(4_102_444_800_000))
    store.enqueue_queued_work(draft("other", "other"))
    yield store, must_claim(store, owner_id="holder")


def _bad_calls() -> dict[str, Callable[[Store, QueuedWorkClaim], Any]]:
    bogus_payload = QueuedWorkPayload(kind="bogus")  # type: ignore[arg-type]
    unencodable = QueuedWorkPayload.session_command({"kind": "x", "live": object()})
    good = draft("root", "fine")
    not_a_boundary: Any = "active_turn_checkpoint"
    return {
        "enqueue_empty_session": lambda s, c: s.enqueue_queued_work(draft("", "x")),
        "enqueue_non_str_session": lambda s, c: s.enqueue_queued_work(draft(7, "x")),  # type: ignore[arg-type]
        "enqueue_empty_source_key": lambda s, c: s.enqueue_queued_work(good.with_source_key("")),
        "enqueue_unknown_payload_kind": lambda s, c: s.enqueue_queued_work(
            QueuedWorkBatchDraft.new("root", ESB, X, [bogus_payload])
        ),
        "enqueue_unknown_kind_after_good": lambda s, c: s.enqueue_queued_work(
            QueuedWorkBatchDraft.new(
                "root", ESB, X, [QueuedWorkPayload.turn_input(TurnInput.text("ok")), bogus_payload]
            )
        ),
        "enqueue_turn_input_without_input": lambda s, c: s.enqueue_queued_work(
            QueuedWorkBatchDraft.new("root", ESB, X, [QueuedWorkPayload(kind="turn_input")])
        ),
        "enqueue_unencodable_payload": lambda s, c: s.enqueue_queued_work(
            QueuedWorkBatchDraft.new("root", ESB, X, [unencodable])
        ),
        "enqueue_unencodable_with_new_key": lambda s, c: s.enqueue_queued_work(
            QueuedWorkBatchDraft.new("root", ESB, X, [unencodable]).with_source_key("host:fresh")
        ),
        "enqueue_negative_available_at": lambda s, c: s.enqueue_queued_work(good.with_available_at_ms(-1)),
        "enqueue_oversized_available_at": lambda s, c: s.enqueue_queued_work(good.with_available_at_ms(2**63)),
        "enqueue_float_available_at": lambda s, c: s.enqueue_queued_work(good.with_available_at_ms(1.5)),  # type: ignore[arg-type]
        "enqueue_bad_delivery": lambda s, c: s.enqueue_queued_work(
            msgspec.structs.replace(good, delivery_policy="earliest_safe_boundary")
        ),
        "enqueue_not_a_draft": lambda s, c: s.enqueue_queued_work({"session_id": "root"}),  # type: ignore[arg-type]
        "claim_empty_session": lambda s, c: s.claim_ready_queued_work("", "o", IDLE, TTL, 10),
        "claim_empty_owner": lambda s, c: s.claim_ready_queued_work("root", "", IDLE, TTL, 10),
        "claim_negative_ttl": lambda s, c: s.claim_ready_queued_work("root", "o", IDLE, -1, 10),
        "claim_oversized_ttl": lambda s, c: s.claim_ready_queued_work("root", "o", IDLE, 2**64 - 1, 10),
        "claim_negative_max": lambda s, c: s.claim_ready_queued_work("root", "o", IDLE, TTL, -1),
        "claim_string_boundary": lambda s, c: s.claim_ready_queued_work("root", "o", "idle", TTL, 10),  # type: ignore[arg-type]
        "claim_none_boundary": lambda s, c: s.claim_ready_queued_work("root", "o", None, TTL, 10),  # type: ignore[arg-type]
        "by_ids_empty_session": lambda s, c: s.claim_ready_queued_work_by_batch_ids("", "o", IDLE, TTL, c.batch_ids),
        "by_ids_empty_owner": lambda s, c: s.claim_ready_queued_work_by_batch_ids("root", "", IDLE, TTL, ["qwb:x"]),
        "by_ids_empty_id": lambda s, c: s.claim_ready_queued_work_by_batch_ids("root", "o", IDLE, TTL, [""]),
        "by_ids_negative_ttl": lambda s, c: s.claim_ready_queued_work_by_batch_ids("root", "o", IDLE, -5, ["qwb:x"]),
        "by_ids_bad_boundary": lambda s, c: s.claim_ready_queued_work_by_batch_ids(
            "root", "o", not_a_boundary, TTL, ["qwb:x"]
        ),
        "renew_negative_ttl": lambda s, c: s.renew_queued_work_claim(c, -1),
        "renew_oversized_ttl": lambda s, c: s.renew_queued_work_claim(c, 2**63),
        "abandon_empty_claim_id": lambda s, c: s.abandon_queued_work_claim(msgspec.structs.replace(c, claim_id="")),
        "cancel_empty_session": lambda s, c: s.cancel_queued_work_batch("", c.batch_ids[0]),
        "cancel_empty_batch": lambda s, c: s.cancel_queued_work_batch("root", ""),
        "list_empty_session": lambda s, c: s.list_queued_work(""),
        "list_pending_empty_session": lambda s, c: s.list_pending_queued_work(""),
        "commit_negative_fence": lambda s, c: s.commit_runtime_state(
            commit_at("root", None).completing_queue_claim(msgspec.structs.replace(c.completion(), fencing_token=-1))
        ),
        "commit_empty_lease_token": lambda s, c: s.commit_runtime_state(
            commit_at("root", None).completing_queue_claim(msgspec.structs.replace(c.completion(), lease_token=""))
        ),
    }


BAD_CALLS = _bad_calls()


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_input_raises_invalid_input_and_writes_nothing(
    busy_store: tuple[Store, QueuedWorkClaim], db_path: Path, case: str
) -> None:
    store, held = busy_store
    listed_before = {s: store.list_queued_work(s) for s in ("root", "other")}
    pending_before = store.list_pending_queued_work("root")
    dump_before = raw_dump(db_path)
    with pytest.raises(InvalidInput) as info:
        BAD_CALLS[case](store, held)
    assert isinstance(info.value, ValueError)
    assert info.value.what  # names the field
    assert raw_dump(db_path) == dump_before
    assert {s: store.list_queued_work(s) for s in ("root", "other")} == listed_before
    assert store.list_pending_queued_work("root") == pending_before
    # The store stays usable and the live claim is intact.
    assert store.renew_queued_work_claim(held, TTL).claim_id == held.claim_id


def test_completion_naming_no_batch_is_refused_and_writes_nothing(
    busy_store: tuple[Store, QueuedWorkClaim], db_path: Path
) -> None:
    store, held = busy_store
    before = raw_dump(db_path)
    empty = msgspec.structs.replace(held.completion(), batch_ids=[])
    with pytest.raises((InvalidInput, QueuedWorkClaimExpired)):
        store.commit_runtime_state(commit_at("root", None).completing_queue_claim(empty))
    assert raw_dump(db_path) == before
    assert store.renew_queued_work_claim(held, TTL).claim_id == held.claim_id


def test_completion_checks_come_after_head_cas(clocked_store: Store, db_path: Path) -> None:
    """Order of checks (4.8): a stale CAS reports HeadRevisionConflict even with a valid completion, writes nothing."""
    store = clocked_store
    store.enqueue_queued_work(draft("root", "work"))
    held = must_claim(store)
    before = raw_dump(db_path)
    with pytest.raises(HeadRevisionConflict):
        store.commit_runtime_state(commit_at("root", 5).completing_queue_claim(held.completion()))
    assert raw_dump(db_path) == before
    complete(store, held, expected=0)
    assert store.list_queued_work("root") == []
