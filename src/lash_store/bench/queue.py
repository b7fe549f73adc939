"""Work-queue claim throughput with several worker processes on one session file.

The parent enqueues N single-item exclusive batches, then starts W worker
processes (each opens its own :class:`~lash_store.sqlite.Store`).  After a
start barrier every worker loops::

    claim = store.claim_ready_queued_work(session, owner, IDLE, lease_ttl_ms=30_000, max_batches=1)
    store.commit_runtime_state(RuntimeCommit(session_id=session, expected_head_revision=None)
                               .completing_queue_claim(claim.completion()))

until a claim returns ``None`` and the queue is empty.  A ``None`` while
work remains counts as a lost race / empty poll and is retried after a short
sleep; it is expected only at the tail, while every remaining batch is
claimed by another worker.  ``missed_free_work`` counts the ``None`` results
seen while unclaimed work was still pending (claims serialise on the write
lock, so this should stay 0).

Verification: no batch claimed twice, every enqueued batch completed exactly
once, no batch left, the final head revision equals the number of batches,
and no worker failed.

For scale, the same protocol runs against a plain ``sqlite3`` floor (claim:
select the first free row and stamp a lease token; complete: delete the row
and bump a head revision, each in one ``BEGIN IMMEDIATE`` transaction).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import secrets
import sqlite3
import statistics
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

from lash_store.api import SessionStoreAPI
from lash_store.bench import format_us, progress, render_table, summarise_ns, workdir
from lash_store.model import (
    DeliveryPolicy,
    QueuedWorkBatchDraft,
    QueuedWorkClaimBoundary,
    QueuedWorkPayload,
    RuntimeCommit,
    SlotPolicy,
    TurnInput,
)
from lash_store.sqlite import Store

__all__ = [
    "SUMMARY_HEADERS",
    "QueueRun",
    "batch_text",
    "claim_loop",
    "format_report",
    "queued_batch",
    "run",
    "run_processes",
    "summarise",
    "summary_cells",
    "verify_run",
]

SESSION_ID = "bench-queue-session"
LEASE_TTL_MS = 30_000
EMPTY_POLL_SLEEP_S = 0.0005
BUSY_TIMEOUT_S = 15.0

WorkerResult = dict[str, Any]


# --------------------------------------------------------------------------
# Workers (module-level so that the spawn start method can import them)


def _new_result(owner: str) -> WorkerResult:
    return {
        "owner": owner,
        "pid": os.getpid(),
        "claimed": [],
        "completed": [],
        "claim_ns": [],
        "commit_ns": [],
        "empty_polls": 0,
        "missed_free_work": 0,
        "started_ns": 0,
        "finished_ns": 0,
        "error": None,
    }


def _run_worker(
    owner: str,
    barrier: Any,
    results: Any,
    body: Callable[[WorkerResult], None],
) -> None:
    """Common worker frame: wait at the barrier, run ``body``, always report a result."""
    result = _new_result(owner)
    try:
        barrier.wait(timeout=120)
        result["started_ns"] = time.monotonic_ns()
        body(result)
    except BaseException:
        result["error"] = traceback.format_exc()
    finally:
        result["finished_ns"] = time.monotonic_ns()
        results.put(result)


def claim_loop(store: SessionStoreAPI, session_id: str, owner: str) -> Callable[[WorkerResult], None]:
    """The worker body: claim and complete batches of ``session_id`` through ``store`` until its queue is empty.

    Only the public store API is used, so the same loop drives every backend.
    """

    def body(result: WorkerResult) -> None:
        clock = time.perf_counter_ns
        claim_ns, commit_ns = result["claim_ns"], result["commit_ns"]
        while True:
            started = clock()
            claim = store.claim_ready_queued_work(
                session_id, owner, QueuedWorkClaimBoundary.IDLE, LEASE_TTL_MS, max_batches=1
            )
            claimed_at = clock()
            if claim is None:
                if store.list_pending_queued_work(session_id):
                    result["missed_free_work"] += 1  # unclaimed work existed, yet the claim found none
                elif not store.list_queued_work(session_id):
                    return
                result["empty_polls"] += 1
                time.sleep(EMPTY_POLL_SLEEP_S)
                continue
            claim_ns.append(claimed_at - started)
            result["claimed"].extend(claim.batch_ids)
            commit = RuntimeCommit(session_id=session_id, expected_head_revision=None).completing_queue_claim(
                claim.completion()
            )
            started = clock()
            store.commit_runtime_state(commit)
            commit_ns.append(clock() - started)
            result["completed"].extend(claim.batch_ids)

    return body


def store_worker(path: str, session_id: str, owner: str, barrier: Any, results: Any) -> None:
    """Claim and complete batches through lash-store until the queue is empty."""
    store = Store.open(path)
    try:
        _run_worker(owner, barrier, results, claim_loop(store, session_id, owner))
    finally:
        store.close()


def floor_worker(path: str, session_id: str, owner: str, barrier: Any, results: Any) -> None:
    """The same claim/complete protocol in plain sqlite3."""
    conn = _floor_connect(path)

    def body(result: WorkerResult) -> None:
        clock = time.perf_counter_ns
        claim_ns, commit_ns = result["claim_ns"], result["commit_ns"]
        while True:
            started = clock()
            token = secrets.token_hex(32)
            conn.execute("BEGIN IMMEDIATE")
            now = time.time_ns() // 1_000_000
            row = conn.execute(
                "SELECT seq, batch_id, payload FROM queue WHERE claim_token IS NULL OR claim_expires_ms <= ? "
                "ORDER BY seq LIMIT 1",
                (now,),
            ).fetchone()
            if row is not None:
                conn.execute(
                    "UPDATE queue SET claim_token = ?, claim_owner = ?, claim_expires_ms = ? WHERE seq = ?",
                    (token, owner, now + LEASE_TTL_MS, row[0]),
                )
            conn.execute("COMMIT")
            claimed_at = clock()
            if row is None:
                free = conn.execute(
                    "SELECT count(*) FROM queue WHERE claim_token IS NULL OR claim_expires_ms <= ?",
                    (time.time_ns() // 1_000_000,),
                ).fetchone()[0]
                if free:
                    result["missed_free_work"] += 1
                elif conn.execute("SELECT count(*) FROM queue").fetchone()[0] == 0:
                    return
                result["empty_polls"] += 1
                time.sleep(EMPTY_POLL_SLEEP_S)
                continue
            claim_ns.append(claimed_at - started)
            result["claimed"].append(row[1])
            started = clock()
            conn.execute("BEGIN IMMEDIATE")
            deleted = conn.execute("DELETE FROM queue WHERE seq = ? AND claim_token = ?", (row[0], token)).rowcount
            conn.execute("UPDATE head SET revision = revision + 1 WHERE singleton = 1")
            if deleted != 1:
                conn.execute("ROLLBACK")
                raise RuntimeError(f"floor claim of {row[1]} was lost")
            conn.execute("COMMIT")
            commit_ns.append(clock() - started)
            result["completed"].append(row[1])

    try:
        _run_worker(owner, barrier, results, body)
    finally:
        conn.close()


# --------------------------------------------------------------------------
# Set-up and verification


def batch_text(number: int) -> str:
    """The user input of batch ``number`` (what every side of every queue benchmark enqueues)."""
    return f"queued user input #{number}: please continue"


def queued_batch(session_id: str, number: int) -> QueuedWorkBatchDraft:
    """Batch ``number`` as lash-store enqueues it: one user input, exclusive, delivered after the turn's commit."""
    return QueuedWorkBatchDraft.new(
        session_id,
        DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT,
        SlotPolicy.EXCLUSIVE,
        [QueuedWorkPayload.turn_input(TurnInput.text(batch_text(number)))],
    )


