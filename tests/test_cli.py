"""The ``lash-store`` inspection and maintenance commands: exit codes, --json shapes, read-only guarantees.

Most commands run in-process through ``lash_store.cli.main`` (real files, real
SQLite); the error-path and console-script checks run the command as a real
subprocess, so a traceback or a created file could not hide.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lash_store import SqliteSessionStoreFactory, Store
from lash_store.cli import EXIT_ERROR, EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from lash_store.model import (
    AttachmentIntent,
    BlobArtifactDescriptor,
    DeliveryPolicy,
    GraphDelta,
    HydratedCheckpoint,
    QueuedWorkBatchDraft,
    QueuedWorkClaimBoundary,
    QueuedWorkPayload,
    RuntimeCommit,
    SessionNode,
    SessionReadScope,
    SlotPolicy,
    TokenLedgerEntry,
    TokenUsage,
    TurnCommitStamp,
    TurnInput,
)

SESSION = "chat/alpha"


def _message(node_id: str, role: str, text: str, parent: str | None) -> SessionNode:
    return SessionNode(
        node_id=node_id,
        parent_node_id=parent,
        payload={"role": role, "parts": [{"type": "text", "text": text}]},
        timestamp_ms=1_700_000_000_000,
    )


def _build_session(store: Store, session_id: str = SESSION) -> None:
    """Two turns, a side branch, a tombstoned node, queue work (one claimed), attachments, a module, an orphan."""
    first = RuntimeCommit(
        session_id=session_id,
        expected_head_revision=0,
        config={"model": "gpt-test"},
        agent_frames=[{"frame_id": "main"}],
        current_agent_frame_id="main",
        graph=GraphDelta.append(
            [_message("u1", "user", "What is WAL?", None), _message("a1", "assistant", "A write-ahead log.", "u1")],
            leaf_node_id="a1",
        ),
        checkpoint=HydratedCheckpoint(turn_state={"turn": 1}, tool_state={"notes": "x" * 6000}),
        usage_deltas=[TokenLedgerEntry(source="turn", model="gpt-test", usage=TokenUsage(input_tokens=10))],
    ).with_turn_commit(TurnCommitStamp(session_id=session_id, turn_id="t1", turn_commit_hash="h1"))
    store.commit_runtime_state(first)
    second = RuntimeCommit(
        session_id=session_id,
        expected_head_revision=1,
        config={"model": "gpt-test"},
        agent_frames=[{"frame_id": "main"}],
        current_agent_frame_id="main",
        graph=GraphDelta.append(
            [
                _message("u2", "user", "And fencing?", "a1"),
                _message("a2", "assistant", "Stale owners are rejected.", "u2"),
                _message("b1", "user", "An abandoned branch", "a1"),
                _message("gone", "user", "Tombstoned soon", "a1"),
            ],
            leaf_node_id="a2",
        ),
        checkpoint=HydratedCheckpoint(turn_state={"turn": 2}, tool_state={"notes": "y"}, execution_state=b"\x00\x01"),
        usage_deltas=[TokenLedgerEntry(source="turn", model="gpt-test", usage=TokenUsage(output_tokens=7))],
    ).with_turn_commit(TurnCommitStamp(session_id=session_id, turn_id="t2", turn_commit_hash="h2"))
    store.commit_runtime_state(second)
    store.tombstone_nodes(["gone"])
    for key, text in (("k1", "queued one"), ("k2", "queued two")):
        draft = QueuedWorkBatchDraft.new(
            session_id,
            DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT,
            SlotPolicy.EXCLUSIVE,
            [QueuedWorkPayload.turn_input(TurnInput.text(text))],
        ).with_source_key(key)
        store.enqueue_queued_work(draft)
    store.claim_ready_queued_work(session_id, "worker-7", QueuedWorkClaimBoundary.IDLE, 60_000, 1)
    store.record_intent(
        AttachmentIntent(
            attachment_id="att-1", session_id=session_id, canonical_uri="s3://bucket/a", intent_at_epoch_ms=1
        )
    )
    store.commit_refs(session_id, ["att-1"])
    store.record_intent(
        AttachmentIntent(
            attachment_id="att-2", session_id=session_id, canonical_uri="s3://bucket/b", intent_at_epoch_ms=2
        )
    )
    store.put_module_artifact("module:v1", b"print('hi')")
    store.put_artifact_blob(BlobArtifactDescriptor.plugin_session_snapshot(), b"an orphan snapshot")


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Human output is rendered for a wide terminal, so table cells are not wrapped mid-word."""
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    directory = tmp_path / "sessions"
    directory.mkdir()
    return directory


@pytest.fixture
def session_file(root: Path) -> Path:
    """A cleanly closed session file (no -wal/-shm sidecars) with something in every table."""
    factory = SqliteSessionStoreFactory(root)
    with factory.create_store(SESSION, model="gpt-test") as store:
        _build_session(store)
    path = factory.path_for_session(SESSION)
    assert sorted(p.name for p in root.iterdir()) == [path.name]
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``lash-store`` in-process; returns (exit code, stdout, stderr)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *args: str, expect: int = EXIT_OK) -> Any:
    code, out, err = run(capsys, *args, "--json")
    assert code == expect, err
    return json.loads(out)


