"""Work-queue claims per second on PostgreSQL with several worker processes (``queue --backend postgres``).

For each worker count (1 / 4 / 8 by default) and each of two layouts --

``own``
    every worker process has a session of its own with its own queue (the
    batches are split evenly between them): claims never meet, throughput
    should grow with workers until the server's CPU or WAL flush is the limit;
``shared``
    every worker claims from one queue of one session: claims serialise on
    that queue's lock by design, and completions on the session's head

-- the parent enqueues the batches (single-item exclusive batches, one
durable transaction each), then starts the workers (``spawn``), which after a
start barrier loop exactly like the SQLite queue benchmark
(:func:`lash_store.bench.queue.claim_loop`): ``claim_ready_queued_work``
(``max_batches=1``) and a ``commit_runtime_state`` completing the claim, until
their queue is empty.

The floor does the same rows with plain psycopg on a minimal table: a claim is
one autocommit ``UPDATE ... WHERE seq = (SELECT seq ... ORDER BY seq LIMIT 1
FOR UPDATE SKIP LOCKED) RETURNING``, a completion one autocommit statement
that deletes the claimed row (checking its token) and bumps the queue's head
revision: one round trip and one WAL flush each, as lash-store's claim and
commit are one transaction each.

Verification, per run and side: no batch claimed twice, every enqueued batch
completed exactly once, none left, the head revisions add up to the number of
batches, and no worker failed.  Throughput is claims over the wall time from
the first worker's start to the last worker's end; the ratio is lash-store
over the floor (target >= 0.5x).
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import time
from collections.abc import Sequence
from multiprocessing.context import BaseContext
from typing import Any

from lash_store.bench import format_us, progress, render_table, verdict
from lash_store.bench.pg import PgTarget, pg_target, server_line
from lash_store.bench.queue import (
    EMPTY_POLL_SLEEP_S,
    LEASE_TTL_MS,
    SUMMARY_HEADERS,
    QueueRun,
    WorkerResult,
    _run_worker,
    batch_text,
    claim_loop,
    queued_batch,
    run_processes,
    summarise,
    summary_cells,
)

__all__ = ["FULL_WORKERS", "MODES", "QUICK_WORKERS", "RATIO_TARGET", "floor_worker", "format_report", "run"]

FULL_WORKERS = (1, 4, 8)
QUICK_WORKERS = (1, 2)
MODES = ("own", "shared")
RATIO_TARGET = 0.5

# Worker processes open their own pool; one connection each is all a single-threaded worker uses.
_WORKER_POOL_SIZE = "2"


def _session(mode: str, worker: int) -> str:
    return "bench-queue-shared" if mode == "shared" else f"bench-queue-{worker}"


# --------------------------------------------------------------------------
# Workers (module-level so that the spawn start method can import them)


def store_worker(dsn: str, schema: str, session_id: str, owner: str, barrier: Any, results: Any) -> None:
    """Claim and complete batches of ``session_id`` through a ``PostgresStore`` until its queue is empty."""
    os.environ.setdefault("LASH_PG_POOL_SIZE", _WORKER_POOL_SIZE)
    from lash_store.postgres import PostgresStore

    store = PostgresStore.open(dsn, session_id, schema=schema, create=False)
    try:
        _run_worker(owner, barrier, results, claim_loop(store, session_id, owner))
    finally:
        store.close()


def floor_worker(dsn: str, schema: str, queue_id: str, owner: str, barrier: Any, results: Any) -> None:
    """The same claim/complete protocol in plain psycopg: one autocommit statement each."""
    import psycopg

    conn = psycopg.connect(dsn, autocommit=True)
    claim_sql = (
        f"UPDATE {schema}.queue SET claim_token = %(token)s, claim_owner = %(owner)s, "
        "claim_expires_ms = %(now)s + %(ttl)s "
        f"WHERE seq = (SELECT seq FROM {schema}.queue WHERE queue_id = %(queue)s "
        "AND (claim_token IS NULL OR claim_expires_ms <= %(now)s) ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) "
        "RETURNING seq, batch_id"
    )
    # Delete the claimed row only while this token holds it, and bump the head by what was deleted.
    complete_sql = (
        f"WITH done AS (DELETE FROM {schema}.queue WHERE seq = %(seq)s AND claim_token = %(token)s RETURNING 1) "
        f"UPDATE {schema}.heads SET revision = revision + (SELECT count(*) FROM done) "
        "WHERE queue_id = %(queue)s RETURNING (SELECT count(*) FROM done)"
    )
    free_sql = (
        f"SELECT count(*) FROM {schema}.queue WHERE queue_id = %(queue)s "
        "AND (claim_token IS NULL OR claim_expires_ms <= %(now)s)"
    )
    left_sql = f"SELECT count(*) FROM {schema}.queue WHERE queue_id = %(queue)s"

    def body(result: WorkerResult) -> None:
        clock = time.perf_counter_ns
        claim_ns, commit_ns = result["claim_ns"], result["commit_ns"]
        while True:
            token = secrets.token_hex(32)
            started = clock()
            now = time.time_ns() // 1_000_000
            params = {"token": token, "owner": owner, "now": now, "ttl": LEASE_TTL_MS, "queue": queue_id}
            row = conn.execute(claim_sql, params).fetchone()
            claimed_at = clock()
            if row is None:
                free = conn.execute(free_sql, {"queue": queue_id, "now": now}).fetchone()
                if free is not None and free[0]:
                    result["missed_free_work"] += 1
                else:
                    left = conn.execute(left_sql, {"queue": queue_id}).fetchone()
                    if left is not None and left[0] == 0:
                        return
                result["empty_polls"] += 1
                time.sleep(EMPTY_POLL_SLEEP_S)
                continue
            claim_ns.append(claimed_at - started)
            seq, batch_id = row
            result["claimed"].append(batch_id)
            started = clock()
            done = conn.execute(complete_sql, {"seq": seq, "token": token, "queue": queue_id}).fetchone()
            commit_ns.append(clock() - started)
            if done is None or done[0] != 1:
                raise RuntimeError(f"floor claim of {batch_id} was lost")
            result["completed"].append(batch_id)

    try:
        _run_worker(owner, barrier, results, body)
    finally:
        conn.close()


# --------------------------------------------------------------------------
# One pass of one side


def _split(batches: int, queues: int) -> list[int]:
    """``batches`` spread over ``queues`` as evenly as possible."""
    return [batches // queues + (1 if n < batches % queues else 0) for n in range(queues)]


def _store_pass(context: BaseContext, target: PgTarget, mode: str, workers: int, batches: int) -> QueueRun:
    from lash_store.postgres import PostgresStore

    schema = target.new_schema("queue_store")
    try:
        sessions = [_session(mode, n) for n in range(1 if mode == "shared" else workers)]
        enqueued: list[str] = []
        started = time.perf_counter()
        for session_id, count in zip(sessions, _split(batches, len(sessions)), strict=True):
            with PostgresStore.open(target.dsn, session_id, schema=schema) as store:
                for number in range(count):
                    enqueued.append(store.enqueue_queued_work(queued_batch(session_id, number)).batch_id)
        enqueue_s = time.perf_counter() - started
        args = [(target.dsn, schema, sessions[0 if mode == "shared" else n], f"worker-{n}") for n in range(workers)]
        results = run_processes(context, store_worker, args, lambda a: str(a[-1]))
        revision = remaining = 0
        for session_id in sessions:
            with PostgresStore.open(target.dsn, session_id, schema=schema, create=False) as store:
                read = store.load_session()
                revision += read.head_revision if read is not None else 0
                remaining += len(store.list_queued_work(session_id))
        return QueueRun(results, enqueued, revision, remaining, enqueue_s)
    finally:
        from lash_store.postgres import close_shared_pools

        close_shared_pools()
        target.drop_schema(schema)


_FLOOR_SCHEMA = """
CREATE TABLE {schema}.queue (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, queue_id text NOT NULL,
    batch_id text NOT NULL UNIQUE, payload bytea NOT NULL, claim_token text, claim_owner text,
    claim_expires_ms bigint NOT NULL DEFAULT 0);
