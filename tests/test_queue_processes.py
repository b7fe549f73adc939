"""Leases across real processes on one SQLite file, with the real wall clock (short TTLs).

* Stale owner: A claims with a ~200 ms lease and overruns it; B reclaims (higher fence) and
  completes; A's renew and its commit carrying the old completion are rejected and write nothing.
* Compatible mode: an expired lease nobody reclaimed is still honoured across processes.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from pathlib import Path
from typing import Any

import msgspec

from lash_store import Store
from lash_store.errors import QueuedWorkClaimExpired
from lash_store.model import QueuedWorkClaim, QueuedWorkClaimBoundary, TurnCommitStamp
from lash_store.options import system_clock
from tests.helpers import commit_at, draft

IDLE = QueuedWorkClaimBoundary.IDLE
SHORT_TTL_MS = 200
WAIT_S = 60


def _stamp(turn_id: str, turn_hash: str) -> TurnCommitStamp:
    return TurnCommitStamp(session_id="root", turn_id=turn_id, turn_commit_hash=turn_hash)


def _sleep_until_epoch_ms(target_ms: int) -> None:
    while (remaining := target_ms - system_clock()) >= 0:
        time.sleep(remaining / 1000 + 0.005)


def _get(results: Any) -> Any:
    try:
        return results.get(timeout=WAIT_S)
    except queue.Empty as exc:
        raise AssertionError("a child process did not report") from exc


def _finish(processes: list[Any]) -> None:
    for process in processes:
        process.join(timeout=WAIT_S)
        if process.is_alive():
            process.kill()
            process.join()
    assert [p.exitcode for p in processes] == [0] * len(processes)


# ---------------------------------------------------------------------------
# Stale owner


def _stale_owner_a(path: str, a_claimed: Any, b_done: Any, results: Any) -> None:
    report: dict[str, Any] = {}
    try:
        with Store.open(path) as store:
            held = store.claim_ready_queued_work("root", "owner-a", IDLE, SHORT_TTL_MS, 1)
            report["claim"] = None if held is None else msgspec.msgpack.encode(held)
            a_claimed.set()
            if held is None:
                raise AssertionError("owner A found nothing to claim")
            _sleep_until_epoch_ms(held.expires_at_epoch_ms + 50)  # overrun the lease
            if not b_done.wait(WAIT_S):
                raise AssertionError("owner B never finished")
            try:
                store.renew_queued_work_claim(held, 60_000)
                report["renew"] = "ok"
            except QueuedWorkClaimExpired:
                report["renew"] = "expired"
            commit = (
                commit_at("root", None, turn_state={"by": "owner-a"})
                .with_turn_commit(_stamp("turn-a", "hash-a"))
                .completing_queue_claim(held.completion())
            )
            try:
                store.commit_runtime_state(commit)
                report["commit"] = "ok"
            except QueuedWorkClaimExpired as exc:
                report["commit"] = "expired"
                report["commit_error_claim_id"] = exc.claim_id
            report["abandoned"] = store.abandon_queued_work_claim(held)
    except BaseException as exc:
        report["error"] = repr(exc)
        a_claimed.set()
    results.put(("a", report))


def _stale_owner_b(path: str, a_claimed: Any, b_done: Any, results: Any) -> None:
    report: dict[str, Any] = {"attempts_before_expiry": 0}
    try:
        with Store.open(path) as store:
            if not a_claimed.wait(WAIT_S):
                raise AssertionError("owner A never claimed")
            deadline = time.monotonic() + 10
            while True:
                before_ms = system_clock()
                held = store.claim_ready_queued_work("root", "owner-b", IDLE, 60_000, 1)
                if held is not None:
                    break
                report["attempts_before_expiry"] += 1
                if time.monotonic() > deadline:
                    raise AssertionError("owner B never got the expired batch")
                time.sleep(0.02)
            report["claim"] = msgspec.msgpack.encode(held)
            report["claim_started_ms"] = before_ms
            result = store.commit_runtime_state(
                commit_at("root", None, turn_state={"by": "owner-b"})
                .with_turn_commit(_stamp("turn-b", "hash-b"))
                .completing_queue_claim(held.completion())
            )
            report["head_revision"] = result.head_revision
    except BaseException as exc:
        report["error"] = repr(exc)
    finally:
        b_done.set()
    results.put(("b", report))


def test_stale_owner_across_processes_is_fenced_out(db_path: Path) -> None:
    with Store.open(db_path) as seed:
        seed.commit_runtime_state(commit_at("root", None))
        batch = seed.enqueue_queued_work(draft("root", "work"))
        # A delayed bystander: listed throughout, never claimable during the test.
        other = seed.enqueue_queued_work(draft("root", "bystander").with_available_at_ms(4_102_444_800_000))

    ctx = multiprocessing.get_context("spawn")
    a_claimed, b_done, results = ctx.Event(), ctx.Event(), ctx.Queue()
    processes = [
        ctx.Process(target=_stale_owner_a, args=(str(db_path), a_claimed, b_done, results)),
        ctx.Process(target=_stale_owner_b, args=(str(db_path), a_claimed, b_done, results)),
    ]
    for process in processes:
        process.start()
    reports = dict(_get(results) for _ in processes)
    _finish(processes)
    a, b = reports["a"], reports["b"]
    assert "error" not in a, a
    assert "error" not in b, b

    claim_a = msgspec.msgpack.decode(a["claim"], type=QueuedWorkClaim)
    claim_b = msgspec.msgpack.decode(b["claim"], type=QueuedWorkClaim)
    assert claim_a.batch_ids == claim_b.batch_ids == [batch.batch_id]
    assert claim_a.expires_at_epoch_ms - claim_a.claimed_at_epoch_ms == SHORT_TTL_MS
    # B only won once A's lease had run out, and with a higher fence.
    assert claim_b.claimed_at_epoch_ms >= claim_a.expires_at_epoch_ms
    assert claim_b.fencing_token > claim_a.fencing_token
    assert claim_b.claim_id != claim_a.claim_id and claim_b.lease_token != claim_a.lease_token
    assert b["head_revision"] == 2

    # A is fenced out everywhere and its commit wrote nothing.
    assert a["renew"] == "expired"
    assert a["commit"] == "expired"
    assert a["commit_error_claim_id"] == claim_a.claim_id
    assert a["abandoned"] == 0

    with Store.open(db_path) as check:
        read = check.load_session()
        assert read is not None and read.head_revision == 2
        assert read.checkpoint is not None and read.checkpoint.turn_state == {"by": "owner-b"}
        assert [q.batch_id for q in check.list_queued_work("root")] == [other.batch_id]
        # A's turn stamp was never recorded: the same turn id with another hash commits.
        result = check.commit_runtime_state(commit_at("root", 2).with_turn_commit(_stamp("turn-a", "hash-retry")))
        assert result.head_revision == 3


# ---------------------------------------------------------------------------
# Compatible mode across processes


def _expired_owner(path: str, expired: Any, observed: Any, results: Any) -> None:
    report: dict[str, Any] = {}
    try:
        with Store.open(path) as store:
            held = store.claim_ready_queued_work("root", "owner-a", IDLE, SHORT_TTL_MS // 2, 1)
            if held is None:
                raise AssertionError("nothing to claim")
            report["claim"] = msgspec.msgpack.encode(held)
            _sleep_until_epoch_ms(held.expires_at_epoch_ms + 20)
            expired.set()
            if not observed.wait(WAIT_S):
                raise AssertionError("the observer never looked")
            renewed = store.renew_queued_work_claim(held, 60_000)  # revived: nobody reclaimed it
            report["renewed_expiry"] = renewed.expires_at_epoch_ms
            report["head_revision"] = store.commit_runtime_state(
                commit_at("root", None).completing_queue_claim(held.completion())
            ).head_revision
    except BaseException as exc:
        report["error"] = repr(exc)
        expired.set()
    results.put(report)


def test_expired_unreclaimed_claim_is_still_honoured_across_processes(db_path: Path) -> None:
    with Store.open(db_path) as seed:
        batch = seed.enqueue_queued_work(draft("root", "work"))

    ctx = multiprocessing.get_context("spawn")
    expired, observed, results = ctx.Event(), ctx.Event(), ctx.Queue()
    process = ctx.Process(target=_expired_owner, args=(str(db_path), expired, observed, results))
    process.start()
    try:
        assert expired.wait(WAIT_S)
        with Store.open(db_path) as observer:
            # The lease ran out: the batch shows as pending again (and could be cancelled or reclaimed).
            assert [q.batch_id for q in observer.list_pending_queued_work("root")] == [batch.batch_id]
    finally:
        observed.set()
    report = _get(results)
    _finish([process])
    assert "error" not in report, report
    claim_a = msgspec.msgpack.decode(report["claim"], type=QueuedWorkClaim)
    assert report["renewed_expiry"] > claim_a.expires_at_epoch_ms
    assert report["head_revision"] == 1
    with Store.open(db_path) as check:
        assert check.list_queued_work("root") == []
