"""Where the PostgreSQL benchmarks run: a throwaway durable server, or a caller's database in fresh schemas.

``--backend postgres`` without ``--dsn`` starts a
:class:`~lash_store.testing.pgserver.PostgresServer` with ``fsync=True``
(``synchronous_commit`` stays on, as in production), reachable only on a unix
socket, and removes it afterwards.  With ``--dsn DSN`` the benchmark uses that
database instead: every side works in a fresh schema created for the run
(``lash_bench_<random>_<side>``) and dropped at the end, so nothing of an
existing schema is read or changed and the database is left as it was.

The server's durability settings are read back and reported with the figures
(``fsync``, ``synchronous_commit``, ``wal_sync_method``, ...), because a
commit on PostgreSQL costs mostly one WAL flush: a figure means little without
them.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from lash_store.bench import progress, require_extra

__all__ = [
    "DATABASE",
    "PgTarget",
    "check_available",
    "dsn_with_search_path",
    "pg_target",
    "server_line",
]

DATABASE = "lash_bench"
"""The database created on the throwaway server."""

_SETTINGS = ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "full_page_writes", "shared_buffers")


def check_available() -> None:
    """Raise :class:`MissingExtra` when the PostgreSQL driver is not installed."""
    require_extra("--backend postgres", (("psycopg", "psycopg"), ("psycopg_pool", "psycopg-pool")))


def dsn_with_search_path(dsn: str, schema: str) -> str:
    """``dsn`` whose sessions resolve unqualified table names in ``schema`` (for libraries that cannot be told one).

    Options the DSN already carries are kept; the search path is appended.
    """
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    options = str(conninfo_to_dict(dsn).get("options") or "")
    return make_conninfo(dsn, options=f"{options} -c search_path={schema}".strip())


@dataclass(slots=True)
class PgTarget:
    """One benchmark's database: its DSN, the schemas created in it, and how the server was obtained."""

    dsn: str
    origin: str
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    schemas: list[str] = field(default_factory=list)
    _counter: int = 0

    def new_schema(self, role: str) -> str:
        """Create a fresh, empty schema for one side of one run; it is dropped by :meth:`drop_schema` or at exit."""
        import psycopg

        self._counter += 1
        name = f"lash_bench_{self.tag}_{role}_{self._counter}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        self.schemas.append(name)
        return name

    def drop_schema(self, name: str) -> None:
        """Drop a schema this target created (and everything in it)."""
        import psycopg

        if name not in self.schemas:
            raise ValueError(f"schema {name!r} was not created by this benchmark")
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        self.schemas.remove(name)

    def drop_all(self) -> None:
        for name in list(self.schemas):
            self.drop_schema(name)

    def describe(self) -> dict[str, Any]:
        """The server's version and durability settings (never the DSN: it may hold a password)."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            settings = {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in _SETTINGS}  # type: ignore[index]
            transport = "unix socket" if conn.info.host.startswith("/") else f"tcp ({conn.info.host})"
        return {"origin": self.origin, "transport": transport, **settings}


def server_line(server: Mapping[str, Any], settings: Sequence[str] = ("fsync", "synchronous_commit")) -> str:
    """The report line of :meth:`PgTarget.describe`: where the server came from, how it is reached, ``settings``."""
    values = ", ".join(f"{name}={server[name]}" for name in settings)
    return f"server: {server['origin']}, {server['transport']}; {values}"


@contextmanager
def pg_target(dsn: str | None, *, verbose: bool) -> Iterator[PgTarget]:
    """A database for one benchmark invocation.

    Without ``dsn``: a throwaway server (``fsync=True``, unix socket only),
    stopped and deleted afterwards.  With ``dsn``: that database; the schemas
    the benchmark creates are dropped afterwards, whatever happened.
    """
    check_available()
    from lash_store.postgres import close_shared_pools

    if dsn is not None:
        target = PgTarget(dsn, "given DSN")
        try:
            yield target
        finally:
            close_shared_pools()  # idle pooled connections would otherwise outlive the schemas they point into
            target.drop_all()
        return

    from lash_store.testing.pgserver import PostgresServer

    progress(verbose, "postgres: starting a throwaway server (fsync=on, synchronous_commit=on, unix socket)")
    server = PostgresServer(fsync=True)
    server.start()
    try:
        target = PgTarget(server.create_database(DATABASE), "throwaway server (lash_store.testing.pgserver)")
        try:
            yield target
        finally:
            close_shared_pools()
    finally:
        server.cleanup()
