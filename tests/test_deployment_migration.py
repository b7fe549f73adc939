"""Deployment files of earlier layouts (tests/fixtures/deployment) open and are migrated to the current one.

The migration runs at open, in one ``BEGIN IMMEDIATE`` transaction: the migrated file must hold exactly
the schema a new file gets and every row it held, and everything must keep working on it.
"""

from __future__ import annotations

import importlib.util
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from lash_store.effects import EffectReplayOptions, EffectScope
from lash_store.host_event_router import HostEventRouter
from lash_store.processes import ProcessScope
from lash_store.sqlite.components import EFFECTS_VERSION, HOST_EVENTS_VERSION
from lash_store.sqlite.deployment import PROCESSES_VERSION
from lash_store.sqlite.effects import EffectHost
from lash_store.sqlite.host_events import HostEventStore
from lash_store.sqlite.registry import ProcessRegistry
from tests.helpers import deployment_components

FIXTURES = Path(__file__).parent / "fixtures" / "deployment"
GENERATOR = FIXTURES / "generate.py"
CURRENT = {"processes": PROCESSES_VERSION, "effects": EFFECTS_VERSION, "host_events": HOST_EVENTS_VERSION}
TABLES = (
    "processes",
    "process_events",
    "process_handle_grants",
    "process_leases",
    "effect_journal",
    "host_event_subscriptions",
    "host_event_occurrences",
    "host_event_deliveries",
    "host_event_counters",
)


def _copy(layout: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{layout}.db"
    shutil.copyfile(FIXTURES / layout / "deployment.db", path)
    return path


def _schema(path: Path) -> list[tuple[str, str, str, str | None]]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"))
    finally:
        conn.close()


def _rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {table: sorted(conn.execute(f"SELECT * FROM {table}"), key=repr) for table in TABLES}
    finally:
        conn.close()


def _generator() -> Any:
    """The fixture generator as a module (its envelopes and requests are the ones stored in the fixture)."""
    spec = importlib.util.spec_from_file_location("deployment_fixture_generator", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fresh(tmp_path: Path) -> Path:
    path = tmp_path / "fresh.db"
    for opener in (ProcessRegistry.open, EffectHost.open, HostEventStore.open):
        opener(path).close()
    return path


@pytest.mark.parametrize("opener", [ProcessRegistry.open, EffectHost.open, HostEventStore.open])
def test_v1_opens_as_the_current_layout_with_every_row(tmp_path: Path, opener: object) -> None:
    path = _copy("v1", tmp_path)
    before = _rows(path)
    assert deployment_components(path) == {"processes": 1, "effects": 1, "host_events": 1}
    opener(path).close()  # type: ignore[operator]
    assert deployment_components(path) == CURRENT
    assert _schema(path) == _schema(_fresh(tmp_path))  # exactly a new file's tables and indexes
    assert _rows(path) == before
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def test_a_migrated_file_keeps_working(tmp_path: Path) -> None:
    path = _copy("v1", tmp_path)
    store = HostEventStore.open(path)
    registry = ProcessRegistry.open(path)
    effects = EffectHost.open(path, replay_options=EffectReplayOptions(lease_ttl_ms=30_000))
    try:
        generator = _generator()
        # The journaled tool call replays (nothing runs), by the envelope hash stored by the old layout.
        controller = effects.scoped(EffectScope.turn("alpha", "turn-1"), replay=True)
        assert controller.execute_effect(generator.charge_envelope()) == generator.charge_outcome()
        assert [row.status for row in effects.list_journal()].count("completed") == 3
        # The two deliveries a crash left reserved are found through the new partial index and started.
        pending = store.pending_deliveries()
        assert [d.occurrence.idempotency_key for d in pending] == ["hook-2", "hook-2"]
        router = HostEventRouter(store, effects, registry)
        assert router.sweep() == 2
        assert store.pending_deliveries() == []
        # A repeated occurrence is still recognised (the primary key is the idempotency arbiter).
        assert len(router.route(generator.request("hook-1"))) == 2
        assert len(router.route(generator.request("hook-3"))) == 2
        # Grants of a session's scope and of its frames are found through the key.
        frame = ProcessScope(session_id="alpha", agent_frame_id="f1")
        assert [g.record.id for g in registry.list_handle_grants(frame)] == ["proc-frame"]
        report = registry.delete_session_process_state("alpha", reason="gone")
        assert report.revoked_handle_count == 4  # its own scope (three starts) and frame f1
        assert registry.list_handle_grants(frame) == []
        assert [g.session_id for g in registry.handle_grants_for_process("proc-frame")] == ["beta"]
    finally:
        for component in (store, registry, effects):
            component.close()


def test_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    path = _copy("v1", tmp_path)
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            EffectHost.open(path).close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert deployment_components(path) == CURRENT
    assert _schema(path) == _schema(_fresh(tmp_path))


def test_the_fixture_is_checkpointed_and_untouched() -> None:
    directory = FIXTURES / "v1"
    assert sorted(p.name for p in directory.iterdir()) == ["deployment.db"]
    assert (directory / "deployment.db").read_bytes()[:16] == b"SQLite format 3\x00"


def test_a_v1_registry_file_without_the_other_components_gains_them(tmp_path: Path) -> None:
    # What a release before the effect journal and the host-event store wrote: processes 1 only.
    path = _copy("v1", tmp_path)
    conn = sqlite3.connect(path, isolation_level=None)
    for table in ("effect_journal", "host_event_deliveries", "host_event_occurrences", "host_event_subscriptions"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("DROP TABLE host_event_counters")
    conn.execute("DELETE FROM lash_components WHERE component <> 'processes'")
    conn.close()
    before = sqlite3.connect(path)
    try:
        registry_rows = sorted(before.execute("SELECT * FROM processes"), key=repr)
    finally:
        before.close()
    HostEventStore.open(path).close()
    assert deployment_components(path) == CURRENT
    assert _schema(path) == _schema(_fresh(tmp_path))
    after = sqlite3.connect(path)
    try:
        assert sorted(after.execute("SELECT * FROM processes"), key=repr) == registry_rows
    finally:
        after.close()


def test_a_v1_file_opens_read_only_as_it_is(tmp_path: Path) -> None:
    path = _copy("v1", tmp_path)
    before = path.read_bytes()
    registry = ProcessRegistry.open_readonly(path)
    try:
        assert "proc-frame" in [record.id for record in registry.list_processes()]
    finally:
        registry.close()
    assert path.read_bytes() == before  # nothing migrated
    assert deployment_components(path) == {"processes": 1, "effects": 1, "host_events": 1}
