"""Runs the host-event conformance suite (``lash_store.testing.host_events_conformance``) against our backends.

Backends: ``HostEventStore.memory()`` (not durable), a deployment file opened
with ``HostEventStore.open()`` (durable; reopen = a new handle on the path)
and the pure-Python oracle ``ReferenceHostEventStore`` (not durable).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.register_assert_rewrite("lash_store.testing.host_events_conformance")

from lash_store import StoreOptions  # noqa: E402
from lash_store.sqlite.host_events import HostEventStore  # noqa: E402
from lash_store.testing.host_events_conformance import *  # noqa: E402, F403  (collects the suite)
from lash_store.testing.host_events_conformance import Clock, HostEventsHarness, Store  # noqa: E402
from lash_store.testing.host_events_reference import ReferenceHostEventStore  # noqa: E402


class MemoryHarness(HostEventsHarness):
    name = "sqlite-memory"
    durable = False

    def open(self, clock: Clock) -> Store:
        return HostEventStore.memory(StoreOptions(clock=clock))


class FileHarness(HostEventsHarness):
    name = "sqlite-file"
    durable = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self._count = 0

    def open(self, clock: Clock) -> Store:
        self._count += 1
        return HostEventStore.open(self.root / f"deployment-{self._count}.db", StoreOptions(clock=clock))

    def reopen(self, store: Store) -> Store:
        assert isinstance(store, HostEventStore) and store.path is not None
        return HostEventStore.open(store.path, store.options)


class ReferenceHarness(HostEventsHarness):
    name = "reference"
    durable = False

    def open(self, clock: Clock) -> Store:
        return ReferenceHostEventStore(StoreOptions(clock=clock))


@pytest.fixture(params=["sqlite-memory", "sqlite-file", "reference"])
def host_events_harness(request: pytest.FixtureRequest, tmp_path: Path) -> HostEventsHarness:
    if request.param == "sqlite-memory":
        return MemoryHarness()
    if request.param == "sqlite-file":
        return FileHarness(tmp_path)
    return ReferenceHarness()
