"""PostgreSQL fixtures: one throwaway server per test session, a fresh database per test.

Missing PostgreSQL binaries *fail* the tests that need them, so that the
PostgreSQL runs cannot silently vanish from CI; ``LASH_ALLOW_NO_POSTGRES=1``
turns that into a skip for machines that knowingly have no PostgreSQL.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import Iterator
from typing import NoReturn

import pytest

from lash_store.testing.pgserver import PostgresServer, PostgresUnavailable

__all__ = ["pg_dsn", "pg_server", "postgres_unavailable", "scratch_database"]

_db_numbers = itertools.count(1)


def postgres_unavailable(exc: PostgresUnavailable) -> NoReturn:
    """Fail (or, with ``LASH_ALLOW_NO_POSTGRES=1``, skip) the current test for a missing PostgreSQL."""
    if os.environ.get("LASH_ALLOW_NO_POSTGRES") == "1":
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    pytest.fail(f"PostgreSQL unavailable: {exc} (set LASH_ALLOW_NO_POSTGRES=1 to skip instead)", pytrace=False)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One server for the whole session, fsync off (commits still survive a server crash, see pgserver)."""
    server = PostgresServer(fsync=False)
    try:
        server.start()
    except PostgresUnavailable as exc:
        postgres_unavailable(exc)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_dsn(pg_server: PostgresServer) -> Iterator[str]:
    """A DSN for a database created for this test alone, dropped afterwards."""
    name = f"lash_t{next(_db_numbers)}"
    dsn = pg_server.create_database(name)
    try:
        yield dsn
    finally:
        # FORCE: a test that leaked a connection must not make teardown fail.
        pg_server.drop_database(name)


@contextlib.contextmanager
def scratch_database(server: PostgresServer, prefix: str) -> Iterator[str]:
    """A fresh database named ``<prefix>_<random>`` for a module or one test; the shared pools are closed and the
    database dropped afterwards."""
    from lash_store.postgres import close_shared_pools

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    dsn = server.create_database(name)
    try:
        yield dsn
    finally:
        close_shared_pools()
        server.drop_database(name)
