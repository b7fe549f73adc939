"""The host-event conformance suite (``lash_store.testing.host_events_conformance``) on PostgreSQL.

One database for this module; every store works in a fresh schema (a schema
is what one SQLite deployment file is).  Instants come from the injected test clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

pytest.register_assert_rewrite("lash_store.testing.host_events_conformance")

from lash_store import StoreOptions  # noqa: E402
from lash_store.postgres.host_events import PostgresHostEventStore  # noqa: E402
from lash_store.testing.host_events_conformance import *  # noqa: E402, F403  (collects the suite)
from lash_store.testing.host_events_conformance import Clock, HostEventsHarness, Store  # noqa: E402
from lash_store.testing.pgserver import PostgresServer  # noqa: E402
from tests.pg import scratch_database  # noqa: E402

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def host_events_dsn(pg_server: PostgresServer) -> Iterator[str]:
    with scratch_database(pg_server, "lash_hevconf") as dsn:
        yield dsn


class PostgresHarness(HostEventsHarness):
    name = "postgres"
    durable = True

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def open(self, clock: Clock) -> Store:
        return PostgresHostEventStore.open(self.dsn, StoreOptions(clock=clock), schema=f"hev_{uuid.uuid4().hex[:12]}")

    def reopen(self, store: Store) -> Store:
        assert isinstance(store, PostgresHostEventStore)
        return PostgresHostEventStore.open(self.dsn, store.options, schema=store.schema)


@pytest.fixture
def host_events_harness(host_events_dsn: str) -> HostEventsHarness:
    return PostgresHarness(host_events_dsn)
