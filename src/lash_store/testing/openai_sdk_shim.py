"""A pytest plugin that runs the OpenAI Agents SDK's own session tests against :class:`LashSession`.

Load it with ``-p lash_store.testing.openai_sdk_shim`` from the root of the
SDK's source distribution (the version installed).  Before any test module
imports ``agents``, it binds ``agents.SQLiteSession`` (and the name in
``agents.memory``) to :class:`LashSQLiteSessionCompat`: a :class:`LashSession`
with ``SQLiteSession``'s constructor, where a ``db_path`` becomes a lash-store
factory root beside it (``<db_path>.lash/``, one session file per session id)
and ``":memory:"`` a private in-memory store per instance, as in SQLite.

``LASH_OA_BACKEND=postgres`` with ``LASH_OA_DSN`` puts every session in that
PostgreSQL database instead (``db_path`` then names a schema of its own).

Tests that inspect ``SQLiteSession``'s internals (its connections, worker
threads, file lock, raw SQL) test nothing a third-party session has; they are
deselected by name (:data:`DESELECTED`, each with the reason).
"""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from typing import Any

import pytest

from lash_store.adapters.openai_agents import LashSession, postgres_store, sqlite_store
from lash_store.api import SessionStoreAPI
from lash_store.sqlite.store import Store

_CONNECTIONS = "inspects SQLiteSession's per-thread sqlite3 connections (a lash-store session has no such pool)"
_CORRUPT = (
    "injects corrupt JSON into SQLiteSession's table with raw SQL; "
    "lash-store raises CorruptData instead of skipping (SPEC decision 1)"
)
_FILE_LOCK = "inspects SQLiteSession's process-wide file lock object"
_ROLLBACK = "injects failures into SQLiteSession's sqlite3 connection to test its rollback and lock release"
_COMMIT_PAUSE = (
    "patches SQLiteSession's connection to pause inside COMMIT; "
    "LashSession's post-commit cancellation rule is tested in tests/test_openai_session.py"
)
_RAW_TABLE = "reads SQLiteSession's agent_messages table with raw SQL to compare row ids"
_COMPACTION_HOOK = (
    "needs the SDK's private compaction hook (_get_compaction_snapshot), which LashSession does not implement yet"
)
_POST_COMMIT = "test_sqlite_session_post_commit_cancellation_propagates_after_known_outcome"
_SESSION = "tests/memory/test_session.py::"
_ENCRYPT = "tests/extensions/memory/test_encrypt_session.py::"
_ATOMIC_POP = "test_encrypted_pop_authentication_is_atomic_with_concurrent_mutations"

# test node id -> why it cannot apply to another session (nothing else is deselected)
DESELECTED: dict[str, str] = {
    _SESSION + "test_sqlite_session_close_closes_worker_thread_connections": _CONNECTIONS,
    _SESSION + "test_sqlite_session_reaps_connections_from_exited_worker_threads": _CONNECTIONS,
    _SESSION + "test_sqlite_session_closes_retired_connections_before_the_next_allocation": _CONNECTIONS,
    _SESSION + "test_sqlite_session_keeps_connections_of_live_worker_threads": _CONNECTIONS,
    _SESSION + "test_sqlite_session_close_retries_quarantined_connection": _CONNECTIONS,
    _SESSION + "test_sqlite_session_pop_item_skips_corrupt_most_recent": _CORRUPT,
    _SESSION + "test_sqlite_session_pop_item_returns_none_after_dropping_only_corrupt_rows": _CORRUPT,
    _SESSION + "test_sqlite_session_get_items_limit_skips_corrupt_newest_rows": _CORRUPT,
    _SESSION + "test_sqlite_session_get_items_session_settings_limit_skips_corrupt_rows": _CORRUPT,
    _SESSION + "test_sqlite_session_file_lock_is_shared_across_instances": _FILE_LOCK,
    _SESSION + "test_sqlite_session_failed_add_items_releases_write_lock": _ROLLBACK,
    _SESSION + "test_sqlite_session_failed_clear_session_rolls_back": _ROLLBACK,
    _SESSION + "test_sqlite_session_failed_pop_item_releases_write_lock": _ROLLBACK,
    _SESSION + "test_sqlite_session_rollback_failure_evicts_connection": _ROLLBACK,
    _SESSION + f"{_POST_COMMIT}[add]": _COMMIT_PAUSE,
    _SESSION + f"{_POST_COMMIT}[pop]": _COMMIT_PAUSE,
    _SESSION + f"{_POST_COMMIT}[clear]": _COMMIT_PAUSE,
    _ENCRYPT + f"{_ATOMIC_POP}[append]": _RAW_TABLE,
    _ENCRYPT + f"{_ATOMIC_POP}[clear]": _RAW_TABLE,
    _ENCRYPT + "test_encrypted_pop_wrong_key_preserves_row_identity": _RAW_TABLE,
    _ENCRYPT + "test_encrypted_pop_cancellation_waits_for_authentication_rollback": _RAW_TABLE,
    _ENCRYPT + "test_encrypted_compaction_skips_unencrypted_stored_history": _COMPACTION_HOOK,
}


