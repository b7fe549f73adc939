"""GC time: ``gc_unreachable()`` over 10,000 unreachable blobs, against a plain ``sqlite3`` ``DELETE``.

Set-up (not timed), fresh for every repetition: a session file with a live
head (one committed turn of the commit workload: its checkpoint manifest and
snapshot blobs are the live set) and N unreachable blobs of 0.5-4 KB added
with ``put_blob``, opened with ``StoreOptions(gc_policy=GcPolicy(grace_ms=0))``
so that every unreachable blob is past its grace period.  The floor is a plain
WAL ``sqlite3`` database holding a copy of the same ``blobs`` rows (same
columns, same bytes, same unique hash index), opened with the connection
settings lash-store uses (``synchronous=NORMAL``, an 8 MB page cache).

Timed, on a freshly opened connection on each side (files warm in the OS
cache), alternating which side goes first:

- lash-store: ``store.gc_unreachable()`` -- mark (read the head, decode the
  rooted manifest) and sweep (``DELETE ... NOT IN`` the live set and pinned
  artifacts, older than the grace period) in one ``BEGIN IMMEDIATE`` transaction;
- the floor: ``BEGIN IMMEDIATE; DELETE FROM blobs WHERE hash NOT IN (<live
  hashes>); COMMIT`` -- it is handed the live set, it does no marking.

Reported: the median time, scaled to 10,000 blobs, and the ratio
lash-store / floor.  Verification: each side deleted exactly the N
unreachable blobs, and the session still loads with its tool state intact.
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from lash_store.bench import FLOOR_CACHE_SIZE_KIB, format_us, progress, render_table, workdir
from lash_store.bench.commit import Workload
from lash_store.model import SessionReadScope
from lash_store.options import GcPolicy, StoreOptions
from lash_store.sqlite import Store

__all__ = ["DEFAULT_BLOBS", "PER_BLOBS", "format_report", "run"]

DEFAULT_BLOBS = 10_000
PER_BLOBS = 10_000
MIN_BLOB, MAX_BLOB = 512, 4_096

_FLOOR_SCHEMA = """
CREATE TABLE blobs (
    id INTEGER PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    encoding TEXT NOT NULL,
    kind TEXT,
    raw_size INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    content BLOB NOT NULL
);
"""
_COLUMNS = "hash, encoding, kind, raw_size, created_at_ms, content"


def _options() -> StoreOptions:
    return StoreOptions(gc_policy=GcPolicy(grace_ms=0))


def _blob_hashes(path: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute("SELECT hash FROM blobs ORDER BY id")]
    finally:
        conn.close()


def _build(directory: Path, blobs: int, seed: int) -> tuple[Path, Path, list[str]]:
    """The store file (live head + ``blobs`` unreachable blobs) and the floor copy; returns the live hashes."""
    store_path, floor_path = directory / "gc-store.db", directory / "gc-floor.db"
    workload = Workload(seed)
    rng = random.Random(seed)
    with Store.open(store_path, _options()) as store:
        store.commit_runtime_state(workload.commit(workload.turn(1), 0))
        live = _blob_hashes(store_path)
        for number in range(blobs):
            store.put_blob(number.to_bytes(8, "big") + rng.randbytes(rng.randrange(MIN_BLOB, MAX_BLOB)))
    source = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
    floor = sqlite3.connect(str(floor_path), isolation_level=None)
    try:
        floor.execute("PRAGMA journal_mode=WAL").fetchone()
        floor.execute("PRAGMA synchronous=NORMAL")
        floor.executescript(_FLOOR_SCHEMA)
        floor.execute("BEGIN IMMEDIATE")
        floor.executemany(
            f"INSERT INTO blobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            source.execute(f"SELECT {_COLUMNS} FROM blobs ORDER BY id"),
        )
        floor.execute("COMMIT")
    finally:
        source.close()
        floor.close()
    return store_path, floor_path, live


def _time_store(path: Path) -> tuple[int, dict[str, Any]]:
    with Store.open(path, _options()) as store:
        started = time.perf_counter_ns()
        report = store.gc_unreachable()
        elapsed = time.perf_counter_ns() - started
        read = store.load_session(SessionReadScope.active_path())
    return elapsed, {
        "deleted": report.deleted_blob_count,
        "retained": report.retained_blob_count,
        "skipped_reason": report.skipped_reason,
        "tool_state_turn": None
        if read is None or read.checkpoint is None
        else read.checkpoint.tool_state["turn_index"],
    }


def _time_floor(path: Path, live: list[str]) -> tuple[int, dict[str, Any]]:
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA cache_size = -{FLOOR_CACHE_SIZE_KIB}")
        marks = ", ".join("?" for _ in live)
        started = time.perf_counter_ns()
        conn.execute("BEGIN IMMEDIATE")
        deleted = conn.execute(f"DELETE FROM blobs WHERE hash NOT IN ({marks})", live).rowcount
        conn.execute("COMMIT")
        elapsed = time.perf_counter_ns() - started
        retained = conn.execute("SELECT count(*) FROM blobs").fetchone()[0]
    finally:
        conn.close()
    return elapsed, {"deleted": deleted, "retained": retained}


def run(
    *,
    blobs: int = DEFAULT_BLOBS,
    repeat: int = 3,
    base_dir: str | None = None,
    verbose: bool = True,
    seed: int = 1,
) -> dict[str, Any]:
    """Run the GC benchmark and return its JSON-ready report (``verification.ok`` is the verdict)."""
    if blobs < 1 or repeat < 1:
        raise ValueError("blobs and repeat must be at least 1")
    started = time.perf_counter()
    store_ns: list[int] = []
    floor_ns: list[int] = []
    problems: list[str] = []
    live_count = 0
    with workdir(base_dir, "gc") as directory:
        for number in range(1, repeat + 1):
            run_dir = directory / f"run-{number}"
            run_dir.mkdir()
            progress(verbose, f"gc: run {number}/{repeat}: building {blobs:,} unreachable blobs + a live head")
            store_path, floor_path, live = _build(run_dir, blobs, seed + number)
            live_count = len(live)
            if number % 2:  # alternate which side goes first
                store_elapsed, store_check = _time_store(store_path)
                floor_elapsed, floor_check = _time_floor(floor_path, live)
            else:
                floor_elapsed, floor_check = _time_floor(floor_path, live)
                store_elapsed, store_check = _time_store(store_path)
            store_ns.append(store_elapsed)
            floor_ns.append(floor_elapsed)
            if store_check["skipped_reason"] is not None:
                problems.append(f"run {number}: lash-store GC skipped: {store_check['skipped_reason']}")
            for name, check in (("lash-store", store_check), ("floor", floor_check)):
                if check["deleted"] != blobs or check["retained"] != len(live):
                    problems.append(
                        f"run {number}: {name} deleted {check['deleted']:,} and kept {check['retained']:,} "
                        f"(expected {blobs:,} and {len(live)})"
                    )
            if store_check["tool_state_turn"] != 1:
                problems.append(f"run {number}: the session no longer loads its tool state after GC")
            if base_dir is None:
                for file in run_dir.iterdir():
                    file.unlink()
        directory_used = str(directory)
    store_us = statistics.median(store_ns) / 1000
    floor_us = statistics.median(floor_ns) / 1000
    scale = PER_BLOBS / blobs
    return {
        "benchmark": "gc",
        "config": {
            "blobs": blobs,
            "blob_bytes": [MIN_BLOB, MAX_BLOB],
            "live_blobs": live_count,
            "repeat": repeat,
            "grace_ms": 0,
            "dir": directory_used if base_dir is not None else None,
        },
        "store_us": store_us,
        "floor_us": floor_us,
        "store_us_per_10k": store_us * scale,
        "floor_us_per_10k": floor_us * scale,
        "ratio": store_us / floor_us,
        "store_us_per_run": [ns / 1000 for ns in store_ns],
        "floor_us_per_run": [ns / 1000 for ns in floor_ns],
        "verification": {"ok": not problems, "problems": problems},
        "elapsed_s": time.perf_counter() - started,
    }


def format_report(report: dict[str, Any]) -> str:
    """The plain-text rendering of :func:`run`'s report."""
    config = report["config"]
    low, high = config["blob_bytes"]
    lines = [
        f"lash-store GC benchmark: {config['blobs']:,} unreachable blobs ({low:,}-{high:,} B) "
        f"+ {config['live_blobs']} live (a head checkpoint), grace 0 ms",
        f"median of {config['repeat']} run(s) on fresh files; floor = BEGIN IMMEDIATE; "
        "DELETE FROM blobs WHERE hash NOT IN (live set); COMMIT on a copy of the same rows "
        "(synchronous=NORMAL, 8 MB page cache, like lash-store)",
        "",
    ]
    table = [
        [
            "lash-store gc_unreachable()",
            format_us(report["store_us"]),
            format_us(report["store_us_per_10k"]),
            f"{report['ratio']:.2f}x",
        ],
        ["sqlite3 floor DELETE", format_us(report["floor_us"]), format_us(report["floor_us_per_10k"]), "1.00x"],
    ]
    lines.append(render_table(["", "time", "per 10,000 blobs", "ratio"], table))
    check = report["verification"]
    lines += [
        "",
        f"verification: both deleted exactly the unreachable blobs; the session still loads its tool state  "
        f"{'ok' if check['ok'] else 'FAILED'}",
    ]
    lines += [f"  {problem}" for problem in check["problems"]]
    lines.append(f"elapsed {report['elapsed_s']:.1f} s")
    return "\n".join(lines)
