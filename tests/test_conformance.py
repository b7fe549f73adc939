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

from lash_store import GcPolicy, PoisonPolicy, Store, StoreOptions  # noqa: E402
from lash_store.core.crypto import Cipher  # noqa: E402
from lash_store.options import KeyRing  # noqa: E402
from lash_store.service.sealed import REF  # noqa: E402
from lash_store.testing.conformance import *  # noqa: E402, F403  (collects the suite)
from lash_store.testing.conformance import BackendHarness, Clock, SessionStore  # noqa: E402
from lash_store.testing.reference import ReferenceStore  # noqa: E402

_UNDECODABLE = b"\xc1"  # a byte msgpack never uses


def _options(clock: Clock, poison: PoisonPolicy | None = None) -> StoreOptions:
    return StoreOptions(clock=clock, gc_policy=GcPolicy(grace_ms=0), poison=poison)


def _sqlite(store: SessionStore) -> Store:
    assert isinstance(store, Store)
    return store


# How each damage target is done with SQL on a session file (the conformance suite's damage hook).
SQLITE_DAMAGE = {
    "head.body": "UPDATE session_head SET body = ?",
    "head.usage_ledger": "UPDATE session_head SET usage_ledger = ?",
    "node.body": "UPDATE graph_nodes SET body = ? WHERE node_id = ?",
    "blob.content": "UPDATE blobs SET content = ? WHERE hash = ?",
    "blob.delete": "DELETE FROM blobs WHERE hash = ?",
    "meta.relation": "UPDATE session_meta SET relation = ?",
    "turn.record": "UPDATE runtime_turn_commits SET record = ? WHERE turn_id = ?",
    "batch.payloads": "UPDATE queued_work_batches SET payloads = ? WHERE batch_id = ?",
}


def _damage_params(key: str | None, value: object) -> tuple[object, ...]:
    return tuple(item for item in (value, key) if item is not None)


class MemoryHarness(BackendHarness):
    """``Store.memory()``: a private in-memory database per store."""

    name = "sqlite-memory"
    durable = False

    def open(self, clock: Clock, poison: PoisonPolicy | None = None) -> SessionStore:
        return Store.memory(_options(clock, poison))

    def damage(self, store: SessionStore, target: str, key: str | None, value: object) -> None:
        # A memory database has no second connection; go through the store's own (test-only access).
        changed = _sqlite(store)._db.write(
            lambda conn: conn.execute(SQLITE_DAMAGE[target], _damage_params(key, value)).rowcount
        )
        assert changed == 1, f"damage {target} {key} changed {changed} rows"


class FileHarness(BackendHarness):
    """``Store.open(path)``: one database file per store; reopen opens a new connection on the file."""

    name = "sqlite-file"
    durable = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self._count = 0

    def open(self, clock: Clock, poison: PoisonPolicy | None = None) -> SessionStore:
        self._count += 1
        return Store.open(self.root / f"session-{self._count}.db", _options(clock, poison))

    def reopen(self, store: SessionStore) -> SessionStore:
        sqlite_store = _sqlite(store)
        assert sqlite_store.path is not None
        return Store.open(sqlite_store.path, sqlite_store.options)

    def damage(self, store: SessionStore, target: str, key: str | None, value: object) -> None:
        path = _sqlite(store).path
        assert path is not None
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            changed = conn.execute(SQLITE_DAMAGE[target], _damage_params(key, value)).rowcount
        finally:
            conn.close()
        assert changed == 1, f"damage {target} {key} changed {changed} rows"


class ReferenceHarness(BackendHarness):
    """The pure-Python oracle ``ReferenceStore`` (in memory, so not durable)."""

    name = "reference"
    durable = False

    def open(self, clock: Clock, poison: PoisonPolicy | None = None) -> SessionStore:
        return ReferenceStore(_options(clock, poison))

    def damage(self, store: SessionStore, target: str, key: str | None, value: object) -> None:
        assert isinstance(store, ReferenceStore)
        state = store._backend._state  # type: ignore[attr-defined]  # test-only access: no second handle exists
        assert state is not None
        if target == "blob.delete":
            del state.blobs[key]
            return
        rows = {
            "head.body": (state.head, "body"),
            "head.usage_ledger": (state.head, "usage_ledger"),
            "node.body": (state.nodes.get(key or ""), "body"),
            "blob.content": (state.blobs.get(key or ""), "content"),
            "meta.relation": (state.meta, "relation"),
            "turn.record": (next((r for r in state.turn_commits.values() if r["turn_id"] == key), None), "record"),
            "batch.payloads": (state.batches.get(key or ""), "payloads"),
        }
        row, column = rows[target]
        assert row is not None, f"damage {target}: no row {key}"
        row[column] = value


_RING = KeyRing.generate("conformance")


class EncryptedFileHarness(FileHarness):
    """``Store.open(path)`` with a key ring: every conversation byte sealed (README, "Encryption at rest")."""

    name = "sqlite-file-encrypted"

    def open(self, clock: Clock, poison: PoisonPolicy | None = None) -> SessionStore:
        self._count += 1
        options = StoreOptions(clock=clock, gc_policy=GcPolicy(grace_ms=0), encryption=_RING, poison=poison)
        return Store.open(self.root / f"session-{self._count}.db", options)

    def damage(self, store: SessionStore, target: str, key: str | None, value: object) -> None:
        if target.startswith("blob.") and key is not None:
            key = Cipher(_RING).address(REF, key)  # the row of a blob is at its keyed address
        super().damage(store, target, key, value)


@pytest.fixture(params=["sqlite-memory", "sqlite-file", "reference", "sqlite-file-encrypted"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> BackendHarness:
    """Every backend this repository ships, plus the reference store, plus an encrypted session file."""
    if request.param == "sqlite-memory":
        return MemoryHarness()
    if request.param == "sqlite-file":
        return FileHarness(tmp_path)
    if request.param == "sqlite-file-encrypted":
        return EncryptedFileHarness(tmp_path)
    return ReferenceHarness()
