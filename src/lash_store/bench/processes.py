"""The process registry's speed: ``python -m lash_store.bench processes [--backend sqlite|postgres]``.

Four workloads, each run by the registry and by a plain-SQL floor doing the
same rows in the same run:

``append 1``
    event appends to one process, one after another (each a durable
    transaction: the process row is locked, its sequence advanced, the event
    row written);
``append 100``
    the same spread round-robin over 100 processes;
``lease N``
    claim / renew / release cycles on 100 processes by N worker processes
    (1 / 4 / 8; each worker cycles through its own share of the processes, so
    claims never meet on a row but do meet on the database);
``wake``
    the latency from a terminal write in this process to a waiting
    ``await_process`` in another one (which is parked before the write).

The floor is plain ``sqlite3`` / psycopg on minimal tables, one statement or
one short transaction per operation: an append advances the process's
sequence and inserts the event (``UPDATE ... RETURNING`` + ``INSERT``; on
PostgreSQL one statement with a CTE); a claim is one upsert that takes a free or
expired lease and bumps the fence, a renew one ``UPDATE`` checking token and
expiry, a release one ``UPDATE`` checking the token.  The floor's wake is a
poll of the row every millisecond on SQLite and ``LISTEN``/``NOTIFY`` on
PostgreSQL.  What the floor leaves out is what the registry is for: payload
validation and hashing, replay keys, terminal rules, semantics, lease owners
and checks, wake deliveries.

Throughput is operations over the wall time from the first worker's start to
the last one's end; "x floor" is the registry's time per operation over the
floor's (target <= 2x for appends and lease cycles; cross-process wake p50
<= 20 ms on PostgreSQL).  Every run is verified: the sequences, fences and
wake-ups both sides leave behind are counted.  Bounded: the sizes are fixed
(``--quick`` smaller), every wait has a timeout.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import secrets
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lash_store.bench import format_us, progress, render_table, verdict, workdir
from lash_store.options import StoreOptions

__all__ = ["FULL", "QUICK", "RATIO_TARGET", "WAKE_TARGET_MS", "format_report", "run"]

RATIO_TARGET = 2.0
WAKE_TARGET_MS = 20.0
PROCESSES = 100
LEASE_TTL_MS = 30_000
BUSY_TIMEOUT_S = 30.0
PAYLOAD = {"line": "compiling module 42 of 96", "wake_input": None, "pad": "x" * 120}

FULL: dict[str, Any] = {"appends": 2_000, "cycles": 1_200, "workers": (1, 4, 8), "wake_rounds": 40}
QUICK: dict[str, Any] = {"appends": 150, "cycles": 60, "workers": (1, 2), "wake_rounds": 6}

_SIDES = ("lash-store", "floor")


# --------------------------------------------------------------------------
# The two sides, as objects a worker process can open from a picklable spec


Spec = tuple[str, str, str, str]  # (backend, side, path or DSN, schema)


class _Registry:
    """The registry: what a runtime calls."""

    def __init__(self, spec: Spec) -> None:
        backend, _, where, schema = spec
        if backend == "sqlite":
            from lash_store.sqlite.registry import ProcessRegistry

            self.registry: Any = ProcessRegistry.open(where)
        else:
            from lash_store.postgres.registry import PostgresProcessRegistry

            self.registry = PostgresProcessRegistry.open(where, schema=schema)

    def register(self, process_ids: Sequence[str]) -> None:
        from lash_store.processes import ProcessEventType, ProcessRegistration

        for process_id in process_ids:
            registration = ProcessRegistration.new(process_id, {"type": "bench"})
            self.registry.register_process(registration.with_event_types([ProcessEventType(name="progress")]))

    def append(self, process_id: str, number: int) -> None:
        from lash_store.processes import ProcessEventAppendRequest

        request = ProcessEventAppendRequest(event_type="progress", payload={**PAYLOAD, "n": number})
        self.registry.append_event(process_id, request)

    def cycle(self, process_id: str, owner: str) -> None:
        lease = self.registry.claim_process_lease(process_id, owner, LEASE_TTL_MS)
        lease = self.registry.renew_process_lease(lease, LEASE_TTL_MS)
        self.registry.complete_process_lease(lease.completion())

    def finish(self, process_id: str) -> None:
        from lash_store.processes import ProcessAwaitOutput

        self.registry.complete_process(process_id, ProcessAwaitOutput.success({"done": True}))

    def await_end(self, process_id: str) -> None:
        self.registry.await_process(process_id, timeout_ms=30_000)

    def counts(self) -> tuple[int, int]:
        """(events, sum of fences) over every process."""
        rows = self.registry.raw_rows()
        return len(rows["event"]), sum(int(row[3]) for row in rows["lease"])

    def close(self) -> None:
        self.registry.close()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _SqliteFloor:
    """Plain sqlite3 on minimal tables, the same durability as the registry (WAL, synchronous=NORMAL)."""

    def __init__(self, spec: Spec) -> None:
        self.conn = sqlite3.connect(spec[2], timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL").fetchone()
        self.conn.execute(f"PRAGMA synchronous={StoreOptions().durability.value}")

    def create(self) -> None:
        self.conn.executescript(
            "CREATE TABLE IF NOT EXISTS processes (process_id TEXT PRIMARY KEY, status TEXT NOT NULL, "
            "last_sequence INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL) WITHOUT ROWID;"
            "CREATE TABLE IF NOT EXISTS events (process_id TEXT NOT NULL, sequence INTEGER NOT NULL, "
            "event_type TEXT NOT NULL, payload TEXT NOT NULL, PRIMARY KEY (process_id, sequence)) WITHOUT ROWID;"
            "CREATE TABLE IF NOT EXISTS leases (process_id TEXT PRIMARY KEY, owner TEXT, token TEXT, "
            "fence INTEGER NOT NULL, expires_ms INTEGER NOT NULL) WITHOUT ROWID;"
        )

    def register(self, process_ids: Sequence[str]) -> None:
        now = _now_ms()
        for process_id in process_ids:
            self.conn.execute("INSERT INTO processes VALUES (?, 'running', 0, ?)", (process_id, now))

    def append(self, process_id: str, number: int) -> None:
        payload = _payload_text(number)
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            (sequence,) = conn.execute(
                "UPDATE processes SET last_sequence = last_sequence + 1, updated_at_ms = ? "
                "WHERE process_id = ? AND status = 'running' RETURNING last_sequence",
                (_now_ms(), process_id),
            ).fetchone()
            conn.execute("INSERT INTO events VALUES (?, ?, 'progress', ?)", (process_id, sequence, payload))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def cycle(self, process_id: str, owner: str) -> None:
        token, now = secrets.token_hex(16), _now_ms()
        claimed = self.conn.execute(
            "INSERT INTO leases VALUES (?, ?, ?, 1, ?) ON CONFLICT (process_id) DO UPDATE SET owner = excluded.owner, "
            "token = excluded.token, fence = fence + 1, expires_ms = excluded.expires_ms "
            "WHERE leases.token IS NULL OR leases.expires_ms <= ? RETURNING fence",
            (process_id, owner, token, now + LEASE_TTL_MS, now),
        ).fetchone()
        assert claimed is not None, f"{process_id} was leased"
        renewed = self.conn.execute(
            "UPDATE leases SET expires_ms = ? WHERE process_id = ? AND token = ? AND expires_ms > ? RETURNING fence",
            (_now_ms() + LEASE_TTL_MS, process_id, token, _now_ms()),
        ).fetchone()
        assert renewed is not None
        self.conn.execute(
            "UPDATE leases SET owner = NULL, token = NULL, expires_ms = 0 WHERE process_id = ? AND token = ?",
            (process_id, token),
        )

    def finish(self, process_id: str) -> None:
        self.conn.execute("UPDATE processes SET status = 'completed' WHERE process_id = ?", (process_id,))

    def await_end(self, process_id: str) -> None:
        deadline = time.monotonic() + 30
        query = "SELECT status FROM processes WHERE process_id = ?"
        while self.conn.execute(query, (process_id,)).fetchone()[0] == "running":
            if time.monotonic() > deadline:
                raise TimeoutError(process_id)
            time.sleep(0.001)

    def counts(self) -> tuple[int, int]:
        (events,) = self.conn.execute("SELECT count(*) FROM events").fetchone()
        (fences,) = self.conn.execute("SELECT coalesce(sum(fence), 0) FROM leases").fetchone()
        return int(events), int(fences)

    def close(self) -> None:
        self.conn.close()


class _PgFloor:
    """Plain psycopg on minimal tables: one autocommit statement per operation (one round trip, one WAL flush)."""

    def __init__(self, spec: Spec) -> None:
        import psycopg

        self.schema = spec[3]
        self.conn = psycopg.connect(spec[2], autocommit=True)
        s = self.schema
        self.append_sql = (
            f"WITH p AS (UPDATE {s}.processes SET last_sequence = last_sequence + 1, updated_at_ms = %(now)s "
            "WHERE process_id = %(pid)s AND status = 'running' RETURNING last_sequence) "
            f"INSERT INTO {s}.events SELECT %(pid)s, last_sequence, 'progress', %(payload)s FROM p"
        )
        self.claim_sql = (
            f"INSERT INTO {s}.leases AS l VALUES (%(pid)s, %(owner)s, %(token)s, 1, %(expires)s) "
            "ON CONFLICT (process_id) DO UPDATE SET owner = excluded.owner, token = excluded.token, "
            "fence = l.fence + 1, expires_ms = excluded.expires_ms "
            "WHERE l.token IS NULL OR l.expires_ms <= %(now)s RETURNING fence"
        )
        self.renew_sql = (
            f"UPDATE {s}.leases SET expires_ms = %(expires)s WHERE process_id = %(pid)s AND token = %(token)s "
            "AND expires_ms > %(now)s RETURNING fence"
        )
        self.release_sql = (
            f"UPDATE {s}.leases SET owner = NULL, token = NULL, expires_ms = 0 "
            "WHERE process_id = %(pid)s AND token = %(token)s"
        )

    def create(self) -> None:
        s = self.schema
        self.conn.execute(
            f'CREATE TABLE {s}.processes (process_id text COLLATE "C" PRIMARY KEY, status text NOT NULL, '
            "last_sequence bigint NOT NULL, updated_at_ms bigint NOT NULL);"
            f'CREATE TABLE {s}.events (process_id text COLLATE "C" NOT NULL, sequence bigint NOT NULL, '
            "event_type text NOT NULL, payload text NOT NULL, PRIMARY KEY (process_id, sequence));"
            f'CREATE TABLE {s}.leases (process_id text COLLATE "C" PRIMARY KEY, owner text, token text, '
            "fence bigint NOT NULL, expires_ms bigint NOT NULL)"
        )

    def register(self, process_ids: Sequence[str]) -> None:
        now = _now_ms()
        with self.conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {self.schema}.processes VALUES (%s, 'running', 0, %s)",
                [(process_id, now) for process_id in process_ids],
            )

    def append(self, process_id: str, number: int) -> None:
        self.conn.execute(self.append_sql, {"pid": process_id, "now": _now_ms(), "payload": _payload_text(number)})

    def cycle(self, process_id: str, owner: str) -> None:
        token, now = secrets.token_hex(16), _now_ms()
        params: dict[str, Any] = {"pid": process_id, "owner": owner, "token": token, "now": now}
        params["expires"] = now + LEASE_TTL_MS
        assert self.conn.execute(self.claim_sql, params).fetchone() is not None, f"{process_id} was leased"
        params["now"] = _now_ms()
        params["expires"] = params["now"] + LEASE_TTL_MS
        assert self.conn.execute(self.renew_sql, params).fetchone() is not None
        self.conn.execute(self.release_sql, params)

    def finish(self, process_id: str) -> None:
        with self.conn.transaction():
            self.conn.execute(
                f"UPDATE {self.schema}.processes SET status = 'completed' WHERE process_id = %s", (process_id,)
            )
            self.conn.execute("SELECT pg_notify(%s, %s)", (f"{self.schema}_wake", process_id))

    def await_end(self, process_id: str) -> None:
        self.conn.execute(f"LISTEN {self.schema}_wake")
        deadline = time.monotonic() + 30
        query = f"SELECT status FROM {self.schema}.processes WHERE process_id = %s"
        while self.conn.execute(query, (process_id,)).fetchone()[0] == "running":  # type: ignore[index]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(process_id)
            for notice in self.conn.notifies(timeout=min(left, 1.0)):
                if notice.payload == process_id:
                    break

    def counts(self) -> tuple[int, int]:
        row = self.conn.execute(
            f"SELECT (SELECT count(*) FROM {self.schema}.events), "
            f"(SELECT coalesce(sum(fence), 0) FROM {self.schema}.leases)"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def close(self) -> None:
        self.conn.close()


def _payload_text(number: int) -> str:
    from lash_store.processes import canonical_json

    return canonical_json({**PAYLOAD, "n": number}).decode()


def open_side(spec: Spec) -> Any:
    """The side a spec names, opened in this process."""
    backend, side = spec[0], spec[1]
    if side == "lash-store":
        return _Registry(spec)
    return _SqliteFloor(spec) if backend == "sqlite" else _PgFloor(spec)


# --------------------------------------------------------------------------
# Workers (module level: the spawn start method imports them)


def lease_worker(spec: Spec, process_ids: list[str], cycles: int, owner: str, barrier: Any, results: Any) -> None:
    """``cycles`` claim/renew/release cycles over ``process_ids`` (round-robin), timed after a start barrier."""
    os.environ.setdefault("LASH_PG_POOL_SIZE", "2")
    side = None
    try:
        side = open_side(spec)
        barrier.wait(timeout=120)
        started = time.monotonic()
        for index in range(cycles):
            side.cycle(process_ids[index % len(process_ids)], owner)
        results.put({"owner": owner, "start": started, "end": time.monotonic(), "cycles": cycles, "error": None})
    except BaseException as exc:
        results.put({"owner": owner, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        if side is not None:
            side.close()


def wake_worker(spec: Spec, process_ids: list[str], ready: Any, results: Any) -> None:
    """For each process: say it is about to wait, wait for its end, report the instant it woke."""
    os.environ.setdefault("LASH_PG_POOL_SIZE", "2")
    side = None
    try:
        side = open_side(spec)
        for process_id in process_ids:
            ready.put(process_id)
            side.await_end(process_id)
            results.put((process_id, time.monotonic()))
        results.put(("done", None))
    except BaseException as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        if side is not None:
            side.close()


# --------------------------------------------------------------------------
# Workloads


def _appends(side: Any, process_ids: Sequence[str], count: int) -> float:
    """Appends per second, round-robin over ``process_ids``."""
    started = time.perf_counter()
    for number in range(count):
        side.append(process_ids[number % len(process_ids)], number)
    return count / (time.perf_counter() - started)


def _leases(context: Any, spec: Spec, process_ids: Sequence[str], workers: int, cycles: int) -> tuple[float, list[str]]:
    """Cycles per second with ``workers`` processes, and the workers' errors."""
    barrier, results = context.Barrier(workers), context.Queue()
    per_worker = max(1, cycles // workers)
    shares = [list(process_ids[index::workers]) for index in range(workers)]
    procs = [
        context.Process(
            target=lease_worker, args=(spec, shares[index], per_worker, f"w{index}", barrier, results), daemon=True
        )
        for index in range(workers)
    ]
    for proc in procs:
        proc.start()
    reports = []
    errors: list[str] = []
    for _ in procs:
        try:
            reports.append(results.get(timeout=300))
        except Exception:
            errors.append("a worker did not report within 300 s")
            break
    for proc in procs:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    errors += [report["error"] for report in reports if report.get("error")]
    if errors or not reports:
        return math.nan, errors
    wall = max(report["end"] for report in reports) - min(report["start"] for report in reports)
    return sum(report["cycles"] for report in reports) / wall, errors


def _wake(context: Any, spec: Spec, side: Any, process_ids: Sequence[str]) -> tuple[list[float], list[str]]:
    """Milliseconds from the terminal write here to the wake-up in another process, per round."""
    ready, results = context.Queue(), context.Queue()
    proc = context.Process(target=wake_worker, args=(spec, list(process_ids), ready, results), daemon=True)
    proc.start()
    latencies: list[float] = []
    errors: list[str] = []
    try:
        for process_id in process_ids:
            try:
                assert ready.get(timeout=120) == process_id
            except Exception:
                errors.append(f"the waiter did not get ready for {process_id}")
                break
            time.sleep(0.03)  # the waiter is parked by now
            written = time.monotonic()
            side.finish(process_id)
            woke_for, woke_at = results.get(timeout=60)
            if woke_for != process_id:
                errors.append(f"woke for {woke_for!r}: {woke_at}")
                break
            latencies.append((woke_at - written) * 1000)
        else:
            done = results.get(timeout=60)
            if done[0] != "done":
                errors.append(str(done))
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    return latencies, errors


def _run_side(
    context: Any, spec: Spec, sizes: dict[str, Any], verbose: bool
) -> tuple[dict[str, float], dict[str, Any]]:
    """Every workload on one side: figures and verification."""
    name = spec[1]
    side = open_side(spec)
    try:
        if isinstance(side, (_SqliteFloor, _PgFloor)):
            side.create()
        many = [f"p{index:03d}" for index in range(PROCESSES)]
        leased = [f"lease-{index:03d}" for index in range(PROCESSES)]
        woken = [f"wake-{index:03d}" for index in range(sizes["wake_rounds"])]
        side.register(["one", *many, *leased, *woken])
        figures: dict[str, float] = {}
        errors: list[str] = []
        progress(verbose, f"  {name}: appends to one process")
        figures["append 1"] = _appends(side, ["one"], sizes["appends"])
        progress(verbose, f"  {name}: appends across {PROCESSES} processes")
        figures[f"append {PROCESSES}"] = _appends(side, many, sizes["appends"])
        cycles = 0
        for workers in sizes["workers"]:
            progress(verbose, f"  {name}: lease cycles, {workers} worker processes")
            rate, failed = _leases(context, spec, leased, workers, sizes["cycles"])
            figures[f"lease {workers}"] = rate
            cycles += max(1, sizes["cycles"] // workers) * workers
            errors += failed
        progress(verbose, f"  {name}: cross-process wake-ups")
        latencies, failed = _wake(context, spec, side, woken)
        errors += failed
        figures["wake p50 ms"] = statistics.median(latencies) if latencies else math.nan
        figures["wake p90 ms"] = sorted(latencies)[int(0.9 * (len(latencies) - 1))] if latencies else math.nan
        events, fences = side.counts()
        expected_events = 2 * sizes["appends"] + (len(woken) if name == "lash-store" else 0)
        checks = {
            "events": (events, expected_events),
            "fences": (fences, cycles),
            "wake-ups": (len(latencies), len(woken)),
        }
        errors += [f"{what}: {got} (expected {want})" for what, (got, want) in checks.items() if got != want]
        return figures, {"ok": not errors, "errors": errors, "counts": {k: v[0] for k, v in checks.items()}}
    finally:
        side.close()


Locations = tuple[Callable[[str], Spec], Callable[[], dict[str, Any] | None]]


@contextmanager
def _locations(backend: str, dsn: str | None, base_dir: str | None, verbose: bool) -> Iterator[Locations]:
    """Where each side runs (a file in a work directory, or a fresh schema of a PostgreSQL database), and the
    server's description."""
    if backend == "sqlite":
        with workdir(base_dir, "processes") as directory:
            yield (lambda side: (backend, side, str(Path(directory) / f"{side}.db"), "")), lambda: None
        return
    from lash_store.bench.pg import pg_target

    with pg_target(dsn, verbose=verbose) as target:
        yield (lambda side: (backend, side, target.dsn, target.new_schema(side.replace("-", "_")))), target.describe


def run(
    *,
    backend: str = "sqlite",
    quick: bool = False,
    dsn: str | None = None,
    base_dir: str | None = None,
    workers: Sequence[int] | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Both sides on every workload; a JSON-ready report."""
    sizes = dict(QUICK if quick else FULL)
    if workers:
        sizes["workers"] = tuple(workers)
    context = multiprocessing.get_context("spawn")
    server: dict[str, Any] | None = None
    sides: dict[str, dict[str, float]] = {}
    verification: dict[str, Any] = {}
    progress(verbose, f"processes benchmark on {backend} ({'quick' if quick else 'full'})")
    with _locations(backend, dsn, base_dir, verbose) as (location, describe):
        server = describe()
        for name in _SIDES:
            sides[name], verification[name] = _run_side(context, location(name), sizes, verbose)
    rows = []
    for workload in sides["lash-store"]:
        ours, floor = sides["lash-store"][workload], sides["floor"][workload]
        if workload.startswith("wake"):
            ratio = ours / floor if floor else math.nan
            target_ok = None if workload != "wake p50 ms" or backend != "postgres" else ours <= WAKE_TARGET_MS
        else:
            ratio = floor / ours if ours else math.nan  # time per operation, registry over floor
            target_ok = ratio <= RATIO_TARGET
        rows.append(
            {"workload": workload, "lash-store": ours, "floor": floor, "x_floor": ratio, "target_ok": target_ok}
        )
    ok = all(v["ok"] for v in verification.values())
    return {
        "benchmark": "processes",
        "backend": backend,
        "config": {**sizes, "workers": list(sizes["workers"]), "processes": PROCESSES, "lease_ttl_ms": LEASE_TTL_MS},
        "server": server,
        "rows": rows,
        "verification": {"ok": ok, **verification},
    }


def _figure(workload: str, value: float) -> str:
    if math.isnan(value):
        return "-"
    if workload.startswith("wake"):
        return format_us(value * 1000)
    return f"{value:,.0f}/s"


def format_report(report: dict[str, Any]) -> str:
    """The report as a table: each workload's figure on both sides, the cost over the floor, the target."""
    lines = [f"process registry on {report['backend']}: {report['config']}"]
    if report["server"]:
        from lash_store.bench.pg import server_line

        lines.append(server_line(report["server"]))
    table = []
    for row in report["rows"]:
        if row["workload"].startswith("wake"):
            target = f"<= {WAKE_TARGET_MS:.0f} ms" if row["target_ok"] is not None else "-"
        else:
            target = f"<= {RATIO_TARGET:.0f}x"
        table.append(
            [
                row["workload"],
                _figure(row["workload"], row["lash-store"]),
                _figure(row["workload"], row["floor"]),
                "-" if math.isnan(row["x_floor"]) else f"{row['x_floor']:.2f}x",
                target,
                "" if row["target_ok"] is None else verdict(bool(row["target_ok"])),
            ]
        )
    lines.append(render_table(["workload", "lash-store", "floor", "x floor", "target", ""], table))
    verification = report["verification"]
    lines.append(f"verification: {'ok' if verification['ok'] else 'FAILED'}")
    for side in _SIDES:
        for error in verification[side]["errors"]:
            lines.append(f"  {side}: {error}")
    return "\n".join(lines)
