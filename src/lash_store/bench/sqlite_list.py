"""Session listing in a SQLite factory root: the first page with many session files (``bench list``).

Set-up (timed and reported, not part of the figures): ``sessions`` session
files (10,000 by default) are created through the public API --
``SqliteSessionStoreFactory.create_store`` and one committed turn each, from a
few threads.  Then the root's catalogue is removed, so the first listing
finds the root as a factory of an older release (or a copied directory) would
leave it.

Measured, interleaved and repeated:

- the **cold** listing (once): ``recent_sessions(limit=50)`` without a
  catalogue, which reads every file and builds the catalogue;
- ``recent_sessions(limit=50)``: the first page, most recently written first
  (every file is ``stat``-ed, only the page's files are checked further);
- ``recent_sessions`` with the first page's cursor: the second page;
- ``list_sessions(limit=50)``: the first page by session id (no ``stat`` at all
  for the files off the page);
- the same first page after 1% of the sessions committed another turn (their
  entries are stale and are read again when they reach the page);
- the floor: one directory scan and a ``stat`` of every session file and its
  log, sorted by last write -- the least a listing that must notice every
  change without an index kept by the writers can do.

Verification: the recency page holds the sessions written last, the cursor's
page the ones after it, the listing by id the first ids in order, and the
cold listing sees every session.  Target: the warm first page in at most
100 ms.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lash_store.bench import format_us, latency_row, ms_figures, progress, render_table, timed, verdict, workdir
from lash_store.bench.commit import Workload

__all__ = ["DEFAULT_LIMIT", "FULL_SESSIONS", "QUICK_SESSIONS", "TARGET_MS", "format_report", "run"]

FULL_SESSIONS = 10_000
QUICK_SESSIONS = 200
DEFAULT_LIMIT = 50
TARGET_MS = 100.0
SETUP_THREADS = 4


def _session_id(number: int) -> str:
    return f"bench-list-{number:06d}"


def _setup(root: Path, sessions: int, verbose: bool) -> float:
    """Create the session files through the public API; returns the seconds it took."""
    from lash_store.sqlite import SqliteSessionStoreFactory

    factory = SqliteSessionStoreFactory(root)
    content = Workload(7).turn(1)

    def create(number: int) -> None:
        session_id = _session_id(number)
        with factory.create_store(session_id, model="bench-model") as store:
            store.commit_runtime_state(Workload(7, session_id=session_id).commit(content, 0))

    started = time.perf_counter()
    step = max(1, sessions // 10)
    with ThreadPoolExecutor(SETUP_THREADS) as pool:
        for done, _ in enumerate(pool.map(create, range(sessions)), start=1):
            if done % step == 0:
                progress(verbose, f"list (sqlite): set-up {done:,}/{sessions:,} sessions")
    return time.perf_counter() - started


def _touch(root: Path, numbers: list[int]) -> None:
    """Commit a second turn to each of ``numbers`` (their catalogue entries become stale)."""
    from lash_store.sqlite import SqliteSessionStoreFactory

    factory = SqliteSessionStoreFactory(root)
    content = Workload(7).turn(2)
    for number in numbers:
        session_id = _session_id(number)
        with factory.create_store(session_id, model="bench-model") as store:  # opens the existing file
            store.commit_runtime_state(Workload(7, session_id=session_id).commit(content, 1))


def _floor(root: Path, limit: int) -> list[str]:
    """Scan, stat every session file and its log, and pick the ``limit`` written last."""
    stamped = []
    with os.scandir(root) as entries:
        for entry in entries:
            if not entry.name.endswith(".db"):
                continue
            written = entry.stat().st_mtime_ns
            with contextlib.suppress(FileNotFoundError):
                written = max(written, os.stat(entry.path + "-wal").st_mtime_ns)
            stamped.append((-written, entry.name))
    stamped.sort()
    return [name for _, name in stamped[:limit]]


def run(
    *, sessions: int, repeat: int, limit: int = DEFAULT_LIMIT, base: str | None = None, verbose: bool = True
) -> dict[str, Any]:
    """Run the listing benchmark and return its JSON-ready report."""
    from lash_store.sqlite import SqliteSessionStoreFactory
    from lash_store.sqlite.catalog import CATALOG_NAME

    if sessions < 2 or repeat < 1 or limit < 1:
        raise ValueError("sessions must be at least 2, repeat and limit at least 1")
    started = time.perf_counter()
    problems: list[str] = []
    with workdir(base, "lash-bench-list-") as directory:
        root = directory / "sessions"
        progress(verbose, f"list (sqlite): creating {sessions:,} sessions ({SETUP_THREADS} threads)")
        setup_s = _setup(root, sessions, verbose)
        (root / CATALOG_NAME).unlink(missing_ok=True)
        factory = SqliteSessionStoreFactory(root)
        cold_ns, cold = timed(lambda: factory.recent_sessions(limit=sessions))
        if len(cold.sessions) != sessions or cold.failures:
            problems.append(f"cold listing saw {len(cold.sessions):,} of {sessions:,} sessions, {cold.failures[:3]}")
        time.sleep(2.1)  # entries read within the file system's timestamp tick are re-read; let the tick pass
        factory.recent_sessions(limit=limit)  # and refresh those entries once
        samples: dict[str, list[int]] = {"recent": [], "second": [], "by_id": [], "floor": []}
        cursor = factory.recent_sessions(limit=limit).next_cursor
        calls: list[tuple[str, Callable[[], Any]]] = [
            ("recent", lambda: factory.recent_sessions(limit=limit)),
            ("second", lambda: factory.recent_sessions(limit=limit, cursor=cursor)),
            ("by_id", lambda: factory.list_sessions(limit=limit)),
            ("floor", lambda: _floor(root, limit)),
        ]
        for round_number in range(repeat):
            shift = round_number % len(calls)
            for kind, call in calls[shift:] + calls[:shift]:
                elapsed, value = timed(call)
                samples[kind].append(elapsed)
                problems.extend(_check(kind, value, cold, limit))
        touched = list(range(0, sessions, 100))
        _touch(root, touched)
        stale_ns, stale = timed(lambda: factory.recent_sessions(limit=limit))
        expected = {_session_id(number) for number in touched[-limit:]}
        if not expected <= {listing.info.session_id for listing in stale.sessions}:
            problems.append("after the touch, the first page lacks the sessions written last")
    problems = sorted(set(problems))
    first_ms = statistics.median(samples["recent"]) / 1e6
    return {
        "benchmark": "list",
        "backend": "sqlite",
        "config": {"sessions": sessions, "limit": limit, "repeat": repeat, "setup_threads": SETUP_THREADS},
        "setup": {"seconds": setup_s, "sessions_per_s": sessions / setup_s if setup_s > 0 else None},
        "cold_ms": cold_ns / 1e6,
        "first_page": ms_figures(samples["recent"]),
        "second_page": ms_figures(samples["second"]),
        "by_id_page": ms_figures(samples["by_id"]),
        "floor": ms_figures(samples["floor"]),
        "after_touch": {"touched": len(touched), "first_page_ms": stale_ns / 1e6},
        "ratio": statistics.median(samples["recent"]) / statistics.median(samples["floor"]),
        "target_ms": TARGET_MS,
        "pass": first_ms <= TARGET_MS,
        "targets_met": first_ms <= TARGET_MS,
        "verification": {"ok": not problems, "problems": problems[:20], "listed": len(cold.sessions)},
        "elapsed_s": time.perf_counter() - started,
    }


def _check(kind: str, value: Any, cold: Any, limit: int) -> list[str]:
    """What is wrong with one page (empty when it is right); the cold listing is the full order."""
    everything = [listing.info.session_id for listing in cold.sessions]
    if kind == "floor":
        return [] if len(value) == min(limit, len(everything)) else ["floor: short page"]
    if kind == "by_id":
        ids = [info.session_id for info in value]
        return [] if ids == sorted(everything)[:limit] else ["by-id page: not the first ids in order"]
    ids = [listing.info.session_id for listing in value.sessions]
    wanted = everything[:limit] if kind == "recent" else everything[limit : 2 * limit]
    return [] if ids == wanted else [f"{kind} page: not the sessions in the cold listing's order"]


def format_report(report: dict[str, Any]) -> str:
    """The plain-text rendering of :func:`run`'s report."""
    config, setup = report["config"], report["setup"]
    lines = [
        f"lash-store list benchmark on SQLite: recent_sessions(limit={config['limit']}) with "
        f"{config['sessions']:,} session files in one factory root, {config['repeat']} calls per side",
        f"set-up: {config['sessions']:,} sessions (create_store and one committed turn) in {setup['seconds']:.1f} s "
        f"({setup['sessions_per_s']:,.0f}/s, {config['setup_threads']} threads)",
        "",
    ]
    rows = [
        latency_row(label, fig)
        for label, fig in (
            ("recent_sessions first page", report["first_page"]),
            ("recent_sessions second page", report["second_page"]),
            ("list_sessions first page (by id)", report["by_id_page"]),
            ("floor: scan + stat every file", report["floor"]),
        )
    ]
    lines.append(render_table(["", "p50", "p90", "p99", "max"], rows))
    check, touch = report["verification"], report["after_touch"]
    lines += [
        "",
        f"cold listing (no catalogue, every file read once): {format_us(1000 * report['cold_ms'])}",
        f"first page after {touch['touched']:,} sessions committed again: {format_us(1000 * touch['first_page_ms'])}",
        f"first page / floor: {report['ratio']:.1f}x (informational); "
        f"target first page <= {report['target_ms']:.0f} ms: {verdict(report['pass'])}",
        f"verification: {'ok' if check['ok'] else 'FAILED'}" + "".join(f"\n  {p}" for p in check["problems"]),
        f"elapsed {report['elapsed_s']:.1f} s",
    ]
    return "\n".join(lines)
