"""``lash-store bench processes --quick`` runs end to end on both backends, verifies what it wrote and reports
the documented JSON.  Nothing here depends on speed."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from lash_store.cli import main as cli_main
from lash_store.postgres import close_shared_pools
from tests.test_bench import run_bench_process

pytestmark = pytest.mark.timeout(300)

WORKLOADS = ["append 1", "append 100", "lease 1", "lease 2", "wake p50 ms", "wake p90 ms"]


def _check(report: dict[str, object], backend: str) -> None:
    assert report["benchmark"] == "processes" and report["backend"] == backend
    rows = report["rows"]
    assert isinstance(rows, list) and [row["workload"] for row in rows] == WORKLOADS
    for row in rows:
        assert row["lash-store"] > 0 and row["floor"] > 0 and row["x_floor"] > 0
    verification = report["verification"]
    assert isinstance(verification, dict) and verification["ok"], verification
    assert verification["lash-store"]["counts"]["wake-ups"] == report["config"]["wake_rounds"]  # type: ignore[index]


def test_processes_quick_on_sqlite(tmp_path: Path) -> None:
    """Through ``python -m`` so that the spawned workers and the exit code are the real ones; --dir keeps the files."""
    completed = run_bench_process(["processes", "--quick", "--json", "--dir", str(tmp_path)])
    assert completed.returncode == 0, completed.stderr
    _check(json.loads(completed.stdout), "sqlite")
    (run_dir,) = tmp_path.iterdir()
    assert {path.name for path in run_dir.iterdir()} >= {"lash-store.db", "floor.db"}


@pytest.mark.postgres
def test_processes_quick_on_postgres_leaves_no_schema(pg_dsn: str) -> None:
    completed = run_bench_process(["processes", "--backend", "postgres", "--dsn", pg_dsn, "--quick", "--json"])
    assert completed.returncode == 0, completed.stderr
    _check(json.loads(completed.stdout), "postgres")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        left = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'lash_bench_%'").fetchall()
    assert left == []
    close_shared_pools()


def test_the_text_report_through_lash_store(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "processes", "--quick", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "append 1" in out and "lease 1" in out and "wake p50 ms" in out and "verification: ok" in out