def run_process(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``lash-store`` as a real process."""
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "lash_store.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
        check=False,
    )


def snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file of a directory: content hash and mtime."""
    return {
        path.name: (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(directory.iterdir())
        if path.is_file()
    }


# ---------------------------------------------------------------------------
# inspect


def test_inspect_json_shape(capsys: pytest.CaptureFixture[str], session_file: Path) -> None:
    data = run_json(capsys, "inspect", str(session_file))
    assert set(data) >= {
        "path",
        "file",
        "schema",
        "session",
        "head",
        "graph",
        "checkpoint",
        "usage",
        "usage_total",
        "turn_commits",
        "queue",
        "attachments",
        "module_artifacts",
        "blobs",
    }
    assert data["schema"] == {
        "user_version": 3,
        "supported_version": 3,
        "application_id": 0x4C415348,
        "layout_revision": 4,
    }
    assert data["session"]["session_id"] == SESSION and data["session"]["model"] == "gpt-test"
    assert data["head"]["head_revision"] == 2 and data["head"]["leaf_node_id"] == "a2"
    assert data["head"]["current_agent_frame_id"] == "main" and data["head"]["agent_frame_count"] == 1
    assert data["graph"] == {"node_count": 5, "user_message_count": 3, "live_rows": 5, "tombstoned_rows": 1}
    checkpoint = data["checkpoint"]
    assert checkpoint["turn_state"] == {"turn": 2} and checkpoint["manifest"]["present"]
    assert {child["role"] for child in checkpoint["children"]} == {"tool_state", "execution_state"}
    assert all(child["present"] and child["raw_bytes"] > 0 for child in checkpoint["children"])
    assert data["usage"] == [
        {
            "source": "turn",
            "model": "gpt-test",
            "input_tokens": 10,
            "output_tokens": 7,
            "cached_input_tokens": 0,
            "reasoning_tokens": 0,
        }
    ]
    assert data["turn_commits"] == 2
    batches = data["queue"]["batches"]
    assert [b["source_key"] for b in batches] == ["k1", "k2"]
    assert batches[0]["claim"]["owner_id"] == "worker-7" and batches[0]["claim"]["fencing_token"] == 1
    assert batches[0]["claim"]["expired"] is False and batches[0]["claim"]["expires_at_ms"] > data["queue"]["now_ms"]
    assert batches[1]["claim"] is None and batches[1]["items"] == 1
    assert data["queue"]["last_fencing_tokens"] == {SESSION: 1}
    attachments = {a["attachment_id"]: a for a in data["attachments"]}
    assert attachments["att-1"]["committed_at_ms"] is not None and attachments["att-2"]["committed_at_ms"] is None
    assert data["module_artifacts"] == [
        {"module_ref": "module:v1", "blob_ref": hashlib.sha256(b"print('hi')").hexdigest(), "present": True,
         "raw_bytes": 11}
    ]  # fmt: skip
    with sqlite3.connect(session_file) as conn:
        count, stored = conn.execute("SELECT count(*), sum(length(content)) FROM blobs").fetchone()
    assert data["blobs"]["count"] == count and data["blobs"]["stored_bytes"] == stored
    assert data["blobs"]["by_kind"]["tool_state"]["zstd"] >= 1  # the 6 KB tool state was compressed


def test_inspect_human_output(capsys: pytest.CaptureFixture[str], session_file: Path) -> None:
    code, out, _err = run(capsys, "inspect", str(session_file))
    assert code == EXIT_OK
    for text in (SESSION, "Checkpoint", "Usage", "Queue (2 batches)", "worker-7", "module:v1", "Blobs", "att-2"):
        assert text in out


# ---------------------------------------------------------------------------
# history


def test_history_full_graph_active_path_and_limit(capsys: pytest.CaptureFixture[str], session_file: Path) -> None:
    full = run_json(capsys, "history", str(session_file))
    assert full["session_id"] == SESSION and full["head_revision"] == 2 and full["scope"] == "full_graph"
    assert [n["node_id"] for n in full["nodes"]] == ["u1", "a1", "u2", "a2", "b1"]  # the tombstoned node is hidden
    assert full["nodes"][0] | {"payload": None} == {
        "index": 1,
        "node_id": "u1",
        "parent_node_id": None,
        "kind": "message",
        "role": "user",
        "text": "What is WAL?",
        "timestamp_ms": 1_700_000_000_000,
        "agent_frame_id": None,
        "payload": None,
    }
    path = run_json(capsys, "history", str(session_file), "--active-path")
    assert path["scope"] == "active_path" and path["leaf_node_id"] == "a2"
    assert [n["node_id"] for n in path["nodes"]] == ["u1", "a1", "u2", "a2"]
    last = run_json(capsys, "history", str(session_file), "--active-path", "--limit", "2")
    assert (last["total"], last["shown"]) == (4, 2)
    assert [(n["index"], n["role"], n["text"]) for n in last["nodes"]] == [
        (3, "user", "And fencing?"),
        (4, "assistant", "Stale owners are rejected."),
    ]
    code, out, _err = run(capsys, "history", str(session_file))
    assert code == EXIT_OK and "What is WAL?" in out and "assistant" in out and "showing 5 of 5" in out


def test_history_of_a_store_without_head(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    factory = SqliteSessionStoreFactory(root)
    factory.create_store("empty").close()
    data = run_json(capsys, "history", str(factory.path_for_session("empty")))
    assert data["session_id"] == "empty" and data["head_revision"] == 0 and data["nodes"] == []


def test_history_rejects_a_bad_limit(capsys: pytest.CaptureFixture[str], session_file: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["history", str(session_file), "--limit", "0"])
    assert exc.value.code == EXIT_USAGE
    assert "must be an integer in 1..2**63-1" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# sessions


def test_sessions_lists_every_session_and_reports_foreign_files(
    capsys: pytest.CaptureFixture[str], root: Path, session_file: Path
) -> None:
    factory = SqliteSessionStoreFactory(root)
    with factory.create_store("chat/beta", model="other-model") as store:
        store.commit_runtime_state(
            RuntimeCommit(
                session_id="chat/beta",
                expected_head_revision=0,
                graph=GraphDelta.append([_message("x1", "user", "Hello beta", None)], leaf_node_id="x1"),
            )
        )
    (root / "notes.db").write_text("not a database" * 100)  # another application's file: not a session
    data = run_json(capsys, "sessions", str(root))
    assert data["root"] == str(root)
    rows = {row["session_id"]: row for row in data["sessions"]}
    assert list(rows) == [SESSION, "chat/beta"]
    assert set(rows[SESSION]) == {
        "path",
        "session_id",
        "session_name",
        "model",
        "created_at",
        "cwd",
        "head_revision",
        "messages",
        "user_messages",
        "first_user_message",
        "queued_batches",
        "size_bytes",
    }
    assert rows[SESSION]["first_user_message"] == "What is WAL?" and rows[SESSION]["messages"] == 5
    assert rows[SESSION]["user_messages"] == 3 and rows[SESSION]["head_revision"] == 2
    assert rows[SESSION]["size_bytes"] == session_file.stat().st_size
    assert rows["chat/beta"]["model"] == "other-model" and rows["chat/beta"]["first_user_message"] == "Hello beta"
    assert data["errors"] == []
    code, out, err = run(capsys, "sessions", str(root))
    assert code == EXIT_OK and "chat/beta" in out and "What is WAL?" in out and err == ""


def test_sessions_reports_a_session_it_cannot_read(
    capsys: pytest.CaptureFixture[str], root: Path, session_file: Path
) -> None:
    broken = SqliteSessionStoreFactory(root)
    broken.create_store("broken").close()
    with sqlite3.connect(broken.path_for_session("broken")) as conn:
        conn.execute("UPDATE session_meta SET relation = x'c1'")
    code, out, err = run(capsys, "sessions", str(root))
    assert code == EXIT_FAILED and "What is WAL?" in out  # the readable ones are still listed
    assert "cannot read" in err and "broken" in err
    data = run_json(capsys, "sessions", str(root), expect=EXIT_FAILED)
    assert [row["session_id"] for row in data["sessions"]] == [SESSION]
    assert [error["path"] for error in data["errors"]] == [str(broken.path_for_session("broken"))]


def test_sessions_recent_pages_newest_first_and_refuses_mixed_paging(
    capsys: pytest.CaptureFixture[str], root: Path, session_file: Path
) -> None:
    factory = SqliteSessionStoreFactory(root)
    for name in ("older", "newer"):
        factory.create_store(name).close()
        os.utime(
            factory.path_for_session(name), ns=(time.time_ns(), time.time_ns() + (10**9 if name == "newer" else 0))
        )
    os.utime(session_file, ns=(10**18, 10**18))  # the fixture's session: written long ago
    first = run_json(capsys, "sessions", str(root), "--recent", "--limit", "2")
    assert [row["session_id"] for row in first["sessions"]] == ["newer", "older"]
    assert all(isinstance(row["updated_at_ms"], int) for row in first["sessions"]) and first["next_cursor"]
    rest = run_json(capsys, "sessions", str(root), "--recent", "--cursor", first["next_cursor"])
    assert [row["session_id"] for row in rest["sessions"]] == [SESSION] and rest["next_cursor"] is None
    code, out, _err = run(capsys, "sessions", str(root), "--recent", "--limit", "1")
    assert code == EXIT_OK and "more: --recent --cursor" in out
    code, _out, err = run(capsys, "sessions", str(root), "--recent", "--after", "x")
    assert code == EXIT_ERROR and "--cursor" in err
    code, _out, err = run(capsys, "sessions", str(root), "--cursor", first["next_cursor"])
    assert code == EXIT_ERROR and "--recent" in err
    code, _out, err = run(capsys, "sessions", str(root), "--recent", "--cursor", "nonsense")
    assert code != EXIT_OK and "cursor" in err


def test_sessions_of_an_empty_directory(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    assert run_json(capsys, "sessions", str(root)) == {"root": str(root), "sessions": [], "errors": []}


def test_sessions_needs_a_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path, session_file: Path) -> None:
    code, out, err = run(capsys, "sessions", str(tmp_path / "missing"))
    assert code == EXIT_ERROR and out == "" and err.count("\n") == 1
    code, _out, err = run(capsys, "sessions", str(session_file))
    assert code == EXIT_ERROR and "is not a directory" in err


# ---------------------------------------------------------------------------
# gc and vacuum


def test_gc_dry_run_changes_nothing_then_gc_deletes_the_orphan(
    capsys: pytest.CaptureFixture[str], root: Path, session_file: Path
) -> None:
    orphan = hashlib.sha256(b"an orphan snapshot").hexdigest()
    young = run_json(capsys, "gc", str(session_file), "--dry-run")
    assert young["dry_run"] is True and young["grace_ms"] == 600_000 and young["deleted_blob_count"] == 0
    before = snapshot(root)
    dry = run_json(capsys, "gc", str(session_file), "--dry-run", "--grace-ms", "0")
    assert snapshot(root) == before
    # Live: manifest, tool state, execution state; pinned: the module. The first turn's blobs and the orphan are not.
    assert dry["root_count"] == 4 and dry["skipped_reason"] is None
    assert dry["deleted_blob_count"] >= 2 and dry["deleted_bytes"] > 0
    done = run_json(capsys, "gc", str(session_file), "--grace-ms", "0")
    assert done["dry_run"] is False
    assert (done["deleted_blob_count"], done["retained_blob_count"], done["root_count"], done["deleted_bytes"]) == (
        dry["deleted_blob_count"],
        dry["retained_blob_count"],
        dry["root_count"],
        dry["deleted_bytes"],
    )
    with Store.open_readonly(session_file) as store:
        assert store.get_blob(orphan) is None
        read = store.load_session()
        assert read is not None and read.checkpoint is not None and read.checkpoint.tool_state == {"notes": "y"}
        assert store.get_module_artifact("module:v1") == b"print('hi')"
    assert run_json(capsys, "gc", str(session_file), "--dry-run", "--grace-ms", "0")["deleted_blob_count"] == 0
    code, out, _err = run(capsys, "gc", str(session_file), "--dry-run", "--grace-ms", "0")
    assert code == EXIT_OK and "would delete 0 blobs" in out


def test_gc_dry_run_refuses_when_the_head_manifest_is_corrupt(
    capsys: pytest.CaptureFixture[str], session_file: Path
) -> None:
    with sqlite3.connect(session_file) as conn:
        (ref,) = conn.execute("SELECT checkpoint_ref FROM session_head").fetchone()
        conn.execute("UPDATE blobs SET content = x'c1', encoding = 'raw' WHERE hash = ?", (ref,))
    dry = run_json(capsys, "gc", str(session_file), "--dry-run", "--grace-ms", "0")
    assert dry["deleted_blob_count"] == 0 and "nothing deleted" in dry["skipped_reason"]


def test_vacuum_removes_tombstoned_nodes(capsys: pytest.CaptureFixture[str], session_file: Path) -> None:
    data = run_json(capsys, "vacuum", str(session_file))
    assert data["removed_node_count"] == 1 and data["compacted"] is True
    assert data["size_after_bytes"] <= data["size_before_bytes"]
    with sqlite3.connect(session_file) as conn:
        assert conn.execute("SELECT count(*) FROM graph_nodes WHERE node_id = 'gone'").fetchone() == (0,)
    assert run_json(capsys, "vacuum", str(session_file), "--no-compact")["removed_node_count"] == 0
    assert run_json(capsys, "verify", str(session_file))["ok"] is True
    code, out, _err = run(capsys, "vacuum", str(session_file))
    assert code == EXIT_OK and "removed 0 tombstoned nodes" in out


@pytest.mark.parametrize("command", [["gc"], ["gc", "--dry-run"], ["vacuum"]])
def test_maintenance_never_creates_a_missing_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "missing.db"
    code, _out, err = run(capsys, command[0], str(missing), *command[1:])
    assert code == EXIT_ERROR and "no lash-store database" in err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------
# verify


def test_verify_clean_file(capsys: pytest.CaptureFixture[str], session_file: Path) -> None:
    data = run_json(capsys, "verify", str(session_file))
    assert data["ok"] is True and data["problems"] == []
    assert [c["name"] for c in data["checks"]] == [
        "sqlite integrity",
        "schema",
        "column types",
        "blobs",
        "head",
        "graph",
        "counters",
        "turn commits",
        "queue",
        "module artifacts",
        "metadata",
    ]
    assert all(set(c) == {"name", "ok", "detail", "problems"} and c["ok"] for c in data["checks"])
    code, out, _err = run(capsys, "verify", str(session_file))
    assert code == EXIT_OK and "OK" in out


def test_verify_lists_every_problem(capsys: pytest.CaptureFixture[str], session_file: Path) -> None:
    with sqlite3.connect(session_file) as conn:
        (manifest_ref,) = conn.execute("SELECT checkpoint_ref FROM session_head").fetchone()
        module_ref = hashlib.sha256(b"print('hi')").hexdigest()
        orphan = hashlib.sha256(b"an orphan snapshot").hexdigest()
        conn.execute("UPDATE blobs SET content = CAST('tampered' AS BLOB) WHERE hash = ?", (orphan,))
        conn.execute("DELETE FROM blobs WHERE hash = ?", (module_ref,))
        conn.execute("UPDATE session_head SET node_count = 99")
        conn.execute("UPDATE graph_nodes SET parent_node_id = 'ghost' WHERE node_id = 'b1'")
        conn.execute("UPDATE session_head SET leaf_node_id = 'nowhere'")
        conn.execute("DROP INDEX idx_queued_work_ready")
    data = run_json(capsys, "verify", str(session_file), expect=EXIT_FAILED)
    assert data["ok"] is False
    failed = {c["name"] for c in data["checks"] if not c["ok"]}
    assert failed == {"schema", "blobs", "head", "graph", "counters", "module artifacts"}
    problems = "\n".join(data["problems"])
    for expected in (
        "schema object idx_queued_work_ready is missing",
        f"blob {orphan}: content does not match its SHA-256 address",
        f"blob {module_ref} is missing",
        "leaf node 'nowhere' does not exist",
        "node 'b1': parent 'ghost' does not exist",
        "node 'b1': parent column 'ghost' differs from its body's 'a1'",
        "maintained node count 99 != 5 live nodes",
    ):
        assert expected in problems
    assert manifest_ref not in problems  # the head's manifest is intact
    code, out, _err = run(capsys, "verify", str(session_file))
    assert code == EXIT_FAILED and "problem:" in out and f"{len(data['problems'])} problems" in out


def test_verify_reports_a_corrupt_manifest_and_head(capsys: pytest.CaptureFixture[str], session_file: Path) -> None:
    with sqlite3.connect(session_file) as conn:
        (ref,) = conn.execute("SELECT checkpoint_ref FROM session_head").fetchone()
        conn.execute("UPDATE blobs SET content = x'c1' WHERE hash = ?", (ref,))
        conn.execute("UPDATE runtime_turn_commits SET record = x'c1' WHERE turn_id = 't1'")
    data = run_json(capsys, "verify", str(session_file), expect=EXIT_FAILED)
    problems = "\n".join(data["problems"])
    assert f"checkpoint manifest {ref} does not decode" in problems
    assert "turn 't1' record does not decode" in problems


def test_verify_and_readers_survive_type_confused_rows(capsys: pytest.CaptureFixture[str], session_file: Path) -> None:
    orphan = hashlib.sha256(b"an orphan snapshot").hexdigest()
    with sqlite3.connect(session_file) as conn:
        conn.execute("UPDATE blobs SET content = CAST(content AS TEXT) WHERE hash = ?", (orphan,))
        conn.execute("UPDATE session_head SET head_revision = 'two'")
        conn.execute("UPDATE queued_work_batches SET claim_expires_at_ms = 'soon' WHERE source_key = 'k1'")
    data = run_json(capsys, "verify", str(session_file), expect=EXIT_FAILED)
    problems = "\n".join(data["problems"])
    assert "blobs.content: 1 row(s) hold text, expected blob" in problems
    assert "session_head.head_revision: 1 row(s) hold text, expected integer" in problems
    assert "queued_work_batches.claim_expires_at_ms: 1 row(s) hold text, expected integer" in problems
    assert f"blob {orphan}: " in problems
    # Readers either show what they can or fail with one line; never a traceback.
    for command in (["inspect"], ["history"], ["export"], ["gc", "--dry-run"]):
        code, _out, err = run(capsys, command[0], str(session_file), *command[1:])
        assert code in (EXIT_OK, EXIT_ERROR) and (code == EXIT_OK or err.count("\n") == 1)


# ---------------------------------------------------------------------------
# migrate

SCHEMA_FIXTURES = Path(__file__).parent / "fixtures" / "schema"


def tree_snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file below a directory (subdirectories too): content hash and mtime."""
    return {
        str(path.relative_to(directory)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def old_files(tmp_path: Path) -> dict[str, Path]:
    """Copies of the layout-revision-1 (v3a) and -2 (v3b) fixtures: a session file and a factory root each."""
    copies: dict[str, Path] = {}
    for layout in ("v3a", "v3b"):
        target = tmp_path / "old" / layout
        shutil.copytree(SCHEMA_FIXTURES / layout, target, ignore=shutil.ignore_patterns("expected.json"))
        copies[f"{layout}/session"] = target / "session.db"
        copies[f"{layout}/factory"] = target / "factory"
    return copies


def test_migrate_check_reports_old_files_and_changes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, old_files: dict[str, Path], session_file: Path
) -> None:
    old = tmp_path / "old"
    before = tree_snapshot(old), snapshot(session_file.parent)
    paths = [str(old_files["v3a/session"]), str(old_files["v3b/factory"]), str(session_file)]
    data = run_json(capsys, "migrate", "--check", *paths, expect=EXIT_FAILED)
    assert data["check"] is True and data["ok"] is False and data["layout_revision"] == 4
    statuses = {Path(entry["path"]).name: (entry["status"], entry["revision"]) for entry in data["files"]}
    assert statuses == {
        "session.db": ("needs_migration", 1),
        "alpha-8ed3f6ad685b959e.db": ("needs_migration", 2),
        "beta_with_odd_chars-7a90bf7a99f6966c.db": ("needs_migration", 2),
        session_file.name: ("current", 4),
    }
    assert data["summary"] == {"migrated": 0, "needs_migration": 3, "current": 1, "error": 0}
    code, out, err = run(capsys, "migrate", "--check", *paths)
    assert code == EXIT_FAILED and err == ""
    assert f"{old_files['v3a/session']}: needs migration (revision 1)" in out
    assert f"{session_file}: current" in out and "nothing was changed" in out
    assert (tree_snapshot(old), snapshot(session_file.parent)) == before  # no bytes, mtimes or sidecars changed
    # Only current files: the check passes.
    assert run(capsys, "migrate", "--check", str(session_file))[0] == EXIT_OK


def test_migrate_brings_files_and_factory_roots_up_to_date(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, old_files: dict[str, Path]
) -> None:
    paths = [str(old_files[key]) for key in ("v3a/session", "v3a/factory", "v3b/session", "v3b/factory")]
    code, out, err = run(capsys, "migrate", *paths)
    assert code == EXIT_OK and err == ""
    lines = out.splitlines()
    assert lines[0] == f"{old_files['v3a/session']}: migrated from revision 1"
    assert sum(line.endswith("migrated from revision 1") for line in lines) == 3
    assert sum(line.endswith("migrated from revision 2") for line in lines) == 3
    assert lines[-1] == "6 migrated, 0 current, 0 failed"
    migrated = tree_snapshot(tmp_path / "old")
    assert not any(name.endswith(("-wal", "-shm")) for name in migrated)

    # Done: the check passes, a second run changes nothing, and every reader opens the files.
    assert run_json(capsys, "migrate", "--check", *paths)["summary"]["current"] == 6
    again = run_json(capsys, "migrate", *paths)
    assert again["ok"] is True and {entry["status"] for entry in again["files"]} == {"current"}
    assert tree_snapshot(tmp_path / "old") == migrated
    for layout in ("v3a", "v3b"):
        sessions = run_json(capsys, "sessions", str(old_files[f"{layout}/factory"]))
        assert [row["session_id"] for row in sessions["sessions"]] == ["alpha", "beta/with:odd chars"]
        assert sessions["errors"] == []
        assert run_json(capsys, "verify", str(old_files[f"{layout}/session"]))["ok"] is True
        assert run_json(capsys, "inspect", str(old_files[f"{layout}/session"]))["head"]["head_revision"] == 4


def test_migrate_reports_files_it_cannot_migrate_and_leaves_them_untouched(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, old_files: dict[str, Path]
) -> None:
    root = tmp_path / "mixed"
    shutil.copytree(old_files["v3a/factory"], root)
    (root / "notes.db").write_text("not a database")
    with sqlite3.connect(root / "other-app.db") as conn:
        conn.execute("CREATE TABLE stuff (x)")
    with sqlite3.connect(root / "future.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    (root / "subdir.db").mkdir()
    missing = tmp_path / "missing.db"
    untouched = ("notes.db", "other-app.db", "future.db")
    before = {name: (root / name).read_bytes() for name in untouched}

    data = run_json(capsys, "migrate", str(root), str(missing), expect=EXIT_FAILED)
    results = {Path(entry["path"]).name: entry for entry in data["files"]}
    assert results["alpha-8ed3f6ad685b959e.db"]["status"] == "migrated"
    assert results["beta_with_odd_chars-7a90bf7a99f6966c.db"]["status"] == "migrated"
    assert {name: results[name]["error"]["type"] for name in (*untouched, "subdir.db", "missing.db")} == {
        "notes.db": "NotAStoreDatabase",
        "other-app.db": "NotAStoreDatabase",
        "future.db": "UnsupportedSchemaVersion",
        "subdir.db": "InvalidInput",
        "missing.db": "StoreNotFound",
    }
    assert data["summary"] == {"migrated": 2, "needs_migration": 0, "current": 0, "error": 5}
    assert {name: (root / name).read_bytes() for name in untouched} == before
    assert not missing.exists()
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [*untouched, "subdir.db", "alpha-8ed3f6ad685b959e.db", "beta_with_odd_chars-7a90bf7a99f6966c.db"]
    )

    # Human output: one line per file, the errors on stderr; a real process shows no traceback.
    result = run_process("migrate", str(root), str(missing))
    assert result.returncode == EXIT_FAILED
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 5
    assert all(line.startswith("lash-store: error: ") for line in result.stderr.splitlines())
    assert result.stdout.count(": current\n") == 2 and result.stdout.endswith("0 migrated, 2 current, 5 failed\n")
    check = run_process("migrate", "--check", str(root))
    assert check.returncode == EXIT_FAILED and "Traceback" not in check.stderr
    assert not missing.exists()


def test_migrate_an_empty_root_or_a_bad_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, _err = run(capsys, "migrate", str(empty))
    assert code == EXIT_OK and out == "no session files found\n"
    assert list(empty.iterdir()) == []
    with pytest.raises(SystemExit) as exc:
        main(["migrate"])
    assert exc.value.code == EXIT_USAGE


# ---------------------------------------------------------------------------
# export and import


def test_export_import_round_trip_is_exact(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, session_file: Path
) -> None:
    code, out, _err = run(capsys, "export", str(session_file))
    assert code == EXIT_OK
    document = json.loads(out)
    assert document["format"] == "lash-store/session-dump" and document["version"] == 1
    assert document["head"]["session_id"] == SESSION and document["meta"]["session_id"] == SESSION
    assert {"nodes", "blobs", "turn_commits", "batches", "fences", "attachments", "modules"} <= set(document)
    assert all(isinstance(blob["content"], str) for blob in document["blobs"])  # bytes travel as base64
    export_file = tmp_path / "alpha.json"
    export_file.write_text(out)

    target = tmp_path / "copy.db"
    imported = run_json(capsys, "import", str(export_file), str(target))
    assert imported["target"] == str(target) and imported["session_id"] == SESSION and imported["created"] is True
    assert imported["rows"]["blobs"] == len(document["blobs"])
    assert target.stat().st_mode & 0o777 == 0o600

    code, again, _err = run(capsys, "export", str(target))
    assert json.loads(again) == document  # the same rows, the same order
    with Store.open_readonly(session_file) as original, Store.open_readonly(target) as clone:
        for scope in (SessionReadScope.full_graph(), SessionReadScope.active_path()):
            assert clone.load_session(scope) == original.load_session(scope)
        assert clone.load_session_meta() == original.load_session_meta()
        assert clone.list_queued_work(SESSION) == original.list_queued_work(SESSION)
        assert clone.get_module_artifact("module:v1") == b"print('hi')"
    # The imported queue keeps its fencing counter and never reuses an enqueue sequence number.
    with Store.open(target) as store:
        batch = store.enqueue_queued_work(
            QueuedWorkBatchDraft.new(
                SESSION,
                DeliveryPolicy.EARLIEST_SAFE_BOUNDARY,
                SlotPolicy.EXCLUSIVE,
                [QueuedWorkPayload.session_command("x")],
            )
        )
        assert batch.enqueue_seq == 3
    assert run_json(capsys, "verify", str(target))["ok"] is True


def test_export_to_a_file_and_import_into_a_factory_root(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, session_file: Path
) -> None:
    export_file = tmp_path / "out.json"
    summary = run_json(capsys, "export", str(session_file), "-o", str(export_file))
    assert summary["output"] == str(export_file) and summary["session_id"] == SESSION
    assert summary["source"] == str(session_file) and summary["node_count"] == 5
    assert summary["head_revision"] == 2 and summary["bytes"] == export_file.stat().st_size
    assert export_file.stat().st_mode & 0o777 == 0o600
    code, _out, err = run(capsys, "export", str(session_file), "-o", str(export_file))
    assert code == EXIT_ERROR and "--force" in err
    code, out, _err = run(capsys, "export", str(session_file), "-o", str(export_file), "--force")
    assert code == EXIT_OK and "exported session chat/alpha" in out

    other_root = tmp_path / "other"
    other_root.mkdir()
    code, out, _err = run(capsys, "import", str(export_file), str(other_root))
    assert code == EXIT_OK and "imported session chat/alpha" in out
    placed = SqliteSessionStoreFactory(other_root).path_for_session(SESSION)
    assert [p.name for p in other_root.iterdir()] == [placed.name]
    assert [s.session_id for s in SqliteSessionStoreFactory(other_root).list_sessions()] == [SESSION]


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_export_never_overwrites_its_own_source(
    capsys: pytest.CaptureFixture[str], root: Path, session_file: Path, suffix: str
) -> None:
    with Store.open(session_file):  # a live connection keeps the -wal and -shm in place
        before = snapshot(root)
        code, _out, err = run(capsys, "export", str(session_file), "-o", f"{session_file}{suffix}", "--force")
        assert code == EXIT_ERROR and "refusing to overwrite the store being exported" in err
        assert snapshot(root) == before


def test_import_into_a_factory_root_checks_the_session_the_export_claims(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, session_file: Path
) -> None:
    _code, out, _err = run(capsys, "export", str(session_file))
    document = json.loads(out)
    document["meta"]["session_id"] = "someone-else"  # the file name would be taken from a lie
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(document))
    factory_root = tmp_path / "root2"
    factory_root.mkdir()
    code, _out, err = run(capsys, "import", str(forged), str(factory_root))
    assert code == EXIT_ERROR and "contradicts itself" in err
    assert list(factory_root.iterdir()) == []


def test_import_refuses_to_overwrite_a_session(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, root: Path, session_file: Path
) -> None:
    export_file = tmp_path / "out.json"
    run_json(capsys, "export", str(session_file), "-o", str(export_file))
    before = snapshot(root)
    error = run_json(capsys, "import", str(export_file), str(session_file), expect=EXIT_ERROR)
    assert error["error"]["type"] == "InvalidInput"
    assert "already holds session" in error["error"]["message"]
    assert snapshot(root) == before
    code, _out, err = run(capsys, "import", str(export_file), str(root))  # the factory path is taken too
    assert code == EXIT_ERROR and "already holds session" in err
    # A store with only metadata is not empty either.
    factory = SqliteSessionStoreFactory(tmp_path / "meta-only")
    factory.create_store("someone").close()
    code, _out, err = run(capsys, "import", str(export_file), str(factory.path_for_session("someone")))
    assert code == EXIT_ERROR and "already holds data" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not a lash-store session dump"),
        ('{"format": "something-else"}', "format"),
        ('{"format": "lash-store/session-dump", "version": 9}', "version"),
        ('{"format": "lash-store/session-dump", "version": 1, "evil": {}}', "unknown field"),
        ('{"format": "lash-store/session-dump", "version": 1, "last_enqueue_seq": 9223372036854775808}', "<="),
        (
            '{"format": "lash-store/session-dump", "version": 1, "nodes": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "bad.json",
        ),
    ],
    ids=["not-json", "other-format", "future-version", "unknown-field", "too-big-for-sqlite", "nested-deep"],
)
def test_import_rejects_bad_files_without_creating_anything(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    target = tmp_path / "target.db"
    code, _out, err = run(capsys, "import", str(bad), str(target))
    assert code == EXIT_ERROR and message in err and err.count("\n") == 1, err
    assert not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


def test_import_rejects_a_tampered_blob(capsys: pytest.CaptureFixture[str], tmp_path: Path, session_file: Path) -> None:
    _code, out, _err = run(capsys, "export", str(session_file))
    document = json.loads(out)
    raw = next(blob for blob in document["blobs"] if blob["encoding"] == "raw")
    raw["content"] = "dGFtcGVyZWQ="  # base64 of b"tampered"
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(document))
    target = tmp_path / "target.db"
    code, _out, err = run(capsys, "import", str(bad), str(target))
    assert code == EXIT_ERROR and "does not match its SHA-256 address" in err
    assert not target.exists()


def test_import_rejects_a_dump_whose_rows_do_not_decode(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, session_file: Path
) -> None:
    _code, out, _err = run(capsys, "export", str(session_file))
    document = json.loads(out)
    document["nodes"][0]["body"] = "wQ=="  # base64 of b"\xc1": not msgpack
    bad = tmp_path / "inconsistent.json"
    bad.write_text(json.dumps(document))
    target = tmp_path / "target.db"
    code, _out, err = run(capsys, "import", str(bad), str(target))
    assert code == EXIT_ERROR and "graph node" in err
    assert not target.exists() and not Path(f"{target}-wal").exists()


def test_copy_between_files_is_verified(capsys: pytest.CaptureFixture[str], tmp_path: Path, session_file: Path) -> None:
    target = tmp_path / "copied.db"
    data = run_json(capsys, "copy", str(session_file), str(target))
    assert data["verified"] is True and data["session_id"] == SESSION and data["created"] is True
    with Store.open_readonly(session_file) as original, Store.open_readonly(target) as clone:
        assert clone.load_session() == original.load_session()
    code, _out, err = run(capsys, "copy", str(session_file), str(target))  # never over an existing session
    assert code == EXIT_ERROR and "already holds" in err


# ---------------------------------------------------------------------------
# Read-only guarantee, errors, the console script


READING_COMMANDS = [
    ["inspect"],
    ["inspect", "--json"],
    ["history"],
    ["history", "--active-path", "--json"],
    ["verify"],
    ["verify", "--json"],
    ["gc", "--dry-run", "--grace-ms", "0"],
    ["export"],
]


@pytest.mark.parametrize("command", READING_COMMANDS, ids=lambda c: " ".join(c))
def test_reading_commands_never_modify_or_create_files(
    capsys: pytest.CaptureFixture[str], root: Path, session_file: Path, command: list[str]
) -> None:
    before = snapshot(root)
    code, _out, _err = run(capsys, command[0], str(session_file), *command[1:])
    assert code == EXIT_OK
    assert snapshot(root) == before  # same bytes, same mtimes, and no -wal/-shm sidecar appeared


def test_sessions_never_modifies_or_creates_files(
    capsys: pytest.CaptureFixture[str], root: Path, session_file: Path
) -> None:
    (root / "foreign.db").write_bytes(b"SQLite format 3\x00 but not really")
    before = snapshot(root)
    for args in (["sessions", str(root)], ["sessions", str(root), "--json"]):
        assert run(capsys, *args)[0] == EXIT_OK
    assert snapshot(root) == before


def test_reading_next_to_a_live_writer_sees_its_commits(
    capsys: pytest.CaptureFixture[str], root: Path, session_file: Path
) -> None:
    with Store.open(session_file) as writer:
        writer.commit_runtime_state(
            RuntimeCommit(
                session_id=SESSION,
                expected_head_revision=2,
                graph=GraphDelta.append([_message("u3", "user", "Live?", "a2")], leaf_node_id="u3"),
            )
        )
        names = sorted(p.name for p in root.iterdir())
        assert run_json(capsys, "inspect", str(session_file))["head"]["head_revision"] == 3
        assert run_json(capsys, "history", str(session_file), "--active-path")["nodes"][-1]["text"] == "Live?"
        assert run_json(capsys, "verify", str(session_file))["ok"] is True
        assert sorted(p.name for p in root.iterdir()) == names


@pytest.mark.parametrize(
    "command",
    [
        ["inspect"],
        ["history"],
        ["verify"],
        ["gc"],
        ["gc", "--dry-run"],
        ["vacuum"],
        ["export"],
    ],
    ids=lambda c: " ".join(c),
)
def test_missing_and_foreign_paths_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    foreign = tmp_path / "foreign.db"
    foreign.write_text("hello, I am a text file\n")
    other_app = tmp_path / "other.db"
    with sqlite3.connect(other_app) as conn:
        conn.execute("CREATE TABLE stuff (x)")
    before = snapshot(tmp_path)
    for target, message in (
        (tmp_path / "missing.db", "no lash-store database at"),
        (foreign, "is not a lash-store session database"),
        (other_app, "is not a lash-store session database"),
        (tmp_path, "is a directory"),
    ):
        code, out, err = run(capsys, command[0], str(target), *command[1:])
        assert code == EXIT_ERROR, err
        assert out == ""
        assert err.startswith("lash-store: error: ") and message in err and err.count("\n") == 1
    assert snapshot(tmp_path) == before


def test_errors_in_a_real_process_are_one_line_without_traceback(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    foreign.write_text("hello, I am a text file\n")
    before = snapshot(tmp_path)
    for args in (["inspect", str(tmp_path / "missing.db")], ["verify", str(foreign)], ["vacuum", str(foreign)]):
        result = run_process(*args)
        assert result.returncode == EXIT_ERROR and result.stdout == ""
        assert result.stderr.startswith("lash-store: error: ") and result.stderr.count("\n") == 1
    assert snapshot(tmp_path) == before


def test_json_errors_go_to_stdout_too(tmp_path: Path) -> None:
    result = run_process("inspect", str(tmp_path / "missing.db"), "--json")
    assert result.returncode == EXIT_ERROR
    assert json.loads(result.stdout) == {
        "error": {"type": "StoreNotFound", "message": f"no lash-store database at {tmp_path / 'missing.db'}"}
    }


def test_unsupported_schema_version_is_reported(tmp_path: Path) -> None:
    future = tmp_path / "future.db"
    with sqlite3.connect(future) as conn:
        conn.execute("PRAGMA user_version = 99")
    before = snapshot(tmp_path)
    result = run_process("verify", str(future))
    assert result.returncode == EXIT_ERROR
    assert "supports session schema version 3, but the database reports version 99" in result.stderr
    assert snapshot(tmp_path) == before


def test_console_script_help_and_usage_errors() -> None:
    script = Path(sys.executable).with_name("lash-store")
    assert script.exists(), "run `pip install -e .` so the console script exists"
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == EXIT_OK
    for command in (
        "demo",
        "inspect",
        "history",
        "sessions",
        "gc",
        "vacuum",
        "verify",
        "migrate",
        "export",
        "import",
        "bench",
    ):
        assert command in result.stdout
    result = subprocess.run([script, "frobnicate"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == EXIT_USAGE and "invalid choice" in result.stderr
    version = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert version.returncode == EXIT_OK and version.stdout.startswith("lash-store ")


def test_bench_is_delegated_to_the_benchmark_command_line() -> None:
    result = run_process("bench", "--help")
    assert result.returncode == EXIT_OK and "commit" in result.stdout and "queue" in result.stdout
