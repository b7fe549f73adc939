"""PostgreSQL schema management: explicit, versioned, refuses foreign and newer schemas, touches nothing it refuses."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from lash_store.errors import InvalidInput, NotAStoreDatabase, SchemaMigrationRequired, UnsupportedSchemaVersion
from lash_store.postgres import SCHEMA_VERSION, PostgresStore, close_shared_pools, migrate, setup
from lash_store.postgres.schema import NODE_INDEX_VERSION, PROCESS_REGISTRY_VERSION
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


def test_a_zero_busy_timeout_never_waits_forever(pg_dsn: str) -> None:
    """busy_timeout_ms=0 is "do not wait" everywhere; PostgreSQL's lock_timeout=0 would mean "wait forever"."""
    from lash_store.errors import StoreBusy
    from lash_store.options import StoreOptions

    with PostgresStore.open(pg_dsn, "busy", StoreOptions(busy_timeout_ms=0)) as store:
        store.commit_runtime_state(commit_at("busy", 0))
        with psycopg.connect(pg_dsn) as holder:
            holder.execute("SELECT 1 FROM lash.sessions WHERE session_id = 'busy' FOR UPDATE")
            with pytest.raises(StoreBusy):
                store.commit_runtime_state(commit_at("busy", 1))
            holder.rollback()
        assert store.commit_runtime_state(commit_at("busy", 1)).head_revision == 2


def test_version_1_migrates_to_version_2_keeping_every_node(pg_dsn: str) -> None:
    """A schema of version 1 (no node index, blob edges or staged writes) migrates in place, kinds filled in."""
    from lash_store.model import GraphDelta, RuntimeCommit, SessionNode

    setup(pg_dsn)
    store = PostgresStore.open(pg_dsn, "old")
    nodes = [SessionNode(node_id="n1"), SessionNode(node_id="n2", parent_node_id="n1", kind="tool")]
    store.commit_runtime_state(
        RuntimeCommit(session_id="old", expected_head_revision=0, graph=GraphDelta.append(nodes, "n2"))
    )
    store.close()
    close_shared_pools()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # back to exactly what version 1 had
        conn.execute("DROP TABLE lash.node_tags, lash.node_blob_refs, lash.blob_edges, lash.staged_writes")
        conn.execute("DROP INDEX lash.graph_nodes_sort")
        conn.execute(f"DROP TABLE {', '.join(f'lash.{table}' for table in REGISTRY_TABLES)}")
        conn.execute("ALTER TABLE lash.graph_nodes DROP COLUMN kind, DROP COLUMN lane, DROP COLUMN sort_key")
        conn.execute("UPDATE lash.schema_version SET version = 1")
    with pytest.raises(SchemaMigrationRequired):
        PostgresStore.open(pg_dsn, "old")
    assert migrate(pg_dsn) == 1
    assert migrate(pg_dsn) == SCHEMA_VERSION  # idempotent
    assert set(REGISTRY_TABLES) <= set(_tables(pg_dsn, "lash"))  # every later migration ran too
    store = PostgresStore.open(pg_dsn, "old")
    assert [n.node_id for n in store.query_nodes(kind="tool")] == ["n2"]
    assert [n.node_id for n in store.query_nodes(kind="message")] == ["n1"]
    read = store.load_session()
    assert read is not None and [n.node_id for n in read.graph.nodes] == ["n1", "n2"]
    store.close()


