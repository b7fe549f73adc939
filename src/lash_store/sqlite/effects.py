"""``EffectHost``: the durable effect journal on SQLite, in the deployment database file (or private memory).

The journal's table lives in the same deployment file as the process
registry (:mod:`lash_store.sqlite.deployment`).  Every write runs under
``BEGIN IMMEDIATE``; a caller waiting for another process's claim notices
its finalisation through ``PRAGMA data_version`` (the registry's change feed
of the same file), with a polling backstop.
"""

from __future__ import annotations

import os
from pathlib import Path

from lash_store.effects import EffectReplayOptions
from lash_store.options import StoreOptions, check_options
from lash_store.service.effects.service import EffectHostService, check_replay_options
from lash_store.service.registry.signals import Signals, signals_for
from lash_store.sqlite.backend import QuerySet
from lash_store.sqlite.connection import Connection
from lash_store.sqlite.deployment import DEPLOYMENT_SCHEMA
from lash_store.sqlite.registry import SqliteChangeFeed, SqliteRegistryBackend
from lash_store.sqlite.shared import Database, open_shared
from lash_store.sqlite.store import check_directory_path

__all__ = ["EFFECT_QUERIES", "EffectHost"]

EFFECT_QUERIES = QuerySet("effects_queries.sql")


class SqliteEffectBackend(SqliteRegistryBackend):
    """The journal's queries on a deployment file (it describes itself as the deployment file)."""

    def __init__(self, connection: Database) -> None:
        super().__init__(connection)
        self._queries = EFFECT_QUERIES


class EffectHost(EffectHostService):
    """The effect journal on SQLite.

    :meth:`open` a deployment file (created if new; the process registry and
    the host-event store may share it) or use :meth:`memory` for a private,
    in-memory journal.  Any number of hosts (threads, processes) may share a file.
    """

    def __init__(
        self,
        backend: SqliteEffectBackend,
        options: StoreOptions,
        signals: Signals,
        replay_options: EffectReplayOptions | None = None,
    ) -> None:
        super().__init__(backend, options, signals, replay_options)
        self._sqlite = backend

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        options: StoreOptions | None = None,
        *,
        replay_options: EffectReplayOptions | None = None,
    ) -> EffectHost:
        """Open (or create, mode 0600) the deployment file at ``path``; a foreign file is never modified."""
        options = check_options(StoreOptions() if options is None else options)
        replay_options = check_replay_options(replay_options)  # before the file is created
        checked = check_directory_path("path", path)
        backend = SqliteEffectBackend(open_shared(checked, options, DEPLOYMENT_SCHEMA))
        return cls(backend, options, _file_signals(checked, options), replay_options)

    @classmethod
    def memory(
        cls, options: StoreOptions | None = None, *, replay_options: EffectReplayOptions | None = None
    ) -> EffectHost:
        """A private in-memory journal (durability tier INLINE)."""
        options = check_options(StoreOptions() if options is None else options)
        replay_options = check_replay_options(replay_options)
        backend = SqliteEffectBackend(Connection(None, options, schema=DEPLOYMENT_SCHEMA))
        return cls(backend, options, Signals(None), replay_options)

    @property
    def path(self) -> Path | None:
        return self._sqlite.connection.path


def _file_signals(path: Path, options: StoreOptions) -> Signals:
    resolved = path.resolve()
    return signals_for(("sqlite-effects", str(resolved)), lambda: SqliteChangeFeed(resolved, options.busy_timeout_ms))
