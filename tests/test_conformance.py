"""Runs the backend-agnostic conformance suite (``lash_store.testing.conformance``) against our backends.

Backends: ``Store.memory()`` (not durable: the reopen tests are skipped for it),
a file-backed ``Store.open()`` (durable; reopen = ``Store.open`` on the same
path, a new connection) and the pure-Python oracle
``lash_store.testing.reference.ReferenceStore`` (not durable).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

pytest.register_assert_rewrite("lash_store.testing.conformance")

from lash_store import GcPolicy, Store, StoreOptions  # noqa: E402
from lash_store.testing.conformance import *  # noqa: E402, F403  (collects the suite)
from lash_store.testing.conformance import BackendHarness, Clock, SessionStore  # noqa: E402
from lash_store.testing.reference import ReferenceStore  # noqa: E402

_UNDECODABLE = b"\xc1"  # a byte msgpack never uses


def _options(clock: Clock) -> StoreOptions:
    return StoreOptions(clock=clock, gc_policy=GcPolicy(grace_ms=0))


def _sqlite(store: SessionStore) -> Store:
    assert isinstance(store, Store)
    return store


class MemoryHarness(BackendHarness):
    """``Store.memory()``: a private in-memory database per store."""

    name = "sqlite-memory"
    durable = False

    def open(self, clock: Clock) -> SessionStore:
        return Store.memory(_options(clock))

    def corrupt_head(self, store: SessionStore) -> None:
        # A memory database has no second connection; go through the store's own (test-only access).
        _sqlite(store)._db.write(lambda conn: conn.execute("UPDATE session_head SET body = ?", (_UNDECODABLE,)))

    def delete_blob(self, store: SessionStore, ref: str) -> None:
        _sqlite(store)._db.write(lambda conn: conn.execute("DELETE FROM blobs WHERE hash = ?", (ref,)))


class FileHarness(BackendHarness):
    """``Store.open(path)``: one database file per store; reopen opens a new connection on the file."""

    name = "sqlite-file"
    durable = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self._count = 0

    def open(self, clock: Clock) -> SessionStore:
        self._count += 1
        return Store.open(self.root / f"session-{self._count}.db", _options(clock))

    def reopen(self, store: SessionStore) -> SessionStore:
        sqlite_store = _sqlite(store)
        assert sqlite_store.path is not None
        return Store.open(sqlite_store.path, sqlite_store.options)

    def corrupt_head(self, store: SessionStore) -> None:
        path = _sqlite(store).path
        assert path is not None
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            assert conn.execute("UPDATE session_head SET body = ?", (_UNDECODABLE,)).rowcount == 1
        finally:
            conn.close()

    def delete_blob(self, store: SessionStore, ref: str) -> None:
        path = _sqlite(store).path
        assert path is not None
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            assert conn.execute("DELETE FROM blobs WHERE hash = ?", (ref,)).rowcount == 1
        finally:
            conn.close()


class ReferenceHarness(BackendHarness):
    """The pure-Python oracle ``ReferenceStore`` (in memory, so not durable)."""

    name = "reference"
    durable = False

    def open(self, clock: Clock) -> SessionStore:
        return ReferenceStore(_options(clock))

    def corrupt_head(self, store: SessionStore) -> None:
        assert isinstance(store, ReferenceStore)
        state = store._backend._state  # type: ignore[attr-defined]  # test-only access: no second handle exists
        assert state is not None
        state.head["body"] = _UNDECODABLE

    def delete_blob(self, store: SessionStore, ref: str) -> None:
        assert isinstance(store, ReferenceStore)
        del store._backend._state.blobs[ref]  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite-memory", "sqlite-file", "reference"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> BackendHarness:
    """Every backend this repository ships, plus the reference store."""
    if request.param == "sqlite-memory":
        return MemoryHarness()
    if request.param == "sqlite-file":
        return FileHarness(tmp_path)
    return ReferenceHarness()