def test_version_2_migrates_to_version_3_keeping_the_queue(pg_dsn: str) -> None:
    """A schema of version 2 (no poison-work columns) migrates in place: batches and a live claim are kept."""
    from lash_store import PoisonPolicy, StoreOptions
    from lash_store.model import (
        DeliveryPolicy,
        QueuedWorkBatchDraft,
        QueuedWorkClaimBoundary,
        QueuedWorkPayload,
        SlotPolicy,
        TurnInput,
    )
    from tests.helpers import ManualClock

    def draft(text: str) -> QueuedWorkBatchDraft:
        payload = QueuedWorkPayload.turn_input(TurnInput.text(text))
        return QueuedWorkBatchDraft.new("q", DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, SlotPolicy.EXCLUSIVE, [payload])

    clock = ManualClock()
    setup(pg_dsn)
    store = PostgresStore.open(pg_dsn, "old", StoreOptions(clock=clock))
    first, second = store.enqueue_queued_work(draft("first")), store.enqueue_queued_work(draft("second"))
    held = store.claim_ready_queued_work("q", "old-worker", QueuedWorkClaimBoundary.IDLE, 100, 1)
    assert held is not None and held.batch_ids == [first.batch_id]
    store.close()
    close_shared_pools()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # back to exactly what version 2 had
        conn.execute("DROP INDEX lash.queued_work_live, lash.queued_work_dead")
        conn.execute(
            "ALTER TABLE lash.queued_work_batches DROP COLUMN attempts, DROP COLUMN retry_at_ms, "
            "DROP COLUMN last_owner_id, DROP COLUMN last_claimed_at_ms, DROP COLUMN last_error, DROP COLUMN dead_at_ms"
        )
        conn.execute(
            "CREATE INDEX queued_work_fifo ON lash.queued_work_batches (session_id, queue_session_id, enqueue_seq)"
        )
        conn.execute("UPDATE lash.schema_version SET version = 2")
    with pytest.raises(SchemaMigrationRequired):
        PostgresStore.open(pg_dsn, "old")
    assert migrate(pg_dsn) == 2
    assert migrate(pg_dsn) == SCHEMA_VERSION
    with psycopg.connect(pg_dsn) as conn:
        indexes = {row[0] for row in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'lash'")}
        assert "queued_work_fifo" not in indexes and {"queued_work_live", "queued_work_dead"} <= indexes
    policy = PoisonPolicy(max_attempts=1, backoff_base_ms=1_000, backoff_max_ms=1_000, jitter=0.0)
    store = PostgresStore.open(pg_dsn, "old", StoreOptions(clock=clock, poison=policy))
    assert store.list_queued_work("q") == [first, second]
    assert store.list_pending_queued_work("q") == [second]  # the old claim still holds `first`
    clock.advance(100)  # the old claim lapses; it counted no attempt, so the batch is offered again
    retry = store.claim_ready_queued_work("q", "w", QueuedWorkClaimBoundary.IDLE, 100, 1)
    assert retry is not None and retry.batch_ids == [first.batch_id]
    clock.advance(100)  # its one attempt fails: the next claim sets it aside and takes the next batch
    after = store.claim_ready_queued_work("q", "w", QueuedWorkClaimBoundary.IDLE, 100, 1)
    assert after is not None and after.batch_ids == [second.batch_id]
    assert [(letter.batch, letter.attempts) for letter in store.list_dead_letters("q")] == [(first, 1)]
    store.close()


REGISTRY_TABLES = ["process_events", "process_handle_grants", "process_leases", "process_wake_acks", "processes"]


def test_a_database_before_the_registry_migrates_keeping_its_sessions(pg_dsn: str) -> None:
    """PROCESS_REGISTRY_VERSION adds the registry; a database of the release before is migrated, never rewritten."""
    from lash_store.postgres import PostgresProcessRegistry
    from lash_store.processes import ProcessRegistration

    assert SCHEMA_VERSION >= PROCESS_REGISTRY_VERSION > NODE_INDEX_VERSION
    setup(pg_dsn)
    with PostgresStore.open(pg_dsn, "kept") as store:
        store.commit_runtime_state(commit_at("kept", 0))
    close_shared_pools()
    # Exactly what the version before was: without the registry's tables, recorded as that version.
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for table in REGISTRY_TABLES:
            conn.execute(f"DROP TABLE lash.{table}")
        conn.execute("UPDATE lash.schema_version SET version = %s", (NODE_INDEX_VERSION,))
    with pytest.raises(SchemaMigrationRequired):
        PostgresStore.open(pg_dsn, "kept")
    with pytest.raises(SchemaMigrationRequired):
        PostgresProcessRegistry.open(pg_dsn)
    assert set(REGISTRY_TABLES).isdisjoint(_tables(pg_dsn, "lash"))

    assert migrate(pg_dsn) == NODE_INDEX_VERSION
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
        conn.execute("UPDATE migrated.schema_version SET version = %s", (NODE_INDEX_VERSION,))
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
