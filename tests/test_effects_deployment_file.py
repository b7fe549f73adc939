"""The effect journal and the host-event store join the deployment file: open rules for the new components."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from lash_store.errors import NotAStoreDatabase, UnsupportedSchemaVersion
from lash_store.sqlite.components import EFFECT_TABLES, EFFECTS_VERSION, HOST_EVENT_TABLES, HOST_EVENTS_VERSION
from lash_store.sqlite.deployment import PROCESS_TABLES, PROCESSES_VERSION
from lash_store.sqlite.effects import EffectHost
from lash_store.sqlite.host_events import HostEventStore
from lash_store.sqlite.registry import ProcessRegistry
from tests.helpers import deployment_components


def _tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


CURRENT = {"processes": PROCESSES_VERSION, "effects": EFFECTS_VERSION, "host_events": HOST_EVENTS_VERSION}


def test_one_file_holds_all_threedeployment_components(tmp_path: Path) -> None:
    path = tmp_path / "deployment.db"
    for opener in (EffectHost.open, HostEventStore.open, ProcessRegistry.open):
        opener(path).close()
    assert _tables(path) >= PROCESS_TABLES | EFFECT_TABLES | HOST_EVENT_TABLES
    assert deployment_components(path) == CURRENT
    assert (path.stat().st_mode & 0o777) == 0o600


def test_a_registry_file_of_the_previous_release_gains_the_new_tables(tmp_path: Path) -> None:
    path = tmp_path / "deployment.db"
    ProcessRegistry.open(path).close()
    conn = sqlite3.connect(path, isolation_level=None)  # exactly what the previous release wrote
    for table in sorted(EFFECT_TABLES | HOST_EVENT_TABLES):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("DELETE FROM lash_components WHERE component <> 'processes'")
    conn.close()
    with EffectHost.open(path) as host:
        assert host.list_journal() == []
    assert _tables(path) >= EFFECT_TABLES | HOST_EVENT_TABLES
    assert deployment_components(path) == CURRENT


@pytest.mark.parametrize("opener", [EffectHost.open, HostEventStore.open], ids=["effects", "host-events"])
def test_a_newer_component_version_is_refused_and_the_file_left_alone(tmp_path: Path, opener: object) -> None:
    path = tmp_path / "deployment.db"
    ProcessRegistry.open(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE lash_components SET version = 99 WHERE component = 'effects'")
    conn.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(UnsupportedSchemaVersion) as caught:
        opener(path)  # type: ignore[operator]
    assert (caught.value.expected, caught.value.found) == (EFFECTS_VERSION, 99)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_a_session_file_is_not_a_deployment_file(tmp_path: Path) -> None:
    from lash_store import Store

    path = tmp_path / "session.db"
    Store.open(path).close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises((NotAStoreDatabase, UnsupportedSchemaVersion)):
        EffectHost.open(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
