"""Ports of the queue regression tests of lash-sqlite-store 0.1.0-alpha.42 (storage_fixes.rs, "Finding 2").

Plus process variants: several processes racing for one batch, and four processes draining
200 exclusive batches from one file, each completing its claims inside ``commit_runtime_state``.
Children use the ``spawn`` start method and open their own stores.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import Any

import msgspec

from lash_store import Store
from lash_store.model import (
    DeliveryPolicy,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkPayload,
    SlotPolicy,
    TurnInput,
)
from tests.helpers import commit_at

IDLE = QueuedWorkClaimBoundary.IDLE
CHILD_TIMEOUT_S = 60


def exclusive_draft(session_id: str, text: str) -> QueuedWorkBatchDraft:
    return QueuedWorkBatchDraft.new(
        session_id,
        DeliveryPolicy.EARLIEST_SAFE_BOUNDARY,
        SlotPolicy.EXCLUSIVE,
        [QueuedWorkPayload.turn_input(TurnInput.text(text))],
    )


def spawn() -> SpawnContext:
    return multiprocessing.get_context("spawn")


def collect(results: Any, count: int) -> list[Any]:
    """Read ``count`` results from a multiprocessing queue, failing (not hanging) if a child died."""
    out = []
    for _ in range(count):
        try:
            out.append(results.get(timeout=CHILD_TIMEOUT_S))
        except queue.Empty as exc:
            raise AssertionError(f"only {len(out)} of {count} children reported") from exc
    return out


def join_all(processes: list[Any]) -> None:
    for process in processes:
        process.join(timeout=CHILD_TIMEOUT_S)
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    assert [p.exitcode for p in processes] == [0] * len(processes)


# ---------------------------------------------------------------------------
# Finding 2 (sequential)


def test_second_claim_on_held_batch_is_not_won(memory_store: Store) -> None:
    memory_store.enqueue_queued_work(exclusive_draft("root", "work"))

    claim_a = memory_store.claim_ready_queued_work("root", "owner-a", IDLE, 60_000, 10)
    assert claim_a is not None, "owner a wins the only batch"
    assert len(claim_a.batches) == 1

    claim_b = memory_store.claim_ready_queued_work("root", "owner-b", IDLE, 60_000, 10)
    assert claim_b is None, f"a batch already held by a live claim must not be re-claimed, got {claim_b!r}"

    # Owner A's claim is still the live, renewable one.
    memory_store.renew_queued_work_claim(claim_a, 60_000)


# ---------------------------------------------------------------------------
# Finding 2 (concurrent, two connections, threads)


def test_concurrent_claims_never_double_own_a_batch(db_path: Path) -> None:
    with Store.open(db_path) as seed:
        seed.enqueue_queued_work(exclusive_draft("root", "work"))

    barrier = threading.Barrier(2)
    outcomes: dict[str, QueuedWorkClaim | BaseException | None] = {}

    def run(owner: str) -> None:
        try:
            with Store.open(db_path) as store:
                barrier.wait(timeout=30)
                outcomes[owner] = store.claim_ready_queued_work("root", owner, IDLE, 60_000, 10)
        except BaseException as exc:
            outcomes[owner] = exc

    threads = [threading.Thread(target=run, args=(owner,)) for owner in ("owner-a", "owner-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=CHILD_TIMEOUT_S)

    assert set(outcomes) == {"owner-a", "owner-b"}
    errors = {owner: r for owner, r in outcomes.items() if isinstance(r, BaseException)}
    assert errors == {}, f"a contended claim must resolve cleanly, got errors: {errors!r}"
    winners = [r for r in outcomes.values() if isinstance(r, QueuedWorkClaim)]
    assert len(winners) <= 1, f"at most one owner may win the single batch, got {len(winners)} winners"
    assert len(winners) == 1, "the batch was ready, so one of the two claims must win it"
    # A successful claim must really own the batch: renewing it through a third connection succeeds.
    with Store.open(db_path) as verify:
        verify.renew_queued_work_claim(winners[0], 60_000)


# ---------------------------------------------------------------------------
# Finding 2 across processes


def _race_child(path: str, owner: str, barrier: Any, results: Any) -> None:
    try:
        with Store.open(path) as store:
            barrier.wait(timeout=CHILD_TIMEOUT_S)
            got = store.claim_ready_queued_work("root", owner, IDLE, 60_000, 10)
        results.put((owner, "ok", None if got is None else msgspec.msgpack.encode(got)))
    except BaseException as exc:
        results.put((owner, "error", repr(exc)))


def test_processes_race_for_one_batch(db_path: Path) -> None:
    with Store.open(db_path) as seed:
        batch = seed.enqueue_queued_work(exclusive_draft("root", "work"))

    ctx = spawn()
    workers = 4
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_race_child, args=(str(db_path), f"owner-{i}", barrier, results)) for i in range(workers)
    ]
    for process in processes:
        process.start()
    reports = collect(results, workers)
    join_all(processes)

    errors = [r for r in reports if r[1] != "ok"]
    assert errors == [], f"a contended claim must resolve cleanly, got {errors!r}"
    winners = [msgspec.msgpack.decode(r[2], type=QueuedWorkClaim) for r in reports if r[2] is not None]
    assert len(winners) == 1, f"exactly one process may win the single ready batch, got {len(winners)}"
    winner = winners[0]
    assert winner.batch_ids == [batch.batch_id]
    assert winner.fencing_token == 1
    with Store.open(db_path) as verify:
        renewed = verify.renew_queued_work_claim(winner, 60_000)
        assert renewed.claim_id == winner.claim_id
        assert verify.list_pending_queued_work("root") == []
        assert verify.claim_ready_queued_work("root", "late", IDLE, 60_000, 10) is None


# ---------------------------------------------------------------------------
# Four processes drain 200 exclusive batches, completing inside commits


def _drain_child(path: str, owner: str, start: Any, results: Any) -> None:
    delivered: list[tuple[int, str, int, int]] = []  # (enqueue_seq, batch_id, fencing_token, batches in claim)
    errors: list[str] = []
    try:
        with Store.open(path) as store:
            start.wait(timeout=CHILD_TIMEOUT_S)
            deadline = time.monotonic() + CHILD_TIMEOUT_S
            while True:
                if time.monotonic() > deadline:
                    errors.append("deadline reached before the queue drained")
                    break
                held = store.claim_ready_queued_work("root", owner, IDLE, 60_000, 10)
                if held is None:
                    if not store.list_queued_work("root"):
                        break
                    time.sleep(0.002)  # the rest is claimed by others and about to be committed
                    continue
                delivered.extend(
                    (b.enqueue_seq, b.batch_id, held.fencing_token, len(held.batches)) for b in held.batches
                )
                store.commit_runtime_state(commit_at("root", None).completing_queue_claim(held.completion()))
    except BaseException as exc:
        errors.append(repr(exc))
    results.put((owner, delivered, errors))


def test_four_processes_drain_200_exclusive_batches_exactly_once(db_path: Path) -> None:
    total, workers = 200, 4
    with Store.open(db_path) as seed:
        enqueued = [seed.enqueue_queued_work(exclusive_draft("root", f"work-{i}")) for i in range(total)]
    by_id = {b.batch_id: b for b in enqueued}

    ctx = spawn()
    start = ctx.Barrier(workers)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_drain_child, args=(str(db_path), f"worker-{i}", start, results)) for i in range(workers)
    ]
    for process in processes:
        process.start()
    reports = collect(results, workers)
    join_all(processes)

    errors = {owner: errs for owner, _, errs in reports if errs}
    assert errors == {}, f"workers reported errors: {errors!r}"
    all_ids = [batch_id for _, delivered, _ in reports for _, batch_id, _, _ in delivered]
    assert len(all_ids) == total, f"{len(all_ids)} deliveries for {total} batches"
    assert set(all_ids) == set(by_id), "every batch must be consumed exactly once"
    all_fences = [fence for _, delivered, _ in reports for _, _, fence, _ in delivered]
    assert len(set(all_fences)) == total, "every claim of the session carries its own fencing token"
    for owner, delivered, _ in reports:
        assert all(size == 1 for *_, size in delivered), f"{owner} got an exclusive batch in a multi-batch claim"
        seqs = [seq for seq, *_ in delivered]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"{owner} delivered out of FIFO order"
        fences = [fence for _, _, fence, _ in delivered]
        assert fences == sorted(fences), f"{owner} saw fencing tokens go backwards"
        for seq, batch_id, _, _ in delivered:
            assert by_id[batch_id].enqueue_seq == seq

    with Store.open(db_path) as check:
        assert check.list_queued_work("root") == []
        read = check.load_session()
        assert read is not None and read.head_revision == total
