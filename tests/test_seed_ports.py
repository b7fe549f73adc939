"""Ports of the non-queue regression tests of lash-sqlite-store 0.1.0-alpha.42 (``seed/``).

Each seed test (head-revision CAS across connections, GC keeping a live
checkpoint's children, the unsupported-schema message, concurrent first opens)
is run once with threads, as in the original, and once more with separate
processes (``spawn`` start method) racing on one SQLite file.

The process workers live at module level so the spawned children can import
them; they report back through a ``multiprocessing`` queue and never raise.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.context import SpawnContext
from pathlib import Path
from queue import Empty
from typing import Any

import pytest

from lash_store import GcPolicy, Store, StoreOptions
from lash_store.errors import HeadRevisionConflict, StoreError, UnsupportedSchemaVersion
from lash_store.model import BlobArtifactDescriptor, SessionReadScope
from tests.helpers import commit_at

SPAWN: SpawnContext = multiprocessing.get_context("spawn")
RESULT_TIMEOUT_S = 90.0
CAS_ROUNDS = 30
BARRIER_TIMEOUT_S = 60.0
STORE_APPLICATION_ID = 0x4C415348  # the identity lash-store stamps on its files (SPEC decision 4)


# ---------------------------------------------------------------------------
# Small helpers


def _raw_pragma(path: Path, name: str) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])
    finally:
        conn.close()


def _raw_blob_count(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM blobs").fetchone()[0])
    finally:
        conn.close()


def _run_threads(count: int, target: Callable[[threading.Barrier], Any]) -> list[Any]:
    """Run ``target`` in ``count`` threads lined up on one barrier; returns each result or exception."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def worker(index: int) -> None:
        try:
            results[index] = target(barrier)
        except BaseException as exc:  # collected and asserted on by the test
            results[index] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=RESULT_TIMEOUT_S)
        assert not thread.is_alive(), "a worker thread hung"
    return results


