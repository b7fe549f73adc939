"""The throwaway PostgreSQL server that the PostgreSQL backend's tests and benchmarks run on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from lash_store.testing._proc import pid_alive
from lash_store.testing.pgserver import (
    PostgresServer,
    PostgresServerError,
    PostgresUnavailable,
    find_bindir,
    sweep_stale_servers,
)
from tests.pg import postgres_unavailable

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


@pytest.fixture
def temp_root() -> Iterator[Path]:
    """A private temp root for servers started by a test itself (under /tmp: see default_temp_root)."""
    root = Path(tempfile.mkdtemp(prefix="lash-pg-test-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def started(server: PostgresServer) -> PostgresServer:
    try:
        return server.start()
    except PostgresUnavailable as exc:
        postgres_unavailable(exc)


def test_bytea_round_trip(pg_dsn: str) -> None:
    blob = bytes(range(256)) * 64 + b"\x00tail"
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE blobs (id int PRIMARY KEY, data bytea NOT NULL)")
        conn.execute("INSERT INTO blobs VALUES (1, %s)", (blob,))
        conn.commit()
        row = conn.execute("SELECT data FROM blobs WHERE id = 1").fetchone()
    assert row is not None and bytes(row[0]) == blob


def test_each_test_gets_its_own_database(pg_server: PostgresServer, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None and row[0].startswith("lash_t")
    assert f"dbname={row[0]}" in pg_dsn


def test_key_value_dsn_and_uri_both_connect(pg_server: PostgresServer) -> None:
    assert pg_server.dsn.startswith(f"host={pg_server.socket_dir} port={pg_server.port} dbname=postgres user=")
    for target in (pg_server.dsn, pg_server.uri()):
        with psycopg.connect(target) as conn:
            row = conn.execute("SELECT current_database(), inet_server_addr() IS NULL").fetchone()
        # inet_server_addr() is NULL on a unix socket connection.
        assert row == ("postgres", True), target


def test_tcp_listener_on_a_loopback_address(temp_root: Path) -> None:
    with started(PostgresServer(host="127.0.0.1", temp_root=temp_root)) as server:
        for target in (server.dsn_for("postgres", tcp=True), server.uri(tcp=True)):
            with psycopg.connect(target, connect_timeout=5) as conn:
                row = conn.execute("SELECT host(inet_server_addr()), inet_server_port()").fetchone()
            assert row == ("127.0.0.1", server.port), target
        hba = (server.data_dir / "pg_hba.conf").read_text()
        assert "host all all 127.0.0.0/24 trust" in hba


def test_immediate_stop_and_kill_keep_committed_data(temp_root: Path) -> None:
    with started(PostgresServer(temp_root=temp_root, fsync=False)) as server:
        dsn = server.create_database("crash")
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE TABLE t (n int)")
            conn.execute("INSERT INTO t VALUES (1)")
        server.stop("immediate")  # No shutdown checkpoint: the restart replays the WAL.
        assert not server.running
        server.restart()
        with psycopg.connect(dsn) as conn:
            conn.execute("INSERT INTO t VALUES (2)")
        postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
        server.kill()
        assert not server.running and not pid_alive(postmaster)
        server.start()
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT n FROM t ORDER BY n").fetchall()
        assert rows == [(1,), (2,)]


def test_cleanup_stops_the_server_and_removes_its_directory(temp_root: Path) -> None:
    server = started(PostgresServer(temp_root=temp_root))
    postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    base = server.base_dir
    server.cleanup()
    server.cleanup()  # idempotent
    assert not base.exists()
    assert not pid_alive(postmaster)
    with pytest.raises(PostgresServerError):
        server.start()


def test_stale_run_of_a_dead_process_is_swept(temp_root: Path) -> None:
    server = started(PostgresServer(temp_root=temp_root))
    try:
        postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
        # Pretend the run belongs to a test process that died without cleaning up.
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        (server.base_dir / "owner").write_text(f"{dead.stdout.strip()} 0")
        assert sweep_stale_servers(temp_root) == [server.base_dir]
        assert not server.base_dir.exists()
        assert not pid_alive(postmaster)
    finally:
        server.cleanup()


def test_live_runs_are_not_swept(pg_server: PostgresServer) -> None:
    assert pg_server.base_dir not in sweep_stale_servers(pg_server.temp_root)
    with psycopg.connect(pg_server.dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "192.168.1.10", "8.8.8.8", "::1", "localhost", "*", ""])
def test_refuses_to_listen_outside_127_8(host: str) -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        PostgresServer(host=host)


def test_accepts_any_127_8_address() -> None:
    assert PostgresServer(host="127.213.0.1").host == "127.213.0.1"


def test_startup_failure_reports_the_server_log(temp_root: Path) -> None:
    server = PostgresServer(temp_root=temp_root, settings={"shared_buffers": "lots"}, start_timeout=10)
    with pytest.raises(PostgresServerError, match="shared_buffers") as info:
        started(server)
    assert "server log tail" in str(info.value)
    assert not any(temp_root.iterdir()), "a failed start must clean up its run directory"


def test_bad_database_names_are_refused(pg_server: PostgresServer) -> None:
    for name in ("Upper", "x; DROP DATABASE postgres", "1abc", "a" * 64):
        with pytest.raises(ValueError):
            pg_server.create_database(name)


def test_missing_binaries_give_a_one_line_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LASH_PG_BINDIR", str(tmp_path))
    with pytest.raises(PostgresUnavailable) as info:
        find_bindir()
    assert "\n" not in str(info.value) and "LASH_PG_BINDIR" in str(info.value)
    monkeypatch.delenv("LASH_PG_BINDIR")
    monkeypatch.setenv("PATH", str(tmp_path))
    # Whatever this machine has, the search order never raises anything but PostgresUnavailable.
    try:
        assert (find_bindir() / "initdb").exists()
    except PostgresUnavailable as exc:
        assert "\n" not in str(exc)


def test_server_binaries_never_run_as_root(pg_server: PostgresServer) -> None:
    with psycopg.connect(pg_server.dsn) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        uid = os.stat(f"/proc/{row[0]}").st_uid  # while connected: the backend exits with its connection
    assert uid == os.geteuid() if os.geteuid() != 0 else uid != 0
