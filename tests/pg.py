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
from typing import Any, NoReturn

import pytest

from lash_store.testing.pgserver import PostgresServer, PostgresUnavailable

__all__ = ["count_round_trips", "pg_dsn", "pg_server", "postgres_unavailable", "scratch_database"]

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


def count_round_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every point where the client waits for the server in pipeline mode (psycopg internals).

    A pipeline waits when a result is fetched with a flush (a query's rows, or
    leaving the pipeline) and when it is synced; everything else is queued.
    """
    from psycopg import _pipeline_base

    waits: list[str] = []
    real_fetch = _pipeline_base.BasePipeline._fetch_gen
    real_sync = _pipeline_base.BasePipeline._sync_gen

    def fetch(self: Any, *, flush: bool) -> Any:
        if flush:
            waits.append("fetch")
        return (yield from real_fetch(self, flush=flush))

    def sync(self: Any) -> Any:
        waits.append("sync")
        return (yield from real_sync(self))

    monkeypatch.setattr(_pipeline_base.BasePipeline, "_fetch_gen", fetch)
    monkeypatch.setattr(_pipeline_base.BasePipeline, "_sync_gen", sync)
    return waits
