"""The effect-journal conformance suite (``lash_store.testing.effects_conformance``) on PostgreSQL.

One database for this module; every test works in a fresh schema (the
journal is deployment-wide, so a schema is what one SQLite deployment file
is).  Leases use the database clock; process commands run against a
``PostgresProcessRegistry`` in the same schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

pytest.register_assert_rewrite("lash_store.testing.effects_conformance")

from lash_store.api import ProcessRegistryAPI  # noqa: E402
from lash_store.effects import EffectReplayOptions  # noqa: E402
from lash_store.postgres.effects import PostgresEffectHost  # noqa: E402
from lash_store.postgres.registry import PostgresProcessRegistry  # noqa: E402
from lash_store.testing.effects_conformance import *  # noqa: E402, F403  (collects the suite)
from lash_store.testing.effects_conformance import EffectsHarness, Host  # noqa: E402
from lash_store.testing.pgserver import PostgresServer  # noqa: E402
from tests.pg import scratch_database  # noqa: E402

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def effects_dsn(pg_server: PostgresServer) -> Iterator[str]:
    with scratch_database(pg_server, "lash_effconf") as dsn:
        yield dsn


class PostgresHarness(EffectsHarness):
    """``PostgresEffectHost.open(dsn, schema=...)``: a fresh schema per test; reopen = a new host."""

    name = "postgres"
    durable = True

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.schema = f"eff_{uuid.uuid4().hex[:12]}"

    def open(self, replay_options: EffectReplayOptions | None) -> Host:
        return PostgresEffectHost.open(self.dsn, replay_options=replay_options, schema=self.schema)

    def reopen(self, host: Host) -> Host:
        assert isinstance(host, PostgresEffectHost)
        return PostgresEffectHost.open(self.dsn, replay_options=host.replay_options, schema=host.schema)

    def registry(self, host: Host) -> ProcessRegistryAPI:
        assert isinstance(host, PostgresEffectHost)
        return PostgresProcessRegistry.open(self.dsn, schema=host.schema)


@pytest.fixture
def effects_harness(effects_dsn: str) -> EffectsHarness:
    return PostgresHarness(effects_dsn)
