"""``PostgresProcessRegistry``: the process registry on PostgreSQL, shared by every worker of a deployment.

The registry's tables (schema version 2) are deployment-wide, keyed by
process id.  Every write to a process locks its row first (``FOR NO KEY
UPDATE``; grants and acks take ``FOR KEY SHARE``), reads what its checks need
in one round trip, and reads the database clock after the lock; the event
sequence is read and advanced under that lock; unique constraints arbitrate
concurrent registrations and replay keys; a serialization failure or a
deadlock retries the whole transaction.  Waits in other processes are woken
through ``LISTEN``/``NOTIFY`` (channel ``lash_processes``, sent at commit),
with a polling backstop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from lash_store.options import StoreOptions, check_options
from lash_store.postgres import schema as schemas
from lash_store.postgres.backend import PostgresBackend, PostgresTx
from lash_store.postgres.store import connect_target, ensure_schema
from lash_store.service.registry.service import ProcessRegistryService
from lash_store.service.registry.signals import Signals, ThreadFeed, signals_for

__all__ = ["CHANNEL", "PostgresProcessRegistry"]

#: The notification channel; a payload is ``"<schema>:<process id>"``.
CHANNEL = "lash_processes"
# How long the listener waits for notifications before it looks whether anyone still waits.
_LISTEN_SLICE_S = 0.25
_RECONNECT_S = (0.1, 0.25, 0.5, 1.0)
# Listings with optional filters ("... IS NULL OR ..."): planned with their values every time.
_UNPREPARED = frozenset({"list_processes", "prunable_processes"})


class PostgresRegistryBackend(PostgresBackend):
    """The registry's named queries, without a session partition."""

    def __init__(self, target: str | ConnectionPool, schema: str, options: StoreOptions) -> None:
        super().__init__(target, None, schema, options, query_file="registry_queries.sql", unprepared=_UNPREPARED)

    def describe(self) -> dict[str, Any]:
        def body(tx: PostgresTx) -> dict[str, Any]:
            server, version = tx.fetch_many([("server_version", None), ("schema_version", None)])
            return {
                "backend": "postgres",
                "server_version": server[0][0] if server else None,
                "schema": {"name": self.schema, "version": version[0][0] if version else None},
            }

        return self.read(body)

    def integrity_checks(self) -> list[dict[str, Any]]:
        return []  # PostgreSQL checks its own pages; the rows are checked by decoding them


class PostgresChangeFeed(ThreadFeed):
    """Other processes' appends to this schema, from ``LISTEN`` on a connection of its own."""

    def __init__(self, conninfo: str, schema: str) -> None:
        super().__init__(f"lash-store registry listen {schema}")
        self._conninfo = conninfo
        self._prefix = f"{schema}:"

    def watch(
        self, publish: Callable[[str | None], None], ready: threading.Event, keep_going: Callable[[], bool]
    ) -> None:
        failures = 0
        while keep_going():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    ready.set()
                    if failures:
                        publish(None)  # notifications may have been missed while disconnected: read again
                    failures = 0
                    self._deliver(conn, publish, keep_going)
            except psycopg.Error:
                ready.set()  # waiters fall back on their polling backstop until the feed is back
                publish(None)
                time.sleep(_RECONNECT_S[min(failures, len(_RECONNECT_S) - 1)])
                failures += 1

    def _deliver(
        self, conn: psycopg.Connection[Any], publish: Callable[[str | None], None], keep_going: Callable[[], bool]
    ) -> None:
        while keep_going():
            for notice in conn.notifies(timeout=_LISTEN_SLICE_S):
                if notice.payload.startswith(self._prefix):
                    publish(notice.payload[len(self._prefix) :] or None)


class PostgresProcessRegistry(ProcessRegistryService):
    """The process registry on PostgreSQL (see the module docstring)."""

    def __init__(self, backend: PostgresRegistryBackend, options: StoreOptions, signals: Signals) -> None:
        super().__init__(backend, options, signals)
        self._postgres = backend

    @classmethod
    def open(
        cls,
        dsn_or_pool: str | ConnectionPool,
        options: StoreOptions | None = None,
        *,
        schema: str = schemas.DEFAULT_SCHEMA,
        auto_setup: bool = True,
    ) -> PostgresProcessRegistry:
        """Open the registry of ``schema`` (created when absent with ``auto_setup``).

        A schema of an older version raises :class:`SchemaMigrationRequired`
        (run :func:`lash_store.postgres.migrate`), a newer or foreign one the
        typed errors of SPEC section 4.  Lease instants come from the database
        clock unless ``options.clock`` injects one (tests).
        """
        target = connect_target(dsn_or_pool)
        options = check_options(StoreOptions() if options is None else options)
        schema = schemas.check_schema_name(schema)
        ensure_schema(target, schema, auto_setup=auto_setup)
        backend = PostgresRegistryBackend(target, schema, options)
        conninfo = _conninfo(target)
        key = ("postgres", conninfo, schema)
        return cls(backend, options, signals_for(key, lambda: PostgresChangeFeed(conninfo, schema)))

    @property
    def schema(self) -> str:
        return self._postgres.schema


def _conninfo(target: str | ConnectionPool) -> str:
    """Where the listener connects: the DSN, or the one the caller's pool connects with (it takes no pooled
    connection: a LISTEN holds its connection for as long as anyone waits)."""
    if isinstance(target, str):
        return target
    conninfo = target.conninfo
    return conninfo() if callable(conninfo) else conninfo
