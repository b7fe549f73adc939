"""The schema-v3 fixtures (tests/fixtures/schema) are present and are what they claim to be.

Only presence and identity are checked here; migrations have tests of their own.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

SCHEMA_DIR = Path(__file__).parent / "fixtures" / "schema"
LAYOUTS = ("v3a", "v3b", "v3c")
SPLIT_TABLES = {"graph_stats", "usage_totals"}  # 3a only: 3b keeps these on the session_head row

# The identity every schema-v3 file carries; spelled out because the fixtures must never follow a code change.
USER_VERSION = 3
APPLICATION_ID = 0x4C415348  # "LASH"


def fixture_files(layout: str) -> list[Path]:
    directory = SCHEMA_DIR / layout
    return [directory / "session.db", *sorted((directory / "factory").glob("*.db"))]


def read_identity(path: Path, tmp_path: Path) -> tuple[int, int, set[str]]:
    """user_version, application_id and table names, read from a copy so no sidecar appears beside the fixture."""
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    conn = sqlite3.connect(copy)
    try:
        user_version = conn.execute("PRAGMA user_version").fetchone()[0]
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()
    return user_version, application_id, tables


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fixture_files_exist_without_sidecars(layout: str) -> None:
    files = fixture_files(layout)
    assert len(files) == 3, f"{layout}: session.db and two factory sessions"
    for path in files:
        assert path.is_file()
        assert path.read_bytes()[:16] == b"SQLite format 3\x00"
    leftovers = [p for p in (SCHEMA_DIR / layout).rglob("*") if p.name.endswith(("-wal", "-shm", "-journal"))]
    assert not leftovers, "fixtures must be fully checkpointed single files"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fixture_identity_and_layout(layout: str, tmp_path: Path) -> None:
    for path in fixture_files(layout):
        user_version, application_id, tables = read_identity(path, tmp_path)
        assert user_version == USER_VERSION, path
        assert application_id == APPLICATION_ID, path
        if layout == "v3a":
            assert tables >= SPLIT_TABLES, path
        else:
            assert not tables & SPLIT_TABLES, path


@pytest.mark.parametrize("layout", LAYOUTS)
def test_expected_json_parses(layout: str) -> None:
    expected = json.loads((SCHEMA_DIR / layout / "expected.json").read_text(encoding="utf-8"))
    assert expected["layout"] == layout.removeprefix("v")
    assert expected["session"]["sqlite"]["user_version"] == USER_VERSION
    assert expected["session"]["read"]["load_session"]["full_graph"]["session_id"] == "fixture-session"
