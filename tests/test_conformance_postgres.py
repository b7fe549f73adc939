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

from lash_store import GcPolicy, PoisonPolicy, StoreOptions  # noqa: E402
from lash_store.core.crypto import Cipher  # noqa: E402
from lash_store.options import KeyRing  # noqa: E402
from lash_store.postgres import PostgresStore  # noqa: E402
from lash_store.service.sealed import REF  # noqa: E402
from lash_store.testing.conformance import *  # noqa: E402, F403  (collects the suite)
from lash_store.testing.conformance import BackendHarness, Clock, SessionStore  # noqa: E402
from lash_store.testing.pgserver import PostgresServer  # noqa: E402
from tests.pg import scratch_database  # noqa: E402

pytestmark = pytest.mark.postgres

_UNDECODABLE = b"\xc1"


@pytest.fixture(scope="module")
def conformance_dsn(pg_server: PostgresServer) -> Iterator[str]:
    with scratch_database(pg_server, "lash_conf") as dsn:
        yield dsn


def _pg(store: SessionStore) -> PostgresStore:
    assert isinstance(store, PostgresStore)
    return store


class PostgresHarness(BackendHarness):
    """``PostgresStore.open(dsn, session_id)``: one fresh session partition per store; reopen = a new handle."""

    name = "postgres"
    durable = True

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def open(self, clock: Clock, poison: PoisonPolicy | None = None) -> SessionStore:
        options = StoreOptions(clock=clock, gc_policy=GcPolicy(grace_ms=0), poison=poison)
        return PostgresStore.open(self.dsn, f"conformance-{uuid.uuid4().hex}", options)

    def reopen(self, store: SessionStore) -> SessionStore:
        pg = _pg(store)
        return PostgresStore.open(self.dsn, pg.session_partition, pg.options)

    def damage(self, store: SessionStore, target: str, key: str | None, value: object) -> None:
        table, column, key_column = POSTGRES_DAMAGE[target]
        where = f"session_id = %s AND {key_column} = %s" if key_column else "session_id = %s"
        if column is None:
            statement, params = f"DELETE FROM lash.{table} WHERE {where}", [_pg(store).session_partition]
        else:
            statement, params = (
                f"UPDATE lash.{table} SET {column} = %s WHERE {where}",
                [value, _pg(store).session_partition],
            )
        if key_column:
            params.append(key)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            changed = conn.execute(statement, params).rowcount  # type: ignore[arg-type]
        assert changed == 1, f"damage {target} {key} changed {changed} rows"


# target -> (table, damaged column or None to delete the row, key column or None for the partition's one row)
POSTGRES_DAMAGE: dict[str, tuple[str, str | None, str | None]] = {
    "head.body": ("sessions", "body", None),
    "head.usage_ledger": ("sessions", "usage_ledger", None),
    "node.body": ("graph_nodes", "body", "node_id"),
    "blob.content": ("blobs", "content", "hash"),
    "blob.delete": ("blobs", None, "hash"),
    "meta.relation": ("session_meta", "relation", None),
    "turn.record": ("turn_commits", "record", "turn_id"),
    "batch.payloads": ("queued_work_batches", "payloads", "batch_id"),
}


_RING = KeyRing.generate("conformance")


class EncryptedPostgresHarness(PostgresHarness):
    """A session partition opened with a key ring: every conversation byte sealed."""

    name = "postgres-encrypted"

    def open(self, clock: Clock, poison: PoisonPolicy | None = None) -> SessionStore:
        options = StoreOptions(clock=clock, gc_policy=GcPolicy(grace_ms=0), encryption=_RING, poison=poison)
        return PostgresStore.open(self.dsn, f"conformance-{uuid.uuid4().hex}", options)

    def damage(self, store: SessionStore, target: str, key: str | None, value: object) -> None:
        if target.startswith("blob.") and key is not None:
            key = Cipher(_RING, _pg(store).session_partition).address(REF, key)  # the blob's keyed address
        super().damage(store, target, key, value)


@pytest.fixture(params=["postgres", "postgres-encrypted"])
def harness(request: pytest.FixtureRequest, conformance_dsn: str) -> BackendHarness:
    if request.param == "postgres-encrypted":
        return EncryptedPostgresHarness(conformance_dsn)
    return PostgresHarness(conformance_dsn)