def _floor_connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL").fetchone()
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _enqueue_store(path: Path, batches: int) -> tuple[list[str], float]:
    """Enqueue through lash-store, one transaction per batch; returns (batch ids, seconds)."""
    ids = []
    with Store.open(path) as store:
        started = time.perf_counter()
        for number in range(batches):
            ids.append(store.enqueue_queued_work(queued_batch(SESSION_ID, number)).batch_id)
        return ids, time.perf_counter() - started


def _enqueue_floor(path: Path, batches: int) -> tuple[list[str], float]:
    conn = _floor_connect(str(path))
    try:
        conn.executescript(
            "CREATE TABLE queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, batch_id TEXT NOT NULL UNIQUE, "
            "payload BLOB NOT NULL, claim_token TEXT, claim_owner TEXT, claim_expires_ms INTEGER NOT NULL DEFAULT 0);"
            "CREATE TABLE head (singleton INTEGER PRIMARY KEY CHECK (singleton = 1), revision INTEGER NOT NULL);"
            "INSERT INTO head VALUES (1, 0);"
        )
        ids = []
        started = time.perf_counter()
        for number in range(batches):
            batch_id = f"floor:{number:06d}"
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO queue (batch_id, payload) VALUES (?, ?)",
                (batch_id, batch_text(number).encode()),
            )
            conn.execute("COMMIT")
            ids.append(batch_id)
        return ids, time.perf_counter() - started
    finally:
        conn.close()


