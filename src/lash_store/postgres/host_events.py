"""``PostgresHostEventStore``: the host-event store on PostgreSQL (schema version 6), shared by a deployment.

Primary keys arbitrate concurrent records (the occurrence id is derived from
its idempotency triple) and reservations (one delivery per occurrence and
subscription); handle numbers come from a sequence; read-modify-writes lock
their row first and read the database clock after the lock.
"""

from __future__ import annotations

from psycopg_pool import ConnectionPool

from lash_store.options import StoreOptions
from lash_store.postgres import schema as schemas
from lash_store.postgres.deployment import ComponentBackend, open_component
from lash_store.service.host_events.service import HostEventStoreService

__all__ = ["PostgresHostEventStore"]


class PostgresHostEventBackend(ComponentBackend):
    """The store's named queries, without a session partition."""

    query_file = "host_events_queries.sql"
    unprepared = frozenset({"list_subscriptions"})


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
        opened = open_component(dsn_or_pool, options, schema, auto_setup=auto_setup)
        return cls(PostgresHostEventBackend(opened.target, opened.schema, opened.options), opened.options)

    @property
    def schema(self) -> str:
        return self._postgres.schema
