"""``ProcessRegistry``: the process registry on SQLite, in one deployment database file (or private memory).

The file is a deployment file (:mod:`lash_store.sqlite.deployment`): its own
identity and version, created 0600, opened under the rules of SPEC decision 4.
Every write runs under ``BEGIN IMMEDIATE``, which serialises all writers of
the file across processes; waits in other processes notice commits through
``PRAGMA data_version`` (a thread polls it every 10 ms while anyone waits).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lash_store.options import StoreOptions, check_options
from lash_store.service.registry.service import ProcessRegistryService
from lash_store.service.registry.signals import Signals, ThreadFeed, signals_for
from lash_store.sqlite.backend import QuerySet, SqliteBackend
from lash_store.sqlite.connection import Connection
from lash_store.sqlite.deployment import DEPLOYMENT_SCHEMA, DeploymentIdentity
from lash_store.sqlite.inspection import file_bytes
from lash_store.sqlite.shared import Database, open_shared
from lash_store.sqlite.store import check_directory_path

__all__ = ["REGISTRY_QUERIES", "ProcessRegistry"]

REGISTRY_QUERIES = QuerySet("registry_queries.sql")

# How often a waiting process looks at the file's change counter.
_POLL_S = 0.01


class SqliteRegistryBackend(SqliteBackend):
    """The registry's queries on a deployment file; what it says about itself is the deployment file's."""

    def __init__(self, connection: Database) -> None:
        super().__init__(connection, REGISTRY_QUERIES)

    def describe(self) -> dict[str, Any]:
        def body(conn: sqlite3.Connection) -> dict[str, Any]:
            identity = DeploymentIdentity(conn)
            return {
                "backend": "sqlite",
                "path": None if self.connection.path is None else str(self.connection.path),
                "file": {"size_bytes": file_bytes(self.connection.path)},
                "schema": {
                    "user_version": identity.user_version,
                    "application_id": identity.application_id,
                    "components": identity.components,
                },
            }

        return self.connection.read(body)

    def integrity_checks(self) -> list[dict[str, Any]]:
        def body(conn: sqlite3.Connection) -> list[str]:
            return [row[0] for row in conn.execute("PRAGMA integrity_check") if row[0] != "ok"]

        problems = self.connection.read(body)
        return [{"name": "sqlite integrity_check", "ok": not problems, "detail": "", "problems": problems}]


class SqliteChangeFeed(ThreadFeed):
    """Other connections' commits to the file, seen through ``PRAGMA data_version`` (cheap: no page is read)."""

    def __init__(self, path: Path, busy_timeout_ms: int) -> None:
        super().__init__(f"lash-store registry watch {path.name}")
        self._path = path
        self._busy_timeout_s = busy_timeout_ms / 1000

    def watch(
        self, publish: Callable[[str | None], None], ready: threading.Event, keep_going: Callable[[], bool]
    ) -> None:
        conn = sqlite3.connect(self._path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False)
        try:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            ready.set()
            while keep_going():
                time.sleep(_POLL_S)
                current = conn.execute("PRAGMA data_version").fetchone()[0]
                if current != version:
                    version = current
                    publish(None)  # which process changed is unknown: waiters read again
        finally:
            conn.close()


class ProcessRegistry(ProcessRegistryService):
    """The process registry on SQLite.

    Open a deployment file with :meth:`open` (created if new), a private
    in-memory registry with :meth:`memory`, or a file for reading only with
    :meth:`open_readonly`.  Any number of registries (threads, processes) may
    share one file.
    """

    def __init__(self, backend: SqliteRegistryBackend, options: StoreOptions, signals: Signals) -> None:
        super().__init__(backend, options, signals)
        self._sqlite = backend

    @classmethod
    def open(cls, path: str | os.PathLike[str], options: StoreOptions | None = None) -> ProcessRegistry:
        """Open (or create, mode 0600) the deployment file at ``path``.

        A file that is not a deployment file is never modified: it raises
        :class:`NotAStoreDatabase` or :class:`UnsupportedSchemaVersion`.
        """
        options = check_options(StoreOptions() if options is None else options)
        checked = check_directory_path("path", path)
        backend = SqliteRegistryBackend(open_shared(checked, options, DEPLOYMENT_SCHEMA))
        return cls(backend, options, _file_signals(checked, options))

    @classmethod
    def memory(cls, options: StoreOptions | None = None) -> ProcessRegistry:
        """A private in-memory registry (durability tier INLINE); waits are woken by this registry's writes."""
        options = check_options(StoreOptions() if options is None else options)
        backend = SqliteRegistryBackend(Connection(None, options, schema=DEPLOYMENT_SCHEMA))
        return cls(backend, options, Signals(None))

    @classmethod
    def open_readonly(cls, path: str | os.PathLike[str]) -> ProcessRegistry:
        """Open an existing deployment file for reading; never creates or modifies a file (writes raise)."""
        options = StoreOptions(busy_timeout_ms=1000)
        checked = check_directory_path("path", path)
        backend = SqliteRegistryBackend(Connection(checked, options, readonly=True, schema=DEPLOYMENT_SCHEMA))
        return cls(backend, options, Signals(None))

    @property
    def path(self) -> Path | None:
        return self._sqlite.connection.path


def _file_signals(path: Path, options: StoreOptions) -> Signals:
    """Every registry on the same file in this process shares its notices and one watching thread."""
    resolved = path.resolve()
    return signals_for(("sqlite", str(resolved)), lambda: SqliteChangeFeed(resolved, options.busy_timeout_ms))