def _store_final_state(path: Path) -> tuple[int, int]:
    with Store.open(path) as store:
        read = store.load_session()
        return (read.head_revision if read is not None else 0), len(store.list_queued_work(SESSION_ID))


def _floor_final_state(path: Path) -> tuple[int, int]:
    conn = _floor_connect(str(path))
    try:
        revision = conn.execute("SELECT revision FROM head").fetchone()[0]
        remaining = conn.execute("SELECT count(*) FROM queue").fetchone()[0]
        return int(revision), int(remaining)
    finally:
        conn.close()


def _run_workers(
    context: BaseContext,
    target: Callable[[str, str, str, Any, Any], None],
    path: Path,
    workers: int,
) -> list[WorkerResult]:
    return run_processes(
        context, target, [(str(path), SESSION_ID, f"worker-{n}") for n in range(workers)], lambda args: str(args[-1])
    )


def run_processes(
    context: BaseContext,
    target: Callable[..., None],
    worker_args: list[tuple[Any, ...]],
    owner_of: Callable[[tuple[Any, ...]], str],
) -> list[WorkerResult]:
    """Start one process per entry of ``worker_args`` (each called as ``target(*args, barrier, results)``).

    Waits for every report (bounded), kills stragglers, and returns the
    reports sorted by owner; a process that died without reporting gets a
    report with an error, so verification fails instead of hanging.
    """
    workers = len(worker_args)
    barrier = context.Barrier(workers)
    results = context.Queue()
    processes = [
        context.Process(  # type: ignore[attr-defined]
            target=target, args=(*args, barrier, results), name=f"bench-worker-{n}"
        )
        for n, args in enumerate(worker_args)
    ]
    for process in processes:
        process.start()
    collected: list[WorkerResult] = []
    deadline = time.monotonic() + 3_600
    while len(collected) < workers and time.monotonic() < deadline:
        try:
            collected.append(results.get(timeout=1.0))
        except Exception:  # queue.Empty: check for workers that died without reporting
            if all(not p.is_alive() for p in processes) and results.empty():
                break
    for process in processes:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
            process.join()
    reported = {result["owner"] for result in collected}
    for args, process in zip(worker_args, processes, strict=True):
        owner = owner_of(args)
        if owner not in reported:
            missing = _new_result(owner)
            missing["error"] = f"worker exited with code {process.exitcode} without reporting"
            collected.append(missing)
    return sorted(collected, key=lambda result: str(result["owner"]))


@dataclass(frozen=True, slots=True)
class QueueRun:
    """One run of one side: the workers' reports and the final state of the session."""

    results: list[WorkerResult]
    enqueued: list[str]
    final_revision: int
    remaining: int
    enqueue_s: float

    @property
    def elapsed_s(self) -> float:
        started = [result["started_ns"] for result in self.results if result["started_ns"]]
        finished = [result["finished_ns"] for result in self.results if result["started_ns"]]
        return (max(finished) - min(started)) / 1e9 if started else math.nan

    @property
    def claims(self) -> int:
        return sum(len(result["claimed"]) for result in self.results)


