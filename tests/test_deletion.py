"""Deleting a session never loses a commit acknowledged to a store that has it open.

Before, ``delete_session`` unlinked the files under an open store, which then kept
committing (and acknowledging) into a file nobody could find again.  Now:

* a session open in this process or another is refused with ``StoreBusy`` and
  left intact; once closed it is deleted;
* a race of a writer process (open, commit, close, over and over) against a
  deleting loop never acknowledges a commit that is then missing, unless a
  deletion completed after that acknowledgement;
* a deletion interrupted between its mark and its unlink leaves a file that
  reads as deleted (``StoreNotFound``), is passed over by listings, and is
  finished by the next ``create_store``.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from lash_store import SqliteSessionStoreFactory, Store
from lash_store.errors import StoreBusy, StoreNotFound
from lash_store.model import GraphDelta, SessionNode
from lash_store.options import StoreOptions
from lash_store.sqlite import deletion
from lash_store.testing.conformance import commit

QUICK = StoreOptions(busy_timeout_ms=100)


def _append(node_id: str) -> Any:
    return commit(session_id="s", graph=GraphDelta.append([SessionNode(node_id=node_id)], node_id))


def _hold_open(root: str, opened: Any, release: Any, done: Any) -> None:
    factory = SqliteSessionStoreFactory(root)
    store = factory.create_store("s")
    store.commit_runtime_state(_append("before"))
    opened.set()
    release.wait(60)
    store.commit_runtime_state(_append("after-refused-delete"))  # must land in the file that stays
    store.close()
    done.set()


def test_a_session_open_in_another_process_is_refused_and_kept(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    opened, release, done = context.Event(), context.Event(), context.Event()
    holder = context.Process(target=_hold_open, args=(str(tmp_path), opened, release, done))
    holder.start()
    try:
        assert opened.wait(60)
        factory = SqliteSessionStoreFactory(tmp_path, QUICK)
        with pytest.raises(StoreBusy, match="close it first"):
            factory.delete_session("s")
        release.set()
        assert done.wait(60)
    finally:
        release.set()
        holder.join(60)
    assert holder.exitcode == 0
    with Store.open_readonly(factory.path_for_session("s")) as store:
        read = store.load_session()
        assert read is not None and [n.node_id for n in read.graph.nodes] == ["before", "after-refused-delete"]
    factory.delete_session("s")  # closed now
    assert list(tmp_path.iterdir()) == []


def test_a_session_open_in_this_process_is_refused_until_closed(tmp_path: Path) -> None:
    factory = SqliteSessionStoreFactory(tmp_path, QUICK)
    store = factory.create_store("s")
    store.commit_runtime_state(_append("a"))
    with pytest.raises(StoreBusy):
        factory.delete_session("s")
    assert store.commit_runtime_state(_append("b")).head_revision == 2
    store.close()
    factory.delete_session("s")
    assert list(tmp_path.iterdir()) == []
    assert factory.list_sessions() == []


def _writer(root: str, report: str, stop: Any) -> None:
    """Open, commit three turns, check by the file's name that they are there, close; again and again."""
    factory = SqliteSessionStoreFactory(root, QUICK)
    path = factory.path_for_session("s")
    index = 0
    with open(report, "a", encoding="utf-8") as log:
        while not stop.is_set():
            try:
                store = factory.create_store("s")
            except StoreBusy:
                continue
            committed = []
            try:
                for _ in range(3):
                    index += 1
                    store.commit_runtime_state(_append(f"w{index}"))
                    committed.append(f"w{index}")
            except StoreBusy:
                pass
            try:
                with Store.open_readonly(path) as reader:  # what anyone opening the session now would find
                    read = reader.load_session()
                    found = set() if read is None else {n.node_id for n in read.graph.nodes}
            except StoreNotFound:
                found = set()
            store.close()
            lost = [node for node in committed if node not in found]
            log.write(f"cycle {len(committed)} {' '.join(lost)}\n")
            log.flush()


@pytest.mark.timeout(120)
def test_a_writer_racing_deletions_never_loses_an_acknowledged_commit(tmp_path: Path) -> None:
    """While a store is open its file cannot be deleted: every acknowledged commit stays findable by name."""
    root, log = tmp_path / "root", tmp_path / "cycles.log"
    root.mkdir()
    log.touch()
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    writer = context.Process(target=_writer, args=(str(root), str(log), stop))
    writer.start()
    factory = SqliteSessionStoreFactory(root, QUICK)
    deletions = refused = 0
    deadline = time.monotonic() + 3
    try:
        while time.monotonic() < deadline or deletions < 5 or len(log.read_bytes().splitlines()) < 20:
            assert time.monotonic() < deadline + 60, f"stuck: {deletions} deletions, {refused} refused"
            time.sleep(random.uniform(0, 0.002))
            try:
                factory.delete_session("s")
                deletions += 1
            except StoreBusy:
                refused += 1
    finally:
        stop.set()
        writer.join(60)
    assert writer.exitcode == 0
    cycles = [line.split()[1:] for line in log.read_text(encoding="utf-8").splitlines()]
    assert sum(int(count) for count, *_ in cycles) > 0, "the writer never committed"
    lost = [node for _count, *nodes in cycles for node in nodes]
    assert lost == [], f"acknowledged, then gone from the session's file while its store was open: {lost[:5]}"


def test_an_interrupted_deletion_reads_as_deleted_and_the_next_create_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = SqliteSessionStoreFactory(tmp_path, QUICK)
    with factory.create_store("s") as store:
        store.commit_runtime_state(_append("old"))
    with factory.create_store("other"):
        pass
    path = factory.path_for_session("s")

    def crash(target: Path, suffixes: tuple[str, ...]) -> None:
        raise KeyboardInterrupt  # the mark is committed; nothing is unlinked

    monkeypatch.setattr(deletion, "_remove", crash)
    with pytest.raises(KeyboardInterrupt):
        factory.delete_session("s")
    monkeypatch.undo()
    assert path.exists()
    with pytest.raises(StoreNotFound, match="deleted"):
        Store.open_readonly(path)
    assert [info.session_id for info in factory.list_sessions()] == ["other"]
    with factory.create_store("s") as fresh:
        assert fresh.load_session() is None, "the deleted conversation must not come back"
        assert fresh.commit_runtime_state(_append("new")).head_revision == 1
    assert sorted(info.session_id for info in factory.list_sessions()) == ["other", "s"]


def test_garbage_and_stray_files_are_still_removed(tmp_path: Path) -> None:
    factory = SqliteSessionStoreFactory(tmp_path, QUICK)
    path = factory.path_for_session("s")
    path.write_bytes(b"not a database at all" * 100)
    Path(f"{path}-wal").write_bytes(b"stray")
    factory.delete_session("s")
    assert list(tmp_path.iterdir()) == []
    empty = factory.path_for_session("empty")
    empty.touch()
    factory.delete_session("empty")
    assert list(tmp_path.iterdir()) == []


def test_a_marked_file_opened_without_create_is_store_not_found(tmp_path: Path) -> None:
    with Store.open(tmp_path / "a.db") as store:
        store.commit_runtime_state(_append("x"))
    with Store.open(tmp_path / "a.db") as store:
        pass
    import sqlite3

    conn = sqlite3.connect(tmp_path / "a.db")
    conn.execute(f"PRAGMA user_version = {deletion.DELETED_MARK}")
    conn.commit()
    conn.close()
    from lash_store.tools import verify

    with pytest.raises(StoreNotFound, match="deleted"):
        verify(tmp_path / "a.db")
    assert os.path.exists(tmp_path / "a.db")
