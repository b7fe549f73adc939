"""``HostEventStore``: the host-event store on SQLite, in the deployment database file (or private memory).

Its tables live in the same deployment file as the process registry and the
effect journal (:mod:`lash_store.sqlite.deployment`); every write runs under
``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import os
from pathlib import Path

from lash_store.options import StoreOptions, check_options
from lash_store.service.host_events.service import HostEventStoreService
from lash_store.sqlite.backend import QuerySet
from lash_store.sqlite.connection import Connection
from lash_store.sqlite.deployment import DEPLOYMENT_SCHEMA
from lash_store.sqlite.registry import SqliteRegistryBackend
from lash_store.sqlite.shared import Database, open_shared
from lash_store.sqlite.store import check_directory_path

__all__ = ["HOST_EVENT_QUERIES", "HostEventStore"]

HOST_EVENT_QUERIES = QuerySet("host_events_queries.sql")


class SqliteHostEventBackend(SqliteRegistryBackend):
    """The store's queries on a deployment file (it describes itself as the deployment file)."""

    def __init__(self, connection: Database) -> None:
        super().__init__(connection)
        self._queries = HOST_EVENT_QUERIES


class HostEventStore(HostEventStoreService):
    """The host-event store on SQLite: :meth:`open` a deployment file (created if new) or use :meth:`memory`."""

    def __init__(self, backend: SqliteHostEventBackend, options: StoreOptions) -> None:
        super().__init__(backend, options)
        self._sqlite = backend

    @classmethod
    def open(cls, path: str | os.PathLike[str], options: StoreOptions | None = None) -> HostEventStore:
        """Open (or create, mode 0600) the deployment file at ``path``; a foreign file is never modified."""
        options = check_options(StoreOptions() if options is None else options)
        checked = check_directory_path("path", path)
        return cls(SqliteHostEventBackend(open_shared(checked, options, DEPLOYMENT_SCHEMA)), options)

    @classmethod
    def memory(cls, options: StoreOptions | None = None) -> HostEventStore:
        """A private in-memory store (durability tier INLINE)."""
        options = check_options(StoreOptions() if options is None else options)
        return cls(SqliteHostEventBackend(Connection(None, options, schema=DEPLOYMENT_SCHEMA)), options)

    @property
    def path(self) -> Path | None:
        return self._sqlite.connection.path