CREATE INDEX queue_fifo ON {schema}.queue (queue_id, seq);
CREATE TABLE {schema}.heads (queue_id text PRIMARY KEY, revision bigint NOT NULL);
"""


def _floor_pass(context: BaseContext, target: PgTarget, mode: str, workers: int, batches: int) -> QueueRun:
    import psycopg

    schema = target.new_schema("queue_floor")
    try:
        queues = [f"q{n}" for n in range(1 if mode == "shared" else workers)]
        enqueued: list[str] = []
        with psycopg.connect(target.dsn, autocommit=True) as conn:
            conn.execute(_FLOOR_SCHEMA.format(schema=schema))
            started = time.perf_counter()
            for queue_id, count in zip(queues, _split(batches, len(queues)), strict=True):
                conn.execute(f"INSERT INTO {schema}.heads VALUES (%s, 0)", (queue_id,))
                for number in range(count):  # one durable transaction per batch, as lash-store enqueues
                    batch_id = f"floor:{queue_id}:{number:06d}"
                    conn.execute(
                        f"INSERT INTO {schema}.queue (queue_id, batch_id, payload) VALUES (%s, %s, %s)",
                        (queue_id, batch_id, batch_text(number).encode()),
                    )
                    enqueued.append(batch_id)
            enqueue_s = time.perf_counter() - started
        args = [(target.dsn, schema, queues[0 if mode == "shared" else n], f"worker-{n}") for n in range(workers)]
        results = run_processes(context, floor_worker, args, lambda a: str(a[-1]))
        with psycopg.connect(target.dsn, autocommit=True) as conn:
            revision = conn.execute(f"SELECT coalesce(sum(revision), 0) FROM {schema}.heads").fetchone()
            remaining = conn.execute(f"SELECT count(*) FROM {schema}.queue").fetchone()
        final = int(revision[0]) if revision else 0
        return QueueRun(results, enqueued, final, int(remaining[0]) if remaining else 0, enqueue_s)
    finally:
        target.drop_schema(schema)


# --------------------------------------------------------------------------


def run(
    *,
    batches: int,
    workers: Sequence[int] = FULL_WORKERS,
    modes: Sequence[str] = MODES,
    repeat: int = 1,
    start_method: str = "spawn",
    dsn: str | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run the PostgreSQL queue benchmark; ``verification.ok`` holds if every run of every side verified."""
    if batches < 1 or repeat < 1 or not workers or min(workers) < 1:
        raise ValueError("batches, workers and repeat must be at least 1")
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
    context = multiprocessing.get_context(start_method)
    started = time.perf_counter()
    configs: list[dict[str, Any]] = []
    with pg_target(dsn, verbose=verbose) as target:
        server = target.describe()
        for mode in modes:
            for count in workers:
                store_runs: list[QueueRun] = []
                floor_runs: list[QueueRun] = []
                for number in range(1, repeat + 1):
                    sides = ["store", "floor"] if number % 2 else ["floor", "store"]
                    for side in sides:
                        progress(
                            verbose,
                            f"queue (postgres): {mode} queue(s), {count} worker process(es), run {number}/{repeat}: "
                            f"{batches:,} batches through {'lash-store' if side == 'store' else 'the psycopg floor'}",
                        )
                        if side == "store":
                            store_runs.append(_store_pass(context, target, mode, count, batches))
                        else:
                            floor_runs.append(_floor_pass(context, target, mode, count, batches))
                store, floor = summarise(store_runs), summarise(floor_runs)
                ratio = store["claims_per_s"] / floor["claims_per_s"] if floor["claims_per_s"] > 0 else float("nan")
                configs.append(
                    {
                        "mode": mode,
                        "workers": count,
                        "queues": 1 if mode == "shared" else count,
                        "lash_store": store,
                        "floor": floor,
                        "ratio": ratio,
                        "target": RATIO_TARGET,
                        "pass": ratio >= RATIO_TARGET,
                        "verification": {
                            "ok": store["verification"]["ok"] and floor["verification"]["ok"],
                            "lash_store": store["verification"],
                            "floor": floor["verification"],
                        },
                    }
                )
    ok = all(config["verification"]["ok"] for config in configs)
    return {
        "benchmark": "queue",
        "backend": "postgres",
        "config": {
            "batches": batches,
            "workers": list(workers),
            "modes": list(modes),
            "repeat": repeat,
            "start_method": start_method,
            "lease_ttl_ms": LEASE_TTL_MS,
            "max_batches": 1,
        },
        "server": server,
        "configs": configs,
        "targets_met": all(config["pass"] for config in configs),
        "verification": {"ok": ok, "configs_verified": len(configs)},
        "elapsed_s": time.perf_counter() - started,
    }