def verify_run(run: QueueRun) -> dict[str, Any]:
    """Exactly-once check of one run: nothing claimed or completed twice, nothing lost, head == batches."""
    claimed = Counter(batch for result in run.results for batch in result["claimed"])
    completed = Counter(batch for result in run.results for batch in result["completed"])
    expected = set(run.enqueued)
    errors = [f"{result['owner']}: {result['error']}" for result in run.results if result["error"]]
    duplicates = sorted(batch for batch, count in claimed.items() if count > 1)
    lost = sorted(expected - set(completed))
    completed_twice = sorted(batch for batch, count in completed.items() if count > 1)
    unexpected = sorted((set(claimed) | set(completed)) - expected)
    ok = (
        not errors
        and not duplicates
        and not lost
        and not completed_twice
        and not unexpected
        and run.remaining == 0
        and run.final_revision == len(run.enqueued)
    )
    return {
        "ok": ok,
        "enqueued": len(run.enqueued),
        "completed": sum(completed.values()),
        "claimed_twice": duplicates[:20],
        "completed_twice": completed_twice[:20],
        "lost": lost[:20],
        "lost_count": len(lost),
        "unexpected": unexpected[:20],
        "remaining_batches": run.remaining,
        "final_head_revision": run.final_revision,
        "expected_head_revision": len(run.enqueued),
        "worker_errors": errors,
    }


def summarise(runs: list[QueueRun]) -> dict[str, Any]:
    """Figures over all runs of one side: median throughput, pooled latencies, summed races.

    ``verification.ok`` holds only if every run verified; the details shown
    are those of the first failing run (or of the last run).
    """
    checks = [verify_run(run) for run in runs]
    shown = next((check for check in checks if not check["ok"]), checks[-1])
    per_worker: dict[str, dict[str, Any]] = {}
    for run in runs:
        for result in run.results:
            entry = per_worker.setdefault(result["owner"], {"owner": result["owner"], "claims": 0, "lost_races": 0})
            entry["claims"] += len(result["claimed"])
            entry["lost_races"] += int(result["empty_polls"])
    throughput = [run.claims / run.elapsed_s if run.elapsed_s > 0 else math.nan for run in runs]
    return {
        "runs": len(runs),
        "claims": sum(run.claims for run in runs),
        "elapsed_s": sum(run.elapsed_s for run in runs),
        "claims_per_s": statistics.median(throughput),
        "claims_per_s_per_run": throughput,
        "claim_latency_us": summarise_ns([ns for run in runs for r in run.results for ns in r["claim_ns"]]),
        "commit_latency_us": summarise_ns([ns for run in runs for r in run.results for ns in r["commit_ns"]]),
        "lost_races": sum(int(r["empty_polls"]) for run in runs for r in run.results),
        "missed_free_work": sum(int(r["missed_free_work"]) for run in runs for r in run.results),
        "enqueue_per_s": statistics.median(
            len(run.enqueued) / run.enqueue_s if run.enqueue_s > 0 else math.nan for run in runs
        ),
        "per_worker": sorted(per_worker.values(), key=lambda entry: str(entry["owner"])),
        "verification": {**shown, "ok": all(check["ok"] for check in checks), "runs_verified": len(checks)},
    }


def _store_pass(context: BaseContext, directory: Path, batches: int, workers: int) -> QueueRun:
    path = directory / "queue-store.db"
    enqueued, enqueue_s = _enqueue_store(path, batches)
    results = _run_workers(context, store_worker, path, workers)
    revision, remaining = _store_final_state(path)
    return QueueRun(results, enqueued, revision, remaining, enqueue_s)


def _floor_pass(context: BaseContext, directory: Path, batches: int, workers: int) -> QueueRun:
    path = directory / "queue-floor.db"
    enqueued, enqueue_s = _enqueue_floor(path, batches)
    results = _run_workers(context, floor_worker, path, workers)
    revision, remaining = _floor_final_state(path)
    return QueueRun(results, enqueued, revision, remaining, enqueue_s)


