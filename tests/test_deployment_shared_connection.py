"""The components opened on one deployment file in one process share one connection (lash_store.sqlite.shared)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from lash_store.effects import EffectScope, RuntimeEffectCommand, RuntimeEffectEnvelope, RuntimeEffectOutcome
from lash_store.effects import RuntimeScope as EnvelopeScope
from lash_store.errors import BackendError, StoreClosed
from lash_store.host_events import TriggerSubscriptionDraft, empty_source_key
from lash_store.options import Durability, StoreOptions
from lash_store.processes import ProcessRegistration, ProcessScope
from lash_store.sqlite.components import EFFECT_TABLES
from lash_store.sqlite.connection import Connection
from lash_store.sqlite.effects import EffectHost
from lash_store.sqlite.host_events import HostEventStore
from lash_store.sqlite.registry import ProcessRegistry
from lash_store.sqlite.shared import SharedConnection
from tests.pgproc import FORK


def _connection(component: Any) -> Connection:
    view = component._sqlite.connection
    assert isinstance(view, SharedConnection)
    return view.shared


def _open_all(path: Path, options: StoreOptions | None = None) -> tuple[ProcessRegistry, HostEventStore, EffectHost]:
    return ProcessRegistry.open(path, options), HostEventStore.open(path, options), EffectHost.open(path, options)


def _effect(host: EffectHost, key: str) -> RuntimeEffectOutcome:
    command = RuntimeEffectCommand.tool_call({"name": "noop", "arguments": {"key": key}})
    envelope = RuntimeEffectEnvelope.new(EnvelopeScope(session_id="s", turn_id="t"), key, key, command)
    controller = host.scoped(EffectScope.turn("s", "t"))
    return controller.execute_effect(envelope, lambda env: RuntimeEffectOutcome.tool_call({"done": env.replay_key}))


def _subscribe(store: HostEventStore, session: str = "session-a") -> None:
    key = empty_source_key("webhook.received")
    store.register_subscription(
        TriggerSubscriptionDraft(session_id=session, source_type="webhook.received", source_key=key, process_name="p")
    )


def test_three_components_on_one_file_share_one_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "deployment.db"
    registry, store, host = _open_all(path)
    try:
        shared = _connection(registry)
        assert _connection(store) is shared and _connection(host) is shared
        # A relative spelling of the same file is the same file.
        monkeypatch.chdir(tmp_path)
        other = ProcessRegistry.open("deployment.db")
        assert _connection(other) is shared
        other.close()
        registry.register_process(ProcessRegistration.new("p-1", {"x": 1}))
        _subscribe(store)
        assert _effect(host, "k").value == {"done": "k"}
        assert registry.get_process("p-1") is not None and len(store.list_subscriptions()) == 1
    finally:
        for component in (registry, store, host):
            component.close()


def test_closing_one_component_leaves_the_others_working(tmp_path: Path) -> None:
    path = tmp_path / "deployment.db"
    registry, store, host = _open_all(path)
    shared = _connection(registry)
    registry.close()
    registry.close()  # twice is harmless and does not count twice
    with pytest.raises(StoreClosed):
        registry.get_process("p-1")
    assert not shared.closed
    _subscribe(store)
    assert _effect(host, "k").value == {"done": "k"}
    store.close()
    with pytest.raises(StoreClosed):
        store.list_subscriptions()
    assert not shared.closed
    assert [row.replay_key for row in host.list_journal()] == ["k"]
    host.close()
    assert shared.closed  # closed with the last component
    reopened = EffectHost.open(path)
    try:
        assert _connection(reopened) is not shared
        assert [row.replay_key for row in reopened.list_journal()] == ["k"]
    finally:
        reopened.close()


def test_options_that_matter_to_the_connection_keep_connections_apart(tmp_path: Path) -> None:
    path = tmp_path / "deployment.db"
    base = EffectHost.open(path)
    slow = EffectHost.open(path, StoreOptions(busy_timeout_ms=1234))
    full = ProcessRegistry.open(path, StoreOptions(durability=Durability.FULL))
    clocked = ProcessRegistry.open(path, StoreOptions(clock=lambda: 1_000_000))
    try:
        assert len({id(_connection(c)) for c in (base, slow, full)}) == 3
        assert _connection(clocked) is _connection(base)  # the clock is each component's own
        record = clocked.register_process(ProcessRegistration.new("p-1", {"x": 1}))
        assert record.created_at_ms == 1_000_000
        _effect(base, "k")
        (row,) = base.list_journal()
        assert row.created_at_ms != 1_000_000  # the host's own (system) clock
        full_conn = _connection(full)
        assert full_conn.read(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0]) == 2
        assert _connection(base).read(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0]) == 1
    finally:
        for component in (base, slow, full, clocked):
            component.close()


def test_read_only_and_memory_opens_are_never_shared(tmp_path: Path) -> None:
    path = tmp_path / "deployment.db"
    registry = ProcessRegistry.open(path)
    readonly = ProcessRegistry.open_readonly(path)
    memory = [ProcessRegistry.memory(), EffectHost.memory(), HostEventStore.memory()]
    try:
        assert isinstance(readonly._sqlite.connection, Connection) and readonly._sqlite.connection.readonly
        for component in memory:
            assert isinstance(component._sqlite.connection, Connection)
        assert readonly.list_processes() == []
    finally:
        for component in (registry, readonly, *memory):
            component.close()


def test_a_file_replaced_at_the_same_path_gets_its_own_connection(tmp_path: Path) -> None:
    path = tmp_path / "deployment.db"
    first = ProcessRegistry.open(path)
    try:
        first.register_process(ProcessRegistration.new("p-old", {"x": 1}))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        second = ProcessRegistry.open(path)
        try:
            assert _connection(second) is not _connection(first)
            assert second.list_processes() == []
        finally:
            second.close()
    finally:
        first.close()


def test_a_file_changed_behind_the_shared_connection_is_checked_again(tmp_path: Path) -> None:
    path = tmp_path / "deployment.db"
    registry = ProcessRegistry.open(path)
    try:
        conn = sqlite3.connect(path, isolation_level=None)  # a file of the previous release: no journal tables
        for table in sorted(EFFECT_TABLES):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("DELETE FROM lash_components WHERE component = 'effects'")
        conn.close()
        with EffectHost.open(path) as host:  # initialised again, as a first open would
            assert host.list_journal() == []
    finally:
        registry.close()


def test_a_transaction_inside_another_on_the_shared_connection_is_refused_and_leaves_it_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "deployment.db"
    registry, store, host = _open_all(path)
    try:
        start = registry.start_body(ProcessRegistration.new("p-outer", {"x": 1}), ProcessScope(session_id="s"))

        def body(tx: Any) -> str:
            start(tx)
            with pytest.raises(BackendError, match="inside another"):
                _subscribe(store)
            return "outer went on"

        assert registry.backend.write(body) == "outer went on"
        # The outer transaction committed as a whole; the inner one never began; the connection is usable.
        assert registry.get_process("p-outer") is not None and store.list_subscriptions() == []
        _subscribe(store)
        assert len(store.list_subscriptions()) == 1
    finally:
        for component in (registry, store, host):
            component.close()


def test_components_shared_between_threads(tmp_path: Path) -> None:
    path = tmp_path / "deployment.db"
    registry, store, host = _open_all(path)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for index in range(20):
                registry.register_process(ProcessRegistration.new(f"p-{worker}-{index}", {"i": index}))
                _effect(host, f"k-{worker}-{index}")
                store.list_subscriptions()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        assert len(registry.list_processes()) == 80 and len(host.list_journal()) == 80
    finally:
        for component in (registry, store, host):
            component.close()


def _child(path: str, queue: Any, inherited: ProcessRegistry) -> None:
    try:
        host = EffectHost.open(path)  # opened after the fork: a connection of the child's own
        _effect(host, "from-child")
        registry = ProcessRegistry.open(path)
        same = _connection(registry) is _connection(host)
        inherited.register_process(ProcessRegistration.new("p-child", {"x": 1}))  # inherited: reconnects
        apart = _connection(host) is not _connection(inherited)
        registry.close()
        host.close()
        queue.put(("ok", same, apart))
    except BaseException as exc:
        queue.put(("error", repr(exc), None))


def test_a_component_opened_in_a_forked_child_works(tmp_path: Path) -> None:
    path = tmp_path / "deployment.db"
    registry, store, host = _open_all(path)
    try:
        registry.register_process(ProcessRegistration.new("p-parent", {"x": 1}))
        queue = FORK.Queue()
        child = FORK.Process(target=_child, args=(str(path), queue, registry))
        child.start()
        result = queue.get(timeout=60)
        child.join(60)
        assert result == ("ok", True, True)
        assert child.exitcode == 0
        # The parent's components were not disturbed by the child's.
        assert {record.id for record in registry.list_processes()} == {"p-parent", "p-child"}
        assert [row.replay_key for row in host.list_journal()] == ["from-child"]
        _effect(host, "from-parent")
    finally:
        for component in (registry, store, host):
            component.close()
