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

from psycopg_pool import ConnectionPool

from lash_store.options import StoreOptions
from lash_store.postgres import schema as schemas
from lash_store.postgres.deployment import ComponentBackend, listen_signals, open_component
from lash_store.service.registry.service import ProcessRegistryService
from lash_store.service.registry.signals import Signals

__all__ = ["CHANNEL", "PostgresProcessRegistry"]

#: The notification channel; a payload is ``"<schema>:<process id>"``.
CHANNEL = "lash_processes"


class PostgresRegistryBackend(ComponentBackend):
    """The registry's named queries, without a session partition."""

    query_file = "registry_queries.sql"
    unprepared = frozenset({"list_processes", "prunable_processes"})


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
        opened = open_component(dsn_or_pool, options, schema, auto_setup=auto_setup)
        backend = PostgresRegistryBackend(opened.target, opened.schema, opened.options)
        return cls(backend, opened.options, listen_signals(opened, CHANNEL, "registry"))

    @property
    def schema(self) -> str:
        return self._postgres.schema
