"""PostgreSQL schema version 6 (effect journal and host events): a version-2 database migrates explicitly."""

from __future__ import annotations

import psycopg
import pytest

from lash_store.errors import SchemaMigrationRequired
from lash_store.postgres import (
    SCHEMA_VERSION,
    PostgresEffectHost,
    PostgresHostEventStore,
    PostgresProcessRegistry,
    close_shared_pools,
    migrate,
    setup,
)
from lash_store.processes import ProcessRegistration

pytestmark = pytest.mark.postgres

NEW_TABLES = ["effect_journal", "host_event_deliveries", "host_event_occurrences", "host_event_subscriptions"]


def _tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'lash'").fetchall()
    return {row[0] for row in rows}


def test_a_version_2_database_migrates_to_the_effect_tables_keeping_its_processes(pg_dsn: str) -> None:
    assert SCHEMA_VERSION >= 6
    setup(pg_dsn)
    with PostgresProcessRegistry.open(pg_dsn) as registry:
        registry.register_process(ProcessRegistration.new("kept", {"type": "external"}))
    close_shared_pools()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # exactly what version 2 was
        for table in NEW_TABLES:
            conn.execute(f"DROP TABLE lash.{table}")
        conn.execute("DROP SEQUENCE lash.host_event_subscription_seq")
        conn.execute("UPDATE lash.schema_version SET version = 2")
    for opener in (PostgresEffectHost.open, PostgresHostEventStore.open):
        with pytest.raises(SchemaMigrationRequired):
            opener(pg_dsn)
    assert set(NEW_TABLES).isdisjoint(_tables(pg_dsn))

    assert migrate(pg_dsn) == 2
    assert set(NEW_TABLES) <= _tables(pg_dsn)
    assert migrate(pg_dsn) == SCHEMA_VERSION
    close_shared_pools()
    with PostgresProcessRegistry.open(pg_dsn) as registry:
        assert registry.get_process("kept") is not None
    with PostgresEffectHost.open(pg_dsn) as host:
        assert host.list_journal() == []
    with PostgresHostEventStore.open(pg_dsn) as store:
        assert store.list_subscriptions() == []
