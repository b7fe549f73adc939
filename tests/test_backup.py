"""Online backup: consistent copies while another process commits, and a backup never overwrites anything.

* Under load: a writer process commits turn after turn (logging each acknowledged
  revision) while backups are taken through the API and the CLI; every copy
  verifies, holds exactly a prefix of the commits (nodes, usage, revision), lies
  between what was acknowledged before and after it, and restores by opening.
* Refusals: an existing destination (file, directory, dangling link), a stale
  sidecar of that name, a missing directory, a bad path, a closed store — typed
  errors and nothing written.
* An interrupt in the middle leaves no partial file and a usable store.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lash_store import Store
from lash_store.errors import InvalidInput, StoreClosed
from lash_store.model import GraphDelta, SessionReadScope, TokenLedgerEntry, TokenUsage
from lash_store.sqlite import backup as backup_module
from lash_store.testing.conformance import commit, message
from lash_store.tools import ToolError
from lash_store.tools import backup as backup_tool

TURNS_PER_BACKUP_GAP = 3
BACKUPS = 6


def _turn(revision: int) -> Any:
    """Commit number ``revision`` appends node ``n<revision>`` and one input token."""
    parent = f"n{revision - 1}" if revision > 1 else None
    return commit(
        expected=revision - 1,
        graph=GraphDelta.append([message(f"n{revision}", "user", f"turn {revision}", parent)], f"n{revision}"),
        usage_deltas=[TokenLedgerEntry(source="s", model="m", usage=TokenUsage(input_tokens=1))],
    )


def _writer(path: str, log: str, stop: Any) -> None:
    store = Store.open(path)
    revision = 0
    with open(log, "a", encoding="utf-8") as acknowledged:
        while not stop.is_set():
            revision = store.commit_runtime_state(_turn(revision + 1)).head_revision
            acknowledged.write(f"{revision}\n")
            acknowledged.flush()
    store.close()


def _acknowledged(log: Path) -> int:
    lines = log.read_text(encoding="utf-8").split()
    return int(lines[-1]) if lines else 0


def _wait_for(log: Path, revision: int) -> None:
    deadline = time.monotonic() + 60
    while _acknowledged(log) < revision:
        assert time.monotonic() < deadline, "the writer made no progress"
        time.sleep(0.005)


def _check_prefix(copy_path: Path) -> int:
    """The copy verifies and holds commits 1..r exactly, for its revision r; returns r."""
    store = Store.open_readonly(copy_path)
    try:
        assert store.verify() and all(check["ok"] for check in store.verify())
        read = store.load_session()
        assert read is not None
        revision = read.head_revision
        assert [node.node_id for node in read.graph.nodes] == [f"n{i}" for i in range(1, revision + 1)]
        assert read.token_ledger[0].usage.input_tokens == revision
    finally:
        store.close()
    return revision


@pytest.mark.timeout(180)
def test_backups_under_load_hold_a_prefix_of_the_acknowledged_commits(tmp_path: Path) -> None:
    source, log = tmp_path / "live.db", tmp_path / "acknowledged.log"
    Store.open(source).close()
    log.touch()
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    writer = context.Process(target=_writer, args=(str(source), str(log), stop))
    writer.start()
    revisions = []
    try:
        reader = Store.open(source)
        for index in range(BACKUPS):
            _wait_for(log, (index + 1) * TURNS_PER_BACKUP_GAP)
            before = _acknowledged(log)
            dest = tmp_path / f"copy-{index}.db"
            if index % 2:  # the CLI opens the live file read-only
                done = subprocess.run(
                    [sys.executable, "-m", "lash_store.cli", "backup", "--json", str(source), str(dest)],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert done.returncode == 0, done.stderr
                assert json.loads(done.stdout)["ok"] is True
            else:
                reader.backup(dest)
            after = _acknowledged(log)
            revision = _check_prefix(dest)
            # a commit can be durable (so in the copy) a moment before its writer logs it
            assert before <= revision <= after + 1, (before, revision, after)
            revisions.append(revision)
        reader.close()
    finally:
        stop.set()
        writer.join(timeout=60)
        if writer.is_alive():
            writer.kill()
    assert writer.exitcode == 0
    assert revisions == sorted(revisions) and revisions[-1] > revisions[0]
    # restore is opening the copy: it accepts the next commit in sequence
    restored = Store.open(tmp_path / "copy-0.db")
    assert restored.commit_runtime_state(_turn(revisions[0] + 1)).head_revision == revisions[0] + 1
    restored.close()
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []


def _store_with_turns(path: Path, turns: int = 2) -> Store:
    store = Store.open(path)
    for revision in range(1, turns + 1):
        store.commit_runtime_state(_turn(revision))
    return store


def test_the_copy_is_one_self_contained_private_file(tmp_path: Path) -> None:
    store = _store_with_turns(tmp_path / "a.db")
    report = store.backup(tmp_path / "b.db")
    store.close()
    assert report["destination"] == str(tmp_path / "b.db") and report["size_bytes"] > 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("b.db")) == ["b.db"]
    assert (tmp_path / "b.db").stat().st_mode & 0o777 == 0o600
    assert _check_prefix(tmp_path / "b.db") == 2


def test_memory_and_read_only_stores_back_up_too(tmp_path: Path) -> None:
    memory = Store.memory()
    memory.commit_runtime_state(_turn(1))
    memory.backup(tmp_path / "from-memory.db")
    assert _check_prefix(tmp_path / "from-memory.db") == 1
    _store_with_turns(tmp_path / "a.db", 3).close()
    readonly = Store.open_readonly(tmp_path / "a.db")
    readonly.backup(tmp_path / "from-readonly.db")
    readonly.close()
    assert _check_prefix(tmp_path / "from-readonly.db") == 3


def _listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("obstacle", ["file", "directory", "dangling-link", "stale-wal", "stale-journal"])
def test_an_occupied_destination_is_refused_and_nothing_is_written(tmp_path: Path, obstacle: str) -> None:
    store = _store_with_turns(tmp_path / "a.db")
    dest = tmp_path / "out" / "copy.db"
    dest.parent.mkdir()
    if obstacle == "file":
        dest.write_bytes(b"precious")
    elif obstacle == "directory":
        dest.mkdir()
    elif obstacle == "dangling-link":
        dest.symlink_to(tmp_path / "nowhere")
    else:
        Path(f"{dest}-{obstacle.removeprefix('stale-')}").write_bytes(b"stale")
    before = _listing(dest.parent)
    with pytest.raises(InvalidInput) as raised:
        store.backup(dest)
    assert raised.value.what == "dest"
    assert _listing(dest.parent) == before
    store.close()


@pytest.mark.parametrize(
    "dest", ["", "a\x00b", "missing-dir/copy.db", b"bytes.db", 5], ids=["empty", "nul", "no-dir", "bytes", "int"]
)
def test_bad_destinations_are_invalid_input(tmp_path: Path, dest: Any) -> None:
    store = _store_with_turns(tmp_path / "a.db")
    before = _listing(tmp_path)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(InvalidInput):
            store.backup(dest)
    finally:
        os.chdir(cwd)
    assert _listing(tmp_path) == before
    store.close()


def test_the_source_itself_is_never_overwritten(tmp_path: Path) -> None:
    store = _store_with_turns(tmp_path / "a.db")
    with pytest.raises(InvalidInput):
        store.backup(tmp_path / "a.db")
    store.close()
    assert _check_prefix(tmp_path / "a.db") == 2


def test_a_closed_store_raises_store_closed(tmp_path: Path) -> None:
    store = _store_with_turns(tmp_path / "a.db")
    store.close()
    with pytest.raises(StoreClosed):
        store.backup(tmp_path / "b.db")
    assert not (tmp_path / "b.db").exists()


def test_an_interrupt_mid_backup_leaves_no_partial_file_and_a_usable_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store_with_turns(tmp_path / "a.db")

    def interrupted(path: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(backup_module, "_fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.backup(tmp_path / "b.db")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.db", "a.db-shm", "a.db-wal"]
    assert store.commit_runtime_state(_turn(3)).head_revision == 3
    store.backup(tmp_path / "b.db")
    store.close()
    assert _check_prefix(tmp_path / "b.db") == 3


def test_the_tool_refuses_a_dsn_and_a_missing_source(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="pg_dump"):
        backup_tool("postgresql://localhost/db", tmp_path / "b.db")
    with pytest.raises(Exception, match="no lash-store database"):
        backup_tool(tmp_path / "missing.db", tmp_path / "b.db")
    assert list(tmp_path.iterdir()) == []


def test_the_tool_reports_the_copy_and_its_verification(tmp_path: Path) -> None:
    _store_with_turns(tmp_path / "a.db", 4).close()
    report = backup_tool(tmp_path / "a.db", tmp_path / "b.db")
    assert report["ok"] is True and report["problems"] == [] and report["head_revision"] == 4
    copy = Store.open(tmp_path / "b.db")
    read = copy.load_session(SessionReadScope.active_path())
    assert read is not None and [n.node_id for n in read.graph.nodes] == ["n1", "n2", "n3", "n4"]
    copy.close()


def test_the_async_store_backs_up_on_its_lane(tmp_path: Path) -> None:
    import asyncio

    from lash_store import AsyncStore

    async def scenario() -> None:
        async with await AsyncStore.open(tmp_path / "a.db") as store:
            await store.commit_runtime_state(_turn(1))
            report = await store.backup(tmp_path / "b.db")
            assert report["destination"] == str(tmp_path / "b.db")

    asyncio.run(scenario())
    assert _check_prefix(tmp_path / "b.db") == 1
