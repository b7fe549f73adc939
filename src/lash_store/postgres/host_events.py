"""``PostgresHostEventStore``: the host-event store on PostgreSQL (schema version 6), shared by a deployment.

Primary keys arbitrate concurrent records (the occurrence id is derived from
its idempotency triple) and reservations (one delivery per occurrence and
subscription); handle numbers come from a sequence; read-modify-writes lock
their row first and read the database clock after the lock.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import ConnectionPool

from lash_store.options import StoreOptions, check_options
from lash_store.postgres import schema as schemas
from lash_store.postgres.backend import PostgresBackend, PostgresTx
from lash_store.postgres.store import connect_target, ensure_schema
from lash_store.service.host_events.service import HostEventStoreService

__all__ = ["PostgresHostEventStore"]

_UNPREPARED = frozenset({"list_subscriptions"})


class PostgresHostEventBackend(PostgresBackend):
    def __init__(self, target: str | ConnectionPool, schema: str, options: StoreOptions) -> None:
        super().__init__(target, None, schema, options, query_file="host_events_queries.sql", unprepared=_UNPREPARED)

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


class PostgresHostEventStore(HostEventStoreService):
    """The host-event store on PostgreSQL (see the module docstring)."""

    def __init__(self, backend: PostgresHostEventBackend, options: StoreOptions) -> None:
        super().__init__(backend, options)
        self._postgres = backend

    @classmethod
    def open(
        cls,
        dsn_or_pool: str | ConnectionPool,
        options: StoreOptions | None = None,
        *,
        schema: str = schemas.DEFAULT_SCHEMA,
        auto_setup: bool = True,
    ) -> PostgresHostEventStore:
        """Open the store of ``schema`` (created when absent with ``auto_setup``)."""
        target = connect_target(dsn_or_pool)
        options = check_options(StoreOptions() if options is None else options)
        schema = schemas.check_schema_name(schema)
        ensure_schema(target, schema, auto_setup=auto_setup)
        return cls(PostgresHostEventBackend(target, schema, options), options)

    @property
    def schema(self) -> str:
        return self._postgres.schema
