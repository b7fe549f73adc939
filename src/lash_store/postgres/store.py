"""``PostgresStore``: the session service on PostgreSQL, bound to one session partition."""

from __future__ import annotations

import threading
import weakref

import psycopg
from psycopg_pool import ConnectionPool

from lash_store.core.validate import check_id, check_instance
from lash_store.errors import InvalidInput, StoreNotFound
from lash_store.options import StoreOptions, check_options
from lash_store.postgres import pool as pools
from lash_store.postgres import schema as schemas
from lash_store.postgres.backend import PostgresBackend, translate
from lash_store.service.session import SessionService

# The schemas whose version was checked, per pool: a store open does not re-read it.  Keyed by the pool
# object itself, weakly: a closed pool's entry goes with it, whereas its id() may be handed to a new pool
# (for another database), which must not inherit "already checked".
_checked: weakref.WeakKeyDictionary[ConnectionPool, set[str]] = weakref.WeakKeyDictionary()
_checked_lock = threading.Lock()


def connect_target(dsn_or_pool: object) -> str | ConnectionPool:
    """A DSN (URI or libpq ``key=value`` string) or a caller's ``psycopg_pool.ConnectionPool``."""
    if isinstance(dsn_or_pool, ConnectionPool):
        return dsn_or_pool
    if isinstance(dsn_or_pool, str):
        return pools.check_dsn(dsn_or_pool)
    raise InvalidInput(
        "dsn_or_pool", f"must be a DSN string or a psycopg_pool.ConnectionPool, got {type(dsn_or_pool).__name__}"
    )


def ensure_schema(target: str | ConnectionPool, schema: str, *, auto_setup: bool) -> None:
    """Check the schema once per pool: create it when absent (``auto_setup``), refuse anything else."""
    pool = pools.shared_pool(target) if isinstance(target, str) else target
    with _checked_lock:
        if schema in _checked.get(pool, ()):
            return
    try:
        with pool.connection() as conn:
            found = schemas.check(conn, schema)
    except psycopg.Error as exc:
        raise translate(exc) from exc
    if found is None:
        if not auto_setup:
            raise InvalidInput("schema", f"postgres schema {schema!r} is not set up; run lash_store.postgres.setup()")
        schemas.setup(target, schema=schema)
    with _checked_lock:
        _checked.setdefault(pool, set()).add(schema)


class PostgresStore(SessionService):
    """A durable session store on PostgreSQL: one session partition of a shared database.

    Many stores, threads, processes and machines may hold the same session:
    writes serialise on the session's row lock and compare-and-set keeps them
    honest; lease instants come from the database clock.
    """

    def __init__(self, backend: PostgresBackend, options: StoreOptions) -> None:
        super().__init__(backend, options)
        self._postgres = backend

    @classmethod
    def open(
        cls,
        dsn_or_pool: str | ConnectionPool,
        session_id: str,
        options: StoreOptions | None = None,
        *,
        schema: str = schemas.DEFAULT_SCHEMA,
        auto_setup: bool = True,
        create: bool = True,
    ) -> PostgresStore:
        """Open (creating if new, unless ``create`` is false) the partition of ``session_id``.

        The schema is created when absent (``auto_setup``); an older one raises
        :class:`SchemaMigrationRequired` (run :func:`lash_store.postgres.migrate`),
        a newer or foreign one the typed errors of SPEC section 4.  With
        ``create=False`` nothing is written and a missing session raises
        :class:`StoreNotFound`.
        """
        target = connect_target(dsn_or_pool)
        check_id("session_id", session_id)
        options = check_options(StoreOptions() if options is None else options)
        schema = schemas.check_schema_name(schema)
        check_instance("auto_setup", auto_setup, bool)
        check_instance("create", create, bool)
        ensure_schema(target, schema, auto_setup=auto_setup and create)
        backend = PostgresBackend(target, session_id, schema, options)
        if create:
            backend.write(lambda tx: tx.run("ensure_session"))
        elif backend.read(lambda tx: tx.one("session_exists")) is None:
            raise StoreNotFound(f"session {session_id!r} in postgres schema {schema!r}")
        return cls(backend, options)

    @property
    def session_partition(self) -> str:
        """The session id this store is bound to (every row it reads or writes carries it)."""
        sid = self._postgres.sid
        assert sid is not None  # a session store's backend always has its partition
        return sid
