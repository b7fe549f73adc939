"""``lash-store stats``: sizes, counts and growth of one store, or summed over a factory root or a database.

In the style of ``tests/test_cli.py`` (in-process, real files), plus the same
command on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lash_store import SqliteSessionStoreFactory, Store
from lash_store.cli import EXIT_ERROR, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from lash_store.model import RuntimeCommit
from tests.test_cli import SESSION, _build_session, run, run_json, snapshot


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A factory root: the rich session of the CLI tests, a small one, and an empty one."""
    directory = tmp_path / "sessions"
    factory = SqliteSessionStoreFactory(directory)
    with factory.create_store(SESSION, model="gpt-test") as store:
        _build_session(store)
    with factory.create_store("small", model="gpt-test") as store:
        store.commit_runtime_state(RuntimeCommit(session_id="small", expected_head_revision=0))
    factory.create_store("empty", model="gpt-test").close()
    return directory


def _file(root: Path, session_id: str) -> Path:
    return SqliteSessionStoreFactory(root).path_for_session(session_id)


def test_stats_of_a_session_file(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    path = _file(root, SESSION)
    data = run_json(capsys, "stats", str(path))
    assert data["kind"] == "store" and data["backend"] == "sqlite"
    assert data["session_id"] == SESSION and data["head_revision"] == 2
    assert data["files"] == {"database_bytes": path.stat().st_size, "wal_bytes": 0}
    assert data["stored_bytes"] == path.stat().st_size
    assert data["counts"] == {
        "nodes": 5,
        "tombstoned_nodes": 1,
        "blobs": data["blobs"]["count"],
        "turn_commits": 2,
        "queue_batches": 2,
        "claimed_batches": 1,
        "attachments": 2,
        "uncommitted_attachments": 1,
        "module_artifacts": 1,
    }
    content = data["content_bytes"]
    assert content["blobs"] == data["blobs"]["stored_bytes"] > 0
    assert content["nodes"] > 0 and content["turn_commits"] > 0 and content["queue"] > 0
    assert content["total"] == content["nodes"] + content["blobs"] + content["turn_commits"] + content["queue"]
    assert "plugin_session_snapshot" in data["blobs"]["by_kind"]
    growth = data["growth"]
    assert growth["commits"] == 2 and growth["turns"] == 2
    assert growth["stored_bytes_per_commit"] == data["stored_bytes"] / 2
    assert growth["content_bytes_per_commit"] == content["total"] / 2 == growth["content_bytes_per_turn"]


def test_stats_counts_the_wal_of_a_live_writer(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    path = _file(root, "small")
    with Store.open(path) as writer:
        writer.commit_runtime_state(RuntimeCommit(session_id="small", expected_head_revision=1))
        data = run_json(capsys, "stats", str(path))
    assert data["head_revision"] == 2
    assert data["files"]["wal_bytes"] > 0
    assert data["stored_bytes"] == data["files"]["database_bytes"] + data["files"]["wal_bytes"]


def test_stats_human_output(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    code, out, err = run(capsys, "stats", str(_file(root, SESSION)))
    assert code == EXIT_OK and err == ""
    for label in ("database file", "WAL", "head revision", "per commit", "per turn stamp", "Blobs", "tool_state"):
        assert label in out, label
    assert "5 live, 1 tombstoned" in out and "2 batches (1 claimed)" in out


def test_stats_of_a_factory_root(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    (root / "foreign.db").write_text("not a database\n")  # another application's file is no session
    with sqlite3.connect(root / "other-app.db") as conn:
        conn.execute("CREATE TABLE stuff (x)")
    data = run_json(capsys, "stats", str(root), "--top", "2")
    assert data["kind"] == "root" and data["sessions"] == 3 and data["errors"] == []
    files = [_file(root, name) for name in (SESSION, "small", "empty")]
    assert data["stored_bytes"] == sum(path.stat().st_size for path in files)
    assert [entry["session_id"] for entry in data["largest"]] == [SESSION, "small"]
    assert data["largest"][0]["stored_bytes"] >= data["largest"][1]["stored_bytes"]
    single = run_json(capsys, "stats", str(files[0]))
    assert data["counts"]["turn_commits"] == single["counts"]["turn_commits"] == 2
    assert data["counts"]["nodes"] == 5 and data["commits"] == 3
    assert data["content_bytes"]["total"] > single["content_bytes"]["total"]

    code, out, _err = run(capsys, "stats", str(root))
    assert code == EXIT_OK
    assert "3 sessions in" in out and "Largest sessions (top 3)" in out and "Totals" in out


def test_stats_of_a_root_reports_a_session_it_cannot_read(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    damaged = _file(root, "small")
    with sqlite3.connect(damaged) as conn:  # as if written by a future release
        conn.execute("PRAGMA user_version = 99")
    data = run_json(capsys, "stats", str(root), expect=EXIT_FAILED)
    assert data["sessions"] == 2
    assert [error["path"] for error in data["errors"]] == [str(damaged)]
    code, _out, err = run(capsys, "stats", str(root))
    assert code == EXIT_FAILED and str(damaged) in err


def test_stats_reads_without_writing(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    before = snapshot(root)
    for args in (["stats", str(root)], ["stats", str(_file(root, SESSION)), "--json"]):
        assert run(capsys, *args)[0] == EXIT_OK
    assert snapshot(root) == before  # same bytes, same mtimes, no -wal/-shm appeared


def test_stats_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, root: Path) -> None:
    for args in (
        ["stats", str(tmp_path / "missing.db")],
        ["stats", str(root), "--session", "x"],
    ):
        code, out, err = run(capsys, *args)
        assert code == EXIT_ERROR and out == "" and err.count("\n") == 1, err
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(SystemExit) as exc:
        run(capsys, "stats", str(root), "--top", "0")
    assert exc.value.code == EXIT_USAGE


# ---------------------------------------------------------------------------
# PostgreSQL


@pytest.mark.postgres
def test_stats_on_postgres(capsys: pytest.CaptureFixture[str], root: Path, pg_dsn: str) -> None:
    from lash_store.postgres import close_shared_pools

    try:
        run_json(capsys, "copy", str(_file(root, SESSION)), pg_dsn, "--to-session", SESSION)
        run_json(capsys, "copy", str(_file(root, "small")), pg_dsn, "--to-session", "small")
        local = run_json(capsys, "stats", str(_file(root, SESSION)))
        data = run_json(capsys, "stats", pg_dsn, "--session", SESSION)
        assert data["kind"] == "store" and data["backend"] == "postgres"
        assert data["session_partition"] == SESSION and data["head_revision"] == 2
        assert data["files"] is None
        assert data["counts"] == local["counts"] and data["content_bytes"] == local["content_bytes"]
        assert data["stored_bytes"] == data["content_bytes"]["total"]
        code, out, _err = run(capsys, "stats", pg_dsn, "--session", SESSION)
        assert code == EXIT_OK and "partition" in out and "(content)" in out

        everything = run_json(capsys, "stats", pg_dsn)
        assert everything["kind"] == "root" and everything["backend"] == "postgres"
        assert everything["sessions"] == 2 and everything["errors"] == []
        assert [entry["session_id"] for entry in everything["largest"]] == [SESSION, "small"]
        assert everything["commits"] == 3

        code, _out, err = run(capsys, "stats", pg_dsn, "--session", "nobody")
        assert code == EXIT_ERROR and err.count("\n") == 1
    finally:
        close_shared_pools()
