"""Shared fixtures: temporary database paths, an injectable clock, and (from tests.pg) PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests import the registry suite's builders too; its asserts are rewritten wherever it is first imported.
pytest.register_assert_rewrite("lash_store.testing.registry_conformance")

from lash_store import Store, StoreOptions  # noqa: E402
from tests.helpers import ManualClock  # noqa: E402

# PostgreSQL fixtures live in their own module; importing them here makes pytest see them everywhere.
from tests.pg import pg_dsn, pg_server  # noqa: E402, F401


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A path for a new session database file (not yet created)."""
    return tmp_path / "session.db"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000_000)


@pytest.fixture
def memory_store() -> Iterator[Store]:
    with Store.memory() as store:
        yield store


@pytest.fixture
def clocked_store(db_path: Path, clock: ManualClock) -> Iterator[Store]:
    """A file store whose time is driven by ``clock``."""
    with Store.open(db_path, StoreOptions(clock=clock)) as store:
        yield store