def _run_processes(jobs: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> list[Any]:
    """Start one spawned process per ``(target, args)``; each gets ``(queue, *args)`` and puts one result.

    Results are collected while the children run; a child that dies without
    reporting fails the test at once instead of after the full timeout.
    """
    queue = SPAWN.Queue()
    processes = [SPAWN.Process(target=target, args=(queue, *args)) for target, args in jobs]
    for process in processes:
        process.start()
    results: list[Any] = []
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    try:
        while len(results) < len(processes):
            try:
                results.append(queue.get(timeout=0.2))
            except Empty:
                dead = [p.exitcode for p in processes if not p.is_alive()]
                if len(dead) == len(processes) and queue.empty():
                    pytest.fail(f"children exited with {dead} after reporting only {results!r}")
                if time.monotonic() > deadline:
                    pytest.fail(f"children did not report within {RESULT_TIMEOUT_S}s: {results!r}")
    finally:
        for process in processes:
            process.join(timeout=RESULT_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join()
    assert [p.exitcode for p in processes] == [0] * len(processes)
    assert not [r for r in results if r[0] == "error"], results
    return results


def _failure(exc: BaseException) -> tuple[str, str, str]:
    return ("error", type(exc).__name__, "".join(traceback.format_exception(exc)))


# ---------------------------------------------------------------------------
# Process workers (module level: spawned children import them by name)


def _cas_worker(queue: Any, path: str, barrier: Any, rounds: int) -> None:
    try:
        outcomes: list[tuple[Any, ...]] = []
        with Store.open(path) as store:
            for revision in range(rounds):
                barrier.wait(timeout=BARRIER_TIMEOUT_S)
                outcomes.append(_cas_attempt(store, revision))
        queue.put(("done", outcomes))
    except BaseException as exc:
        queue.put(_failure(exc))


def _cas_attempt(store: Store, revision: int) -> tuple[Any, ...]:
    """One CAS at ``revision``: ``("ok", new_revision)``, ``("conflict", expected, actual)`` or the error."""
    try:
        result = store.commit_runtime_state(commit_at("root", revision))
    except HeadRevisionConflict as exc:
        return ("conflict", exc.expected, exc.actual)
    except StoreError as exc:  # e.g. a raw busy error: reported, and the rounds go on
        return ("unexpected", type(exc).__name__, str(exc))
    return ("ok", result.head_revision)


def _assert_one_winner_per_round(outcomes_per_worker: list[list[tuple[Any, ...]]], rounds: int) -> None:
    for revision in range(rounds):
        outcomes = [worker[revision] for worker in outcomes_per_worker]
        winners = [o for o in outcomes if o[0] == "ok"]
        conflicts = [o for o in outcomes if o[0] == "conflict"]
        assert winners == [("ok", revision + 1)], f"round {revision}: exactly one CAS may win, got {outcomes}"
        assert conflicts == [("conflict", revision, revision + 1)] * (len(outcomes) - 1), (
            f"round {revision}: every loser must see a clean HeadRevisionConflict, got {outcomes}"
        )


def _first_open_worker(queue: Any, path: str, barrier: Any) -> None:
    try:
        barrier.wait(timeout=BARRIER_TIMEOUT_S)
        with Store.open(path) as store:
            # A store that saw a half-initialised (version 0) schema would fail these.
            assert store.load_session() is None
            assert store.load_session_meta() is None
            assert store.graph_node_count() == 0
        queue.put(("ok",))
    except BaseException as exc:
        queue.put(_failure(exc))


def _unsupported_schema_worker(queue: Any, path: str) -> None:
    try:
        store = Store.open(path)
    except UnsupportedSchemaVersion as exc:
        queue.put(("UnsupportedSchemaVersion", str(exc), exc.kind, exc.expected, exc.found))
    except BaseException as exc:
        queue.put(_failure(exc))
    else:
        store.close()
        queue.put(("opened",))


def _turn_state(generation: int) -> dict[str, Any]:
    return {
        "tool_state_snapshot": {"generation": generation, "tools": [f"tool-{generation}"]},
        "plugin_snapshot": {"plugins": {"p": {"rev": generation}}},
        "plugin_snapshot_revision": generation,
        "execution_state_snapshot": f"vm-state-{generation}".encode(),
        "turn_state": {"turn_index": generation},
    }


def _checkpoint_problems(store: Store, generation: int) -> list[str]:
    """Why the head's checkpoint does not hydrate to ``generation``'s values (empty when it does)."""
    read = store.load_session()
    if read is None:
        return ["no head"]
    checkpoint = read.checkpoint
    expected = _turn_state(generation)
    if checkpoint is None:
        return [f"revision {read.head_revision}: checkpoint missing"]
    problems = []
    if checkpoint.tool_state != expected["tool_state_snapshot"]:
        problems.append(f"tool_state {checkpoint.tool_state!r}")
    if checkpoint.plugin_snapshot != expected["plugin_snapshot"]:
        problems.append(f"plugin_snapshot {checkpoint.plugin_snapshot!r}")
    if checkpoint.execution_state != expected["execution_state_snapshot"]:
        problems.append(f"execution_state {checkpoint.execution_state!r}")
    if checkpoint.turn_state != expected["turn_state"]:
        problems.append(f"turn_state {checkpoint.turn_state!r}")
    return problems


def _committer_worker(queue: Any, path: str, barrier: Any, done: Any, first: int, last: int) -> None:
    try:
        problems: list[str] = []
        with Store.open(path) as store:
            barrier.wait(timeout=BARRIER_TIMEOUT_S)
            for generation in range(first, last + 1):
                result = store.commit_runtime_state(commit_at("root", generation - 1, **_turn_state(generation)))
                if result.head_revision != generation:
                    problems.append(f"commit {generation} landed at revision {result.head_revision}")
                # The head is live: a GC running in the other process must never take its blobs.
                problems += [f"after commit {generation}: {p}" for p in _checkpoint_problems(store, generation)]
        done.set()
        queue.put(("committer", problems))
    except BaseException as exc:
        done.set()
        queue.put(_failure(exc))


def _gc_worker(queue: Any, path: str, barrier: Any, done: Any) -> None:
    try:
        runs = deleted = 0
        skipped: list[str] = []
        with Store.open(path, StoreOptions(gc_policy=GcPolicy(grace_ms=0))) as store:
            barrier.wait(timeout=BARRIER_TIMEOUT_S)
            while True:
                finished = done.is_set()  # read before the run, so the last run sees every commit
                report = store.gc_unreachable()
                runs += 1
                deleted += report.deleted_blob_count
                if report.skipped_reason is not None:
                    skipped.append(report.skipped_reason)
                if finished:
                    break
        queue.put(("gc", runs, deleted, skipped))
    except BaseException as exc:
        queue.put(_failure(exc))


# ---------------------------------------------------------------------------
# (a) Head-revision CAS across independent connections


def test_head_revision_cas_holds_across_two_connections(db_path: Path) -> None:
    # Round 0 is the seed test (both threads also race the first open); later rounds repeat the
    # race on the same two connections, because a single round often does not overlap at all.
    def race(barrier: threading.Barrier) -> list[tuple[Any, ...]]:
        outcomes = []
        with Store.open(db_path) as store:
            for revision in range(CAS_ROUNDS):
                barrier.wait(timeout=BARRIER_TIMEOUT_S)
                outcomes.append(_cas_attempt(store, revision))
        return outcomes

    results = _run_threads(2, race)

    assert all(isinstance(r, list) for r in results), results
    _assert_one_winner_per_round(results, CAS_ROUNDS)
    with Store.open(db_path) as store:
        read = store.load_session(SessionReadScope.full_graph())
        assert read is not None
        assert read.head_revision == CAS_ROUNDS


def test_head_revision_cas_holds_across_processes(db_path: Path) -> None:
    workers, rounds = 4, CAS_ROUNDS // 2
    barrier = SPAWN.Barrier(workers)
    results = _run_processes([(_cas_worker, (str(db_path), barrier, rounds))] * workers)

    assert [r[0] for r in results] == ["done"] * workers, results
    _assert_one_winner_per_round([r[1] for r in results], rounds)
    with Store.open(db_path) as store:
        read = store.load_session()
        assert read is not None
        assert read.head_revision == rounds


# ---------------------------------------------------------------------------
# (b) GC keeps a live committed checkpoint's child blobs


def test_gc_keeps_live_committed_checkpoint_blobs(memory_store: Store) -> None:
    store = memory_store
    orphan = store.put_artifact_blob(BlobArtifactDescriptor.plugin_session_snapshot(), b"orphan-blob")
    assert store.get_blob(orphan) == b"orphan-blob"

    result = store.commit_runtime_state(
        commit_at(
            "root",
            0,
            tool_state_snapshot={"generation": 3, "tools": []},
            plugin_snapshot={"plugins": {}},
            plugin_snapshot_revision=5,
            execution_state_snapshot=bytes([0xDE, 0xAD, 0xBE, 0xEF]),
        )
    )
    manifest = result.manifest
    children = [manifest.tool_state_ref, manifest.plugin_snapshot_ref, manifest.execution_state_ref]
    assert all(ref is not None for ref in children), manifest

    report = store.gc_unreachable()

    assert report.skipped_reason is None
    assert report.deleted_blob_count == 1, f"only the orphan is unreachable, report={report!r}"
    assert store.get_blob(orphan) is None, "the orphan blob must be collected"
    assert store.get_blob(result.checkpoint_ref) is not None, "the live manifest must survive GC"
    for ref in children:
        assert ref is not None
        assert store.get_blob(ref) is not None, f"live checkpoint child blob {ref} must survive GC"

    hydrated = store.get_checkpoint(result.checkpoint_ref)
    assert hydrated is not None
    assert hydrated.tool_state == {"generation": 3, "tools": []}
    assert hydrated.plugin_snapshot == {"plugins": {}}
    assert hydrated.plugin_snapshot_revision == 5
    assert hydrated.execution_state == bytes([0xDE, 0xAD, 0xBE, 0xEF])

    # A second run finds nothing more to delete.
    again = store.gc_unreachable()
    assert again.deleted_blob_count == 0
    assert again.skipped_reason is None


def test_gc_in_one_process_never_loses_blobs_committed_by_another(db_path: Path) -> None:
    generations = 30
    with Store.open(db_path) as store:
        store.commit_runtime_state(commit_at("root", 0, **_turn_state(1)))
        store.put_blob(b"orphan-before-the-race")
    assert _raw_blob_count(db_path) == 5  # manifest, tool, plugin, execution, orphan

    barrier = SPAWN.Barrier(2)
    done = SPAWN.Event()
    results = _run_processes(
        [
            (_committer_worker, (str(db_path), barrier, done, 2, generations + 1)),
            (_gc_worker, (str(db_path), barrier, done)),
        ]
    )

    by_role = {r[0]: r for r in results}
    assert set(by_role) == {"committer", "gc"}, results
    _, problems = by_role["committer"]
    assert problems == [], "the GC process deleted blobs of a live head:\n" + "\n".join(problems)
    _, runs, deleted, skipped = by_role["gc"]
    assert skipped == []
    assert runs >= 2
    # Every superseded checkpoint (4 distinct blobs each) and the orphan are collected, nothing more.
    assert deleted == 4 * generations + 1

    with Store.open(db_path) as store:
        assert _checkpoint_problems(store, generations + 1) == []
        read = store.load_session()
        assert read is not None and read.head_revision == generations + 1
    assert _raw_blob_count(db_path) == 4


# ---------------------------------------------------------------------------
# (c) The unsupported-schema error reports the real versions


def _legacy_file(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE legacy (id INTEGER); PRAGMA user_version = 99;")
    conn.close()
    return path.read_bytes()


def _assert_untouched(path: Path, original: bytes) -> None:
    assert path.read_bytes() == original, "a rejected file must not be modified"
    assert not Path(f"{path}-wal").exists(), "a rejected file must not be switched to WAL"
    assert not Path(f"{path}-shm").exists()
    assert not Path(f"{path}-journal").exists()


def _assert_version_message(message: str) -> None:
    assert "99" in message, f"the error must report the found version 99: {message}"
    assert "version 3" in message, f"the error must report the supported version 3: {message}"
    assert "version 1 only" not in message, f"stale wording: {message}"


def test_unsupported_schema_error_reports_real_versions(db_path: Path) -> None:
    original = _legacy_file(db_path)

    with pytest.raises(UnsupportedSchemaVersion) as caught:
        Store.open(db_path)

    error = caught.value
    assert isinstance(error, StoreError)
    _assert_version_message(str(error))
    assert error.expected == 3
    assert error.found == 99
    assert error.kind == "session"
    _assert_untouched(db_path, original)
    assert _raw_pragma(db_path, "user_version") == 99


def test_unsupported_schema_error_from_a_child_process(db_path: Path) -> None:
    original = _legacy_file(db_path)

    (result,) = _run_processes([(_unsupported_schema_worker, (str(db_path),))])

    assert result[0] == "UnsupportedSchemaVersion", result
    _, message, kind, expected, found = result
    _assert_version_message(message)
    assert (kind, expected, found) == ("session", 3, 99)
    _assert_untouched(db_path, original)


# ---------------------------------------------------------------------------
# (d) Concurrent first opens never observe a version-0 schema


def test_concurrent_first_open_never_observes_version_zero_schema(db_path: Path) -> None:
    def first_open(barrier: threading.Barrier) -> str:
        barrier.wait(timeout=BARRIER_TIMEOUT_S)
        with Store.open(db_path) as store:
            assert store.load_session() is None
            assert store.graph_node_count() == 0
        return "ok"

    results = _run_threads(16, first_open)

    assert results == ["ok"] * 16, [r for r in results if r != "ok"]
    assert _raw_pragma(db_path, "user_version") == 3
    assert _raw_pragma(db_path, "application_id") == STORE_APPLICATION_ID


def test_concurrent_first_open_across_processes(db_path: Path) -> None:
    workers = 6
    barrier = SPAWN.Barrier(workers)
    results = _run_processes([(_first_open_worker, (str(db_path), barrier))] * workers)

    assert results == [("ok",)] * workers, results
    assert _raw_pragma(db_path, "user_version") == 3
    assert _raw_pragma(db_path, "application_id") == STORE_APPLICATION_ID
    with Store.open(db_path) as store:
        assert store.commit_runtime_state(commit_at("root", 0)).head_revision == 1