def format_report(report: dict[str, Any]) -> str:
    """The plain-text rendering of :func:`run`'s report."""
    config, server = report["config"], report["server"]
    lines = [
        f"lash-store queue benchmark on PostgreSQL {server['server_version']}: {config['batches']:,} single-item "
        f"exclusive batches per run, worker processes ({config['start_method']}), {config['repeat']} run(s) per side "
        "(claims/s: median of runs; latencies pooled)",
        server_line(server),
        "each claim: claim_ready_queued_work(max_batches=1) then commit_runtime_state completing it; floor: "
        "UPDATE ... (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING, then DELETE + head bump, autocommit",
        "",
    ]
    rows = []
    for entry in report["configs"]:
        store, floor = entry["lash_store"], entry["floor"]
        rows.append(
            [
                f"{entry['mode']} x{entry['workers']}",
                f"{store['claims_per_s']:,.0f}",
                f"{floor['claims_per_s']:,.0f}",
                f"{entry['ratio']:.2f}x",
                f">= {entry['target']:.1f}x",
                verdict(entry["pass"]),
                *summary_cells(store),
                "ok" if entry["verification"]["ok"] else "FAILED",
            ]
        )
    headers = ["queue x workers", "lash-store/s", "floor/s", "ratio", "target", "", *SUMMARY_HEADERS, "exactly once"]
    lines.append(render_table(headers, rows))
    lines.append("")
    for entry in report["configs"]:
        check = entry["verification"]["lash_store"]
        floor_check = entry["verification"]["floor"]
        lines.append(
            f"{entry['mode']} x{entry['workers']}: lash-store {check['completed']:,}/{check['enqueued']:,} completed, "
            f"claimed twice {len(check['claimed_twice'])}, lost {check['lost_count']}, "
            f"left {check['remaining_batches']}, "
            f"head revisions {check['final_head_revision']:,}; floor {floor_check['completed']:,}/"
            f"{floor_check['enqueued']:,}, claimed twice {len(floor_check['claimed_twice'])}, "
            f"lost {floor_check['lost_count']}  {'OK' if entry['verification']['ok'] else 'FAILED'}"
        )
        for error in check["worker_errors"] + floor_check["worker_errors"]:
            lines.append(f"  worker error: {error}")
        floor_p50 = entry["floor"]["claim_latency_us"]["p50"]
        floor_commit = entry["floor"]["commit_latency_us"]["p50"]
        lines.append(f"  floor claim p50 {format_us(floor_p50)}, complete p50 {format_us(floor_commit)}")
    lines.append(
        f"targets: {'all met' if report['targets_met'] else 'some missed'}; "
        f"verification {'OK' if report['verification']['ok'] else 'FAILED'}; elapsed {report['elapsed_s']:.1f} s"
    )
    return "\n".join(lines)
