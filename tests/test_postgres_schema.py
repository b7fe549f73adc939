"""PostgreSQL schema management: explicit, versioned, refuses foreign and newer schemas, touches nothing it refuses."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from lash_store.errors import InvalidInput, NotAStoreDatabase, SchemaMigrationRequired, UnsupportedSchemaVersion
from lash_store.postgres import SCHEMA_VERSION, PostgresStore, close_shared_pools, migrate, setup
from tests.helpers import commit_at

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def _pools() -> Iterator[None]:
    yield
    close_shared_pools()


def _tables(dsn: str, schema: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY 1",
            (schema,),
        ).fetchall()
    return [row[0] for row in rows]


def test_setup_creates_a_versioned_schema_once(pg_dsn: str) -> None:
    assert setup(pg_dsn, schema="agents") is None  # created
    assert setup(pg_dsn, schema="agents") == SCHEMA_VERSION  # already current: nothing to do
    assert migrate(pg_dsn, schema="agents") == SCHEMA_VERSION
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT application, version FROM agents.schema_version").fetchall() == [
            ("lash-store", SCHEMA_VERSION)
        ]
    assert "sessions" in _tables(pg_dsn, "agents") and _tables(pg_dsn, "lash") == []


def test_stores_in_two_schemas_are_independent(pg_dsn: str) -> None:
    with PostgresStore.open(pg_dsn, "s", schema="one") as one, PostgresStore.open(pg_dsn, "s", schema="two") as two:
        one.commit_runtime_state(commit_at("s", 0))
        assert one.load_session() is not None and two.load_session() is None


def test_a_foreign_schema_is_refused_untouched(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA lash")
        conn.execute("CREATE TABLE lash.orders (id int)")
    with pytest.raises(NotAStoreDatabase):
        setup(pg_dsn)
    with pytest.raises(NotAStoreDatabase):
        PostgresStore.open(pg_dsn, "s")
    assert _tables(pg_dsn, "lash") == ["orders"]


def test_another_applications_marker_is_refused(pg_dsn: str) -> None:
    setup(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE lash.schema_version SET application = 'someone-else'")
    with pytest.raises(NotAStoreDatabase, match="another application"):
        setup(pg_dsn)


def test_a_newer_schema_is_refused_untouched(pg_dsn: str) -> None:
    setup(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE lash.schema_version SET version = 99")
    with pytest.raises(UnsupportedSchemaVersion) as raised:
        PostgresStore.open(pg_dsn, "s")
    assert (raised.value.expected, raised.value.found) == (SCHEMA_VERSION, 99)
    with pytest.raises(UnsupportedSchemaVersion):
        setup(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM lash.sessions").fetchone() == (0,)


def test_an_older_schema_needs_an_explicit_migration(pg_dsn: str) -> None:
    setup(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE lash.schema_version SET version = 0")
    with pytest.raises(SchemaMigrationRequired):
        PostgresStore.open(pg_dsn, "s")


def test_without_auto_setup_a_missing_schema_is_refused(pg_dsn: str) -> None:
    with pytest.raises(InvalidInput, match="not set up"):
        PostgresStore.open(pg_dsn, "s", auto_setup=False)
    assert _tables(pg_dsn, "lash") == []


def test_setup_never_runs_inside_a_callers_transaction(pg_dsn: str) -> None:
    """setup() takes its own connection: a caller's open transaction neither hides nor rolls back the schema."""
    with psycopg.connect(pg_dsn) as caller:
        caller.execute("SELECT 1")  # the caller's transaction is open
        setup(pg_dsn)
        caller.rollback()
    assert "sessions" in _tables(pg_dsn, "lash")


@pytest.mark.parametrize("schema", ["Lash", "lash; DROP TABLE x", "", "1abc", "a" * 64])
def test_schema_names_are_plain_identifiers(pg_dsn: str, schema: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        setup(pg_dsn, schema=schema)
    assert raised.value.what == "schema"


REGISTRY_TABLES = ["process_events", "process_handle_grants", "process_leases", "process_wake_acks", "processes"]


def test_a_version_1_database_migrates_to_version_2_keeping_its_sessions(pg_dsn: str) -> None:
    """Version 2 adds the process registry; a database of the previous release is migrated, never rewritten."""
    from lash_store.postgres import PostgresProcessRegistry
    from lash_store.processes import ProcessRegistration

    assert SCHEMA_VERSION >= 2
    setup(pg_dsn)
    with PostgresStore.open(pg_dsn, "kept") as store:
        store.commit_runtime_state(commit_at("kept", 0))
    close_shared_pools()
    # Exactly what version 1 was: schema.sql without the registry's tables, recorded as version 1.
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for table in REGISTRY_TABLES:
            conn.execute(f"DROP TABLE lash.{table}")
        conn.execute("UPDATE lash.schema_version SET version = 1")
    with pytest.raises(SchemaMigrationRequired):
        PostgresStore.open(pg_dsn, "kept")
    with pytest.raises(SchemaMigrationRequired):
        PostgresProcessRegistry.open(pg_dsn)
    assert set(REGISTRY_TABLES).isdisjoint(_tables(pg_dsn, "lash"))

    assert migrate(pg_dsn) == 1
    assert set(REGISTRY_TABLES) <= set(_tables(pg_dsn, "lash"))
    assert migrate(pg_dsn) == SCHEMA_VERSION  # current now: nothing to do
    close_shared_pools()
    with PostgresStore.open(pg_dsn, "kept") as store:
        read = store.load_session()
        assert read is not None and read.head_revision == 1
    with PostgresProcessRegistry.open(pg_dsn) as registry:
        registry.register_process(ProcessRegistration.new("after-migration", {"type": "external"}))
        assert [record.id for record in registry.list_non_terminal()] == ["after-migration"]


def test_a_new_schema_is_the_migrated_schema(pg_dsn: str) -> None:
    """Set-up runs schema.sql and every migration, so a new database and a migrated one cannot drift apart."""
    setup(pg_dsn, schema="fresh")
    setup(pg_dsn, schema="migrated")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for table in REGISTRY_TABLES:
            conn.execute(f"DROP TABLE migrated.{table}")
        conn.execute("UPDATE migrated.schema_version SET version = 1")
    migrate(pg_dsn, schema="migrated")

    def columns(schema: str) -> list[tuple[str, ...]]:
        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute(
                "SELECT table_name, column_name, data_type, coalesce(collation_name, ''), is_nullable "
                "FROM information_schema.columns WHERE table_schema = %s ORDER BY 1, 2",
                (schema,),
            ).fetchall()
        return [tuple(str(value) for value in row) for row in rows]

    assert columns("fresh") == columns("migrated")
