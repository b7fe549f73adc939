"""The registry conformance suite (``lash_store.testing.registry_conformance``) on PostgreSQL.

One database for this module; every test works in a fresh schema (the
registry is deployment-wide, so a schema is what one SQLite deployment file
is).  Lease instants come from the injected test clock here; the tests with
real processes (``tests/test_registry_postgres_processes.py``) use the database clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

pytest.register_assert_rewrite("lash_store.testing.registry_conformance")

from lash_store import StoreOptions  # noqa: E402
from lash_store.postgres.registry import PostgresProcessRegistry  # noqa: E402
from lash_store.testing.pgserver import PostgresServer  # noqa: E402
from lash_store.testing.registry_conformance import *  # noqa: E402, F403  (collects the suite)
from lash_store.testing.registry_conformance import Clock, Registry, RegistryHarness  # noqa: E402
from tests.pg import scratch_database  # noqa: E402

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def registry_dsn(pg_server: PostgresServer) -> Iterator[str]:
    with scratch_database(pg_server, "lash_regconf") as dsn:
        yield dsn


def _pg(registry: Registry) -> PostgresProcessRegistry:
    assert isinstance(registry, PostgresProcessRegistry)
    return registry


class PostgresHarness(RegistryHarness):
    """``PostgresProcessRegistry.open(dsn, schema=...)``: a fresh schema per registry; reopen = a new handle."""

    name = "postgres"
    durable = True

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def open(self, clock: Clock) -> Registry:
        return PostgresProcessRegistry.open(self.dsn, StoreOptions(clock=clock), schema=f"reg_{uuid.uuid4().hex[:12]}")

    def reopen(self, registry: Registry) -> Registry:
        found = _pg(registry)
        return PostgresProcessRegistry.open(self.dsn, found.options, schema=found.schema)

    def restore_running(self, registry: Registry, process_id: str) -> None:
        schema = _pg(registry).schema
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            changed = conn.execute(
                f"UPDATE {schema}.processes SET status = 'running', await_output = NULL WHERE process_id = %s",
                (process_id,),
            ).rowcount
        assert changed == 1


@pytest.fixture
def registry_harness(registry_dsn: str) -> RegistryHarness:
    return PostgresHarness(registry_dsn)