class LashSQLiteSessionCompat(LashSession):
    """``SQLiteSession(session_id, db_path=":memory:", ...)`` on lash-store."""

    closed_message = "SQLiteSession is closed"

    def __init__(
        self,
        session_id: str,
        db_path: str | Path = ":memory:",
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        session_settings: Any = None,
    ) -> None:
        super().__init__(session_id, store=_store(session_id, db_path), session_settings=session_settings)
        self.db_path = db_path
        self.sessions_table = sessions_table
        self.messages_table = messages_table


def _store(session_id: str, db_path: str | Path) -> SessionStoreAPI:
    backend = os.environ.get("LASH_OA_BACKEND", "sqlite")
    if backend == "postgres":
        schema = "oa_" + hashlib.sha256(str(db_path).encode()).hexdigest()[:12]
        if str(db_path) == ":memory:":  # private to the instance, as SQLite's :memory: is
            schema += "_" + os.urandom(4).hex()
        return postgres_store(session_id, os.environ["LASH_OA_DSN"], schema=schema)
    if str(db_path) == ":memory:" or backend == "memory":
        return Store.memory()
    return sqlite_store(session_id, f"{db_path}.lash")


def pytest_configure(config: pytest.Config) -> None:
    import agents
    import agents.memory
    import agents.memory.sqlite_session

    # setattr: the SDK's names are typed as its own class, and replacing them is the point.
    setattr(agents, "SQLiteSession", LashSQLiteSessionCompat)  # noqa: B010
    setattr(agents.memory, "SQLiteSession", LashSQLiteSessionCompat)  # noqa: B010
    # The encrypted session wrapper authenticates pops atomically on "native" sessions it finds through this name.
    setattr(agents.memory.sqlite_session, "SQLiteSession", LashSQLiteSessionCompat)  # noqa: B010
    _back_the_test_sessions()


def _back_the_test_sessions() -> None:
    """Make the SDK tests' own ``SimpleListSession`` (and its subclasses) store in a :class:`LashSession`.

    The protocol-level suites (``tests/deferred_session_writes``, the
    human-in-the-loop scenario, the runner tests) build their sessions from
    that class; its methods are replaced on the class itself, so the
    subclasses they define (counting pops, stripping ids, failing on resume)
    keep their behaviour on top of lash-store.  ``_items``/``saved_items``
    read the store.
    """
    # The SDK's test tree (its sdist's root is the working directory), not a package of ours.
    simple_session = importlib.import_module("tests.utils.simple_session")
    base: Any = simple_session.SimpleListSession

    def __init__(self: Any, session_id: str = "test", history: list[Any] | None = None) -> None:
        self.session_id = session_id
        self._lash = LashSession(session_id, store=_store(session_id, ":memory:"))
        self._ignore_ids_for_matching = False
        if history:
            self._lash.add_now(list(history))

    async def get_items(self: Any, limit: int | None = None) -> list[Any]:
        if limit is not None and limit <= 0:  # this class's own rule (SQLiteSession's negative limit reads all)
            return []
        lash: LashSession = self._lash
        return await lash.get_items(limit)

    async def add_items(self: Any, items: list[Any]) -> None:
        await self._lash.add_items(items)

    async def pop_item(self: Any) -> Any:
        return await self._lash.pop_item()

    async def clear_session(self: Any) -> None:
        await self._lash.clear_session()

    def items_now(self: Any) -> list[Any]:
        lash: LashSession = self._lash
        return lash.items_now()

    def replace_items(self: Any, items: list[Any]) -> None:
        self._lash.replace_now(list(items))

    base.__init__ = __init__
    base.get_items = get_items
    base.add_items = add_items
    base.pop_item = pop_item
    base.clear_session = clear_session
    base._items = property(items_now, replace_items)
    base.saved_items = property(items_now, replace_items)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (dropped if item.nodeid in DESELECTED else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
