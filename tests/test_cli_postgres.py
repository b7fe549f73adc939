"""The ``lash-store`` commands on PostgreSQL: a DSN plus ``--session`` works wherever a file does, and
``copy`` moves a session from SQLite to PostgreSQL and back, verified at each step."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lash_store import SqliteSessionStoreFactory, Store
from lash_store.model import RuntimeCommit, SessionReadScope
from lash_store.postgres import PostgresSessionStoreFactory, PostgresStore, close_shared_pools
from lash_store.testing.pgserver import PostgresServer
from tests.test_cli import EXIT_ERROR, EXIT_FAILED, EXIT_OK, SESSION, _build_session, run, run_json

pytestmark = pytest.mark.postgres


@pytest.fixture
def session_file(tmp_path: Path) -> Path:
    """The same session file the SQLite command tests use (something in every table)."""
    factory = SqliteSessionStoreFactory(tmp_path / "sessions")
    with factory.create_store(SESSION, model="gpt-test") as store:
        _build_session(store)
    return factory.path_for_session(SESSION)


@pytest.fixture(autouse=True)
def _pools() -> object:
    yield
    close_shared_pools()  # the per-test database is dropped afterwards


def test_copy_sqlite_to_postgres_and_back_is_exact(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, session_file: Path, pg_dsn: str
) -> None:
    data = run_json(capsys, "copy", str(session_file), pg_dsn, "--to-session", SESSION)
    assert data["verified"] is True and data["session_id"] == SESSION
    back = tmp_path / "back.db"
    data = run_json(capsys, "copy", pg_dsn, str(back), "--session", SESSION)
    assert data["verified"] is True
    with Store.open_readonly(session_file) as original, Store.open_readonly(back) as clone:
        for scope in (SessionReadScope.full_graph(), SessionReadScope.active_path()):
            assert clone.load_session(scope) == original.load_session(scope)
        assert clone.list_queued_work(SESSION) == original.list_queued_work(SESSION)
        assert clone.load_session_meta() == original.load_session_meta()
    assert run_json(capsys, "verify", str(back))["ok"] is True


def test_reading_and_maintenance_commands_take_a_dsn_and_a_session(
    capsys: pytest.CaptureFixture[str], session_file: Path, pg_dsn: str
) -> None:
    run_json(capsys, "copy", str(session_file), pg_dsn, "--to-session", SESSION)
    inspected = run_json(capsys, "inspect", pg_dsn, "--session", SESSION)
    assert inspected["backend"] == "postgres" and inspected["head"]["head_revision"] == 2
    assert inspected["session_partition"] == SESSION and inspected["graph"]["node_count"] == 5
    history = run_json(capsys, "history", pg_dsn, "--session", SESSION, "--active-path")
    assert history["nodes"][0]["role"] == "user"
    assert run_json(capsys, "verify", pg_dsn, "--session", SESSION)["ok"] is True
    dry = run_json(capsys, "gc", pg_dsn, "--session", SESSION, "--dry-run", "--grace-ms", "0")
    assert dry["deleted_blob_count"] >= 1
    done = run_json(capsys, "gc", pg_dsn, "--session", SESSION, "--grace-ms", "0")
    assert done["deleted_blob_count"] == dry["deleted_blob_count"]
    assert run_json(capsys, "vacuum", pg_dsn, "--session", SESSION)["removed_node_count"] == 1
    listing = run_json(capsys, "sessions", pg_dsn)
    assert [row["session_id"] for row in listing["sessions"]] == [SESSION]
    code, out, _err = run(capsys, "export", pg_dsn, "--session", SESSION)
    assert code == EXIT_OK and SESSION in out


def test_a_missing_postgres_session_is_one_line_and_creates_nothing(
    capsys: pytest.CaptureFixture[str], pg_dsn: str
) -> None:
    for command in (["inspect"], ["verify"], ["gc"], ["vacuum"], ["export"]):
        code, out, err = run(capsys, command[0], pg_dsn, "--session", "nobody")
        assert code == EXIT_ERROR and out == "" and err.count("\n") == 1, err
    code, _out, err = run(capsys, "inspect", pg_dsn)
    assert code == EXIT_ERROR and "--session" in err
    assert PostgresSessionStoreFactory(pg_dsn).list_sessions() == []


def test_import_into_postgres_refuses_an_occupied_session(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, session_file: Path, pg_dsn: str
) -> None:
    export_file = tmp_path / "out.json"
    run_json(capsys, "export", str(session_file), "-o", str(export_file))
    imported = run_json(capsys, "import", str(export_file), pg_dsn)
    assert imported["session_id"] == SESSION
    code, _out, err = run(capsys, "import", str(export_file), pg_dsn)
    assert code == EXIT_ERROR and "already holds" in err
    with PostgresStore.open(pg_dsn, SESSION, create=False) as store:
        read = store.load_session()
        assert read is not None and read.head_revision == 2


def test_a_postgres_session_backs_up_through_export_and_restores_into_another_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, session_file: Path, pg_dsn: str, pg_server: PostgresServer
) -> None:
    """PostgreSQL's own tools back up the database; one session's logical backup is export, restore is import."""
    run_json(capsys, "copy", str(session_file), pg_dsn, "--to-session", SESSION)
    dump = tmp_path / "session.json"
    run_json(capsys, "export", pg_dsn, "--session", SESSION, "-o", str(dump))
    code, _out, err = run(capsys, "backup", pg_dsn, str(tmp_path / "copy.db"))
    assert code == EXIT_ERROR and "pg_dump" in err and not (tmp_path / "copy.db").exists()
    restored_dsn = pg_server.create_database("lash_restore_target")
    try:
        assert run_json(capsys, "import", str(dump), restored_dsn)["session_id"] == SESSION
        with (
            PostgresStore.open(pg_dsn, SESSION, create=False) as original,
            PostgresStore.open(restored_dsn, SESSION, create=False) as restored,
        ):
            for scope in (SessionReadScope.full_graph(), SessionReadScope.active_path()):
                assert restored.load_session(scope) == original.load_session(scope)
            assert restored.list_queued_work(SESSION) == original.list_queued_work(SESSION)
            assert restored.load_session_meta() == original.load_session_meta()
        assert run_json(capsys, "verify", restored_dsn, "--session", SESSION)["ok"] is True
    finally:
        close_shared_pools()
        pg_server.drop_database("lash_restore_target")


def test_sessions_of_a_postgres_database_paginate(capsys: pytest.CaptureFixture[str], pg_dsn: str) -> None:
    factory = PostgresSessionStoreFactory(pg_dsn)
    for name in ("a", "b", "c"):
        factory.create_store(name).close()
    first = run_json(capsys, "sessions", pg_dsn, "--limit", "2")
    assert [row["session_id"] for row in first["sessions"]] == ["a", "b"]
    rest = run_json(capsys, "sessions", pg_dsn, "--after", "b")
    assert [row["session_id"] for row in rest["sessions"]] == ["c"]
    assert EXIT_FAILED != EXIT_OK  # (sessions exits 1 only when some session cannot be read)


def test_sessions_recent_of_a_postgres_database(capsys: pytest.CaptureFixture[str], pg_dsn: str) -> None:
    factory = PostgresSessionStoreFactory(pg_dsn)
    for name in ("r1", "r2"):
        with factory.create_store(name) as store:
            store.commit_runtime_state(RuntimeCommit(session_id=name, expected_head_revision=0))
        time.sleep(0.005)  # the database clock's milliseconds order them
    first = run_json(capsys, "sessions", pg_dsn, "--recent", "--limit", "1")
    assert [row["session_id"] for row in first["sessions"]] == ["r2"] and first["next_cursor"]
    rest = run_json(capsys, "sessions", pg_dsn, "--recent", "--limit", "1", "--cursor", first["next_cursor"])
    assert [row["session_id"] for row in rest["sessions"]] == ["r1"]


def test_sqlite_factory_listing_paginates_too(tmp_path: Path) -> None:
    factory = SqliteSessionStoreFactory(tmp_path)
    for name in ("a", "b", "c"):
        factory.create_store(name).close()
    assert [info.session_id for info in factory.list_sessions(limit=2)] == ["a", "b"]
    assert [info.session_id for info in factory.list_sessions(after="b")] == ["c"]
