"""Runs the registry conformance suite (``lash_store.testing.registry_conformance``) against our backends.

Backends: ``ProcessRegistry.memory()`` (not durable), a deployment file opened
with ``ProcessRegistry.open()`` (durable; reopen = a new handle on the path)
and the pure-Python oracle ``ReferenceProcessRegistry`` (not durable).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

pytest.register_assert_rewrite("lash_store.testing.registry_conformance")

from lash_store import StoreOptions  # noqa: E402
from lash_store.sqlite.registry import ProcessRegistry  # noqa: E402
from lash_store.testing.registry_conformance import *  # noqa: E402, F403  (collects the suite)
from lash_store.testing.registry_conformance import Clock, Registry, RegistryHarness  # noqa: E402
from lash_store.testing.registry_reference import ReferenceProcessRegistry  # noqa: E402

RESTORE_RUNNING = "UPDATE processes SET status = 'running', await_output = NULL WHERE process_id = ?"


def _sqlite(registry: Registry) -> ProcessRegistry:
    assert isinstance(registry, ProcessRegistry)
    return registry


class MemoryHarness(RegistryHarness):
    name = "sqlite-memory"
    durable = False

    def open(self, clock: Clock) -> Registry:
        return ProcessRegistry.memory(StoreOptions(clock=clock))

    def restore_running(self, registry: Registry, process_id: str) -> None:
        # A memory database has no second connection: go through the registry's own (test-only access).
        _sqlite(registry)._sqlite.connection.write(lambda conn: conn.execute(RESTORE_RUNNING, (process_id,)))


class FileHarness(RegistryHarness):
    name = "sqlite-file"
    durable = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self._count = 0

    def open(self, clock: Clock) -> Registry:
        self._count += 1
        return ProcessRegistry.open(self.root / f"deployment-{self._count}.db", StoreOptions(clock=clock))

    def reopen(self, registry: Registry) -> Registry:
        found = _sqlite(registry)
        assert found.path is not None
        return ProcessRegistry.open(found.path, found.options)

    def restore_running(self, registry: Registry, process_id: str) -> None:
        path = _sqlite(registry).path
        assert path is not None
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            assert conn.execute(RESTORE_RUNNING, (process_id,)).rowcount == 1
        finally:
            conn.close()


class ReferenceHarness(RegistryHarness):
    name = "reference"
    durable = False

    def open(self, clock: Clock) -> Registry:
        return ReferenceProcessRegistry(StoreOptions(clock=clock))

    def restore_running(self, registry: Registry, process_id: str) -> None:
        assert isinstance(registry, ReferenceProcessRegistry)
        state = registry._backend._state  # type: ignore[attr-defined]  # test-only access: no second handle exists
        state.processes[process_id].update(status="running", await_output=None)


@pytest.fixture(params=["sqlite-memory", "sqlite-file", "reference"])
def registry_harness(request: pytest.FixtureRequest, tmp_path: Path) -> RegistryHarness:
    if request.param == "sqlite-memory":
        return MemoryHarness()
    if request.param == "sqlite-file":
        return FileHarness(tmp_path)
    return ReferenceHarness()