def run(
    *,
    batches: int,
    workers: int = 4,
    repeat: int = 1,
    start_method: str = "spawn",
    floor: bool = True,
    base_dir: str | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run the queue benchmark and return its JSON-ready report (``verification.ok`` is the verdict).

    With ``repeat > 1`` lash-store and the floor run alternately (the order
    flips every run) on fresh files, so both see the same machine load.
    """
    if batches < 1 or workers < 1 or repeat < 1:
        raise ValueError("batches, workers and repeat must be at least 1")
    context = multiprocessing.get_context(start_method)
    started = time.perf_counter()
    store_runs: list[QueueRun] = []
    floor_runs: list[QueueRun] = []
    with workdir(base_dir, "queue") as directory:
        for number in range(1, repeat + 1):
            run_dir = directory / f"run-{number}"
            run_dir.mkdir()
            sides = ["store", "floor"] if floor else ["store"]
            if number % 2 == 0:
                sides.reverse()
            for side in sides:
                progress(
                    verbose,
                    f"queue: run {number}/{repeat}: {batches:,} batches, {workers} worker processes ({start_method}) "
                    f"through {'lash-store' if side == 'store' else 'the plain sqlite3 floor'}",
                )
                if side == "store":
                    store_runs.append(_store_pass(context, run_dir, batches, workers))
                else:
                    floor_runs.append(_floor_pass(context, run_dir, batches, workers))
        directory_used = str(directory)
    store_summary = summarise(store_runs)
    floor_summary = summarise(floor_runs) if floor_runs else None
    throughput_ratio = None
    if floor_summary is not None and store_summary["claims_per_s"] > 0:
        throughput_ratio = floor_summary["claims_per_s"] / store_summary["claims_per_s"]
    return {
        "benchmark": "queue",
        "config": {
            "batches": batches,
            "workers": workers,
            "repeat": repeat,
            "start_method": start_method,
            "lease_ttl_ms": LEASE_TTL_MS,
            "max_batches": 1,
            "dir": directory_used if base_dir is not None else None,
        },
        "lash_store": store_summary,
        "floor": floor_summary,
        "floor_over_store_throughput": throughput_ratio,
        "verification": store_summary["verification"],
        "elapsed_s": time.perf_counter() - started,
    }


SUMMARY_HEADERS = ("claim p50", "claim p99", "complete p50", "complete p99", "lost races", "enqueue/s")


def summary_cells(summary: dict[str, Any]) -> list[str]:
    """One side's claim and completion latencies, lost races and enqueue rate, under :data:`SUMMARY_HEADERS`."""
    return [
        format_us(summary["claim_latency_us"]["p50"]),
        format_us(summary["claim_latency_us"]["p99"]),
        format_us(summary["commit_latency_us"]["p50"]),
        format_us(summary["commit_latency_us"]["p99"]),
        f"{summary['lost_races']:,}",
        f"{summary['enqueue_per_s']:,.0f}",
    ]


def format_report(report: dict[str, Any]) -> str:
    """The plain-text rendering of :func:`run`'s report."""
    config = report["config"]
    lines = [
        f"lash-store queue benchmark: {config['batches']:,} single-item exclusive batches, "
        f"{config['workers']} worker processes ({config['start_method']}), one session file, "
        f"{config['repeat']} run(s) (claims/s: median of runs; latencies: pooled)",
        "each claim: claim_ready_queued_work(max_batches=1, lease 30 s) then commit_runtime_state completing it",
        "",
    ]
    sides = [("lash-store", report["lash_store"])]
    if report["floor"] is not None:
        sides.append(("sqlite3 floor", report["floor"]))
    rows = [[name, f"{summary['claims_per_s']:,.0f}", *summary_cells(summary)] for name, summary in sides]
    lines.append(render_table(["", "claims/s", *SUMMARY_HEADERS], rows))
    if report["floor_over_store_throughput"] is not None:
        lines.append(f"\nthroughput floor / lash-store: {report['floor_over_store_throughput']:.2f}x (informational)")
    check = report["verification"]
    lines += [
        "",
        f"verification ({check['runs_verified']} run(s)): {check['completed']:,}/{check['enqueued']:,} completed, "
        f"claimed twice {len(check['claimed_twice'])}, completed twice {len(check['completed_twice'])}, "
        f"lost {check['lost_count']}, left in queue {check['remaining_batches']}, "
        f"head revision {check['final_head_revision']:,} (expected {check['expected_head_revision']:,})  "
        f"{'OK' if check['ok'] else 'FAILED'}",
    ]
    lines += [f"  worker error: {error}" for error in check["worker_errors"]]
    lines.append(
        "lost races = claims that found nothing while batches remained (in flight elsewhere); "
        f"of them with unclaimed work pending: {report['lash_store']['missed_free_work']}"
    )
    per_worker = ", ".join(f"{w['owner']} {w['claims']}" for w in report["lash_store"]["per_worker"])
    lines.append(f"claims per worker: {per_worker}; elapsed {report['elapsed_s']:.1f} s")
    return "\n".join(lines)
