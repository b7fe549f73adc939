"""``PostgresEffectHost``: the effect journal on PostgreSQL, shared by every worker of a deployment.

The journal's table (schema version 6) is deployment-wide, keyed by (scope
identity, replay key).  A first claim is arbitrated by the primary key
(``INSERT ... ON CONFLICT DO NOTHING``; the loser locks and reads the
winner's row); every other write locks the row first (``FOR UPDATE``) and
reads the database clock after the lock, so leases are measured on one clock
whatever the workers' wall clocks say.  A finalisation or release sends
``NOTIFY lash_effects`` at commit; busy waiters in other processes ``LISTEN``
and read again, with a polling backstop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from lash_store.effects import EffectReplayOptions
from lash_store.options import StoreOptions, check_options
from lash_store.postgres import schema as schemas
from lash_store.postgres.backend import PostgresBackend, PostgresTx
from lash_store.postgres.registry import _conninfo
from lash_store.postgres.store import connect_target, ensure_schema
from lash_store.service.effects.service import EffectHostService, check_replay_options
from lash_store.service.registry.signals import Signals, ThreadFeed, signals_for

__all__ = ["EFFECTS_CHANNEL", "PostgresEffectHost"]

#: The notification channel; a payload is the schema name.
EFFECTS_CHANNEL = "lash_effects"
_LISTEN_SLICE_S = 0.25
_RECONNECT_S = (0.1, 0.25, 0.5, 1.0)
_UNPREPARED = frozenset({"list_effects"})


class PostgresEffectBackend(PostgresBackend):
    """The journal's named queries, without a session partition."""

    def __init__(self, target: str | ConnectionPool, schema: str, options: StoreOptions) -> None:
        super().__init__(target, None, schema, options, query_file="effects_queries.sql", unprepared=_UNPREPARED)

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
        return []


class EffectsChangeFeed(ThreadFeed):
    """Other processes' finalisations and releases in this schema, from ``LISTEN lash_effects``."""

    def __init__(self, conninfo: str, schema: str) -> None:
        super().__init__(f"lash-store effects listen {schema}")
        self._conninfo = conninfo
        self._schema = schema

    def watch(
        self, publish: Callable[[str | None], None], ready: threading.Event, keep_going: Callable[[], bool]
    ) -> None:
        failures = 0
        while keep_going():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {EFFECTS_CHANNEL}")
                    ready.set()
                    if failures:
                        publish(None)
                    failures = 0
                    while keep_going():
                        for notice in conn.notifies(timeout=_LISTEN_SLICE_S):
                            if notice.payload == self._schema:
                                publish(None)
            except psycopg.Error:
                ready.set()  # waiters fall back on their polling backstop until the feed is back
                publish(None)
                time.sleep(_RECONNECT_S[min(failures, len(_RECONNECT_S) - 1)])
                failures += 1


class PostgresEffectHost(EffectHostService):
    """The effect journal on PostgreSQL (see the module docstring)."""

    def __init__(
        self,
        backend: PostgresEffectBackend,
        options: StoreOptions,
        signals: Signals,
        replay_options: EffectReplayOptions | None = None,
    ) -> None:
        super().__init__(backend, options, signals, replay_options)
        self._postgres = backend

    @classmethod
    def open(
        cls,
        dsn_or_pool: str | ConnectionPool,
        options: StoreOptions | None = None,
        *,
        replay_options: EffectReplayOptions | None = None,
        schema: str = schemas.DEFAULT_SCHEMA,
        auto_setup: bool = True,
    ) -> PostgresEffectHost:
        """Open the journal of ``schema`` (created when absent with ``auto_setup``); leases use the database clock."""
        target = connect_target(dsn_or_pool)
        options = check_options(StoreOptions() if options is None else options)
        replay_options = check_replay_options(replay_options)  # before the schema is created
        schema = schemas.check_schema_name(schema)
        ensure_schema(target, schema, auto_setup=auto_setup)
        backend = PostgresEffectBackend(target, schema, options)
        conninfo = _conninfo(target)
        signals = signals_for(("postgres-effects", conninfo, schema), lambda: EffectsChangeFeed(conninfo, schema))
        return cls(backend, options, signals, replay_options)

    @property
    def schema(self) -> str:
        return self._postgres.schema
