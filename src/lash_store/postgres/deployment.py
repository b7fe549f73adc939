"""What the deployment-wide components on PostgreSQL share: opening, the backend shape, the change feed.

The process registry, the host-event store and the effect journal all live in
one schema, without a session partition; each has its own named queries.  A
component that wakes waiters in other processes sends ``NOTIFY <channel>`` at
commit with the payload ``"<schema>"`` or ``"<schema>:<key>"``, and its
:class:`ListenFeed` publishes the key (or ``None``: read everything again) to
the waiters of this process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import psycopg
from psycopg_pool import ConnectionPool

from lash_store.options import StoreOptions, check_options
from lash_store.postgres import schema as schemas
from lash_store.postgres.backend import PostgresBackend, PostgresTx
from lash_store.postgres.store import connect_target, ensure_schema
from lash_store.service.registry.signals import Signals, ThreadFeed, signals_for

__all__ = ["ComponentBackend", "ListenFeed", "Opened", "conninfo_of", "listen_signals", "open_component"]

# How long a listener waits for notifications before it looks whether anyone still waits.
_LISTEN_SLICE_S = 0.25
_RECONNECT_S = (0.1, 0.25, 0.5, 1.0)


class Opened(NamedTuple):
    """Where a component was opened: its connection target, checked options and schema (set up)."""

    target: str | ConnectionPool
    options: StoreOptions
    schema: str


def open_component(
    dsn_or_pool: str | ConnectionPool, options: StoreOptions | None, schema: str, *, auto_setup: bool
) -> Opened:
    """Check the arguments, then make sure ``schema`` is set up (created when absent with ``auto_setup``)."""
    target = connect_target(dsn_or_pool)
    checked = check_options(StoreOptions() if options is None else options)
    name = schemas.check_schema_name(schema)
    ensure_schema(target, name, auto_setup=auto_setup)
    return Opened(target, checked, name)


class ComponentBackend(PostgresBackend):
    """A component's named queries (``query_file``) in a schema, without a session partition."""

    query_file: str
    # Listings with optional filters ("... IS NULL OR ..."): planned with their values every time.
    unprepared: frozenset[str] = frozenset()

    def __init__(self, target: str | ConnectionPool, schema: str, options: StoreOptions) -> None:
        super().__init__(target, None, schema, options, query_file=self.query_file, unprepared=self.unprepared)

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


class ListenFeed(ThreadFeed):
    """Other processes' notices on ``channel`` for ``schema``, from ``LISTEN`` on a connection of its own."""

    def __init__(self, conninfo: str, schema: str, channel: str, what: str) -> None:
        super().__init__(f"lash-store {what} listen {schema}")
        self._conninfo = conninfo
        self._schema = schema
        self._channel = channel

    def watch(
        self, publish: Callable[[str | None], None], ready: threading.Event, keep_going: Callable[[], bool]
    ) -> None:
        failures = 0
        while keep_going():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {self._channel}")
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
                schema, _, key = notice.payload.partition(":")
                if schema == self._schema:
                    publish(key or None)


def listen_signals(opened: Opened, channel: str, what: str) -> Signals:
    """The signals of a component: every component of this process on the same schema shares one feed."""
    conninfo = conninfo_of(opened.target)
    schema = opened.schema
    return signals_for((channel, conninfo, schema), lambda: ListenFeed(conninfo, schema, channel, what))


def conninfo_of(target: str | ConnectionPool) -> str:
    """Where a listener connects: the DSN, or the one the caller's pool connects with (it takes no pooled
    connection: a LISTEN holds its connection for as long as anyone waits)."""
    if isinstance(target, str):
        return target
    conninfo = target.conninfo
    return conninfo() if callable(conninfo) else conninfo
