"""Regression: a store opened on a *new* pool must check (and set up) its schema, even when an earlier,
closed pool happened to live at the same address.

The "schema already checked" cache was keyed by ``id(pool)``.  Once a pool is
closed and collected, a new pool - for another database - may get the same
id, and ``PostgresStore.open`` then skipped the schema check: on a fresh
database the first write failed with ``relation "lash.sessions" does not
exist``.  It happened after ``close_shared_pools()`` (tests do that between
databases, and so may long-running programs), and with callers' own pools.
"""

from __future__ import annotations

import gc
import itertools

import pytest
from psycopg_pool import ConnectionPool

from lash_store.postgres import PostgresStore, close_shared_pools
from lash_store.testing.pgserver import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

_numbers = itertools.count()
ROUNDS = 12  # with shared pools, about every second round reused the previous pool's id


def _fresh_database(pg_server: PostgresServer) -> tuple[str, str]:
    name = f"lash_reuse_{next(_numbers)}"
    return name, pg_server.create_database(name)


def test_each_new_shared_pool_checks_its_schema(pg_server: PostgresServer) -> None:
    names = []
    try:
        for _ in range(ROUNDS):
            name, dsn = _fresh_database(pg_server)
            names.append(name)
            with PostgresStore.open(dsn, "s") as store:  # creates the schema in this new database
                assert store.load_session() is None
            close_shared_pools()  # the next pool is a new object, which may land at the old one's address
    finally:
        close_shared_pools()
        for name in names:
            pg_server.drop_database(name)


def test_each_new_caller_pool_checks_its_schema(pg_server: PostgresServer) -> None:
    names = []
    try:
        for _ in range(ROUNDS):
            name, dsn = _fresh_database(pg_server)
            names.append(name)
            pool = ConnectionPool(dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, open=True)
            try:
                with PostgresStore.open(pool, "s") as store:
                    assert store.load_session() is None
            finally:
                pool.close()
            del pool
            if len(names) % 2:  # collected now or later: either way its address may be handed out again
                gc.collect()
    finally:
        for name in names:
            pg_server.drop_database(name)
