"""The conformance suite (``lash_store.testing.conformance``) on PostgreSQL.

One throwaway server per test session and one database for this module; every
test works in fresh session partitions (which is how a deployment shares one
database).  Damage for the corruption tests is done with SQL on a raw connection.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

pytest.register_assert_rewrite("lash_store.testing.conformance")

from lash_store import GcPolicy, StoreOptions  # noqa: E402
from lash_store.postgres import PostgresStore  # noqa: E402
from lash_store.testing.conformance import *  # noqa: E402, F403  (collects the suite)
from lash_store.testing.conformance import BackendHarness, Clock, SessionStore  # noqa: E402
from lash_store.testing.pgserver import PostgresServer  # noqa: E402

pytestmark = pytest.mark.postgres

_UNDECODABLE = b"\xc1"


@pytest.fixture(scope="module")
def conformance_dsn(pg_server: PostgresServer) -> Iterator[str]:
    name = f"lash_conf_{uuid.uuid4().hex[:8]}"
    dsn = pg_server.create_database(name)
    try:
        yield dsn
    finally:
        from lash_store.postgres import close_shared_pools

        close_shared_pools()
        pg_server.drop_database(name)


def _pg(store: SessionStore) -> PostgresStore:
    assert isinstance(store, PostgresStore)
    return store


class PostgresHarness(BackendHarness):
    """``PostgresStore.open(dsn, session_id)``: one fresh session partition per store; reopen = a new handle."""

    name = "postgres"
    durable = True

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def open(self, clock: Clock) -> SessionStore:
        options = StoreOptions(clock=clock, gc_policy=GcPolicy(grace_ms=0))
        return PostgresStore.open(self.dsn, f"conformance-{uuid.uuid4().hex}", options)

    def reopen(self, store: SessionStore) -> SessionStore:
        pg = _pg(store)
        return PostgresStore.open(self.dsn, pg.session_partition, pg.options)

    def _execute(self, statement: str, *params: object) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(statement, params).rowcount  # type: ignore[arg-type]

    def corrupt_head(self, store: SessionStore) -> None:
        updated = self._execute(
            "UPDATE lash.sessions SET body = %s WHERE session_id = %s", _UNDECODABLE, _pg(store).session_partition
        )
        assert updated == 1

    def delete_blob(self, store: SessionStore, ref: str) -> None:
        deleted = self._execute(
            "DELETE FROM lash.blobs WHERE session_id = %s AND hash = %s", _pg(store).session_partition, ref
        )
        assert deleted == 1


@pytest.fixture
def harness(conformance_dsn: str) -> BackendHarness:
    return PostgresHarness(conformance_dsn)
