"""Crash safety on PostgreSQL: SIGKILL client processes mid-commit, then prove every recovery (SPEC §8).

The same harness as the SQLite campaign (:mod:`lash_store.testing.crash`),
pointed at a DSN and a session partition: children commit stamped turns with
queue completions and attachments and are killed at random moments; after
each kill the parent waits until the server has finished whatever the dead
client's connection had under way, then checks that every acknowledged commit
is present, nothing is half-applied, nothing is applied twice, and that
replays write no row.  The default profile kills 60 children
(``LASH_PG_CRASH_KILLS``), the ``slow`` one 600 (``LASH_PG_CRASH_LONG_KILLS``).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from lash_store.errors import QueuedWorkClaimExpired
from lash_store.postgres import PostgresStore, close_shared_pools
from lash_store.testing.crash import (
    SESSION_ID,
    Ack,
    CampaignReport,
    CrashTarget,
    HarnessError,
    RoundOutcome,
    prepare_turn,
    run_crash_campaign,
    turn_commit,
    verify_recovery,
    verify_store,
)
from lash_store.testing.pgserver import PostgresServer
from tests.pg import scratch_database

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

CI_KILLS = int(os.environ.get("LASH_PG_CRASH_KILLS", "60"))
LONG_KILLS = int(os.environ.get("LASH_PG_CRASH_LONG_KILLS", "600"))
SEED = int(os.environ.get("LASH_CRASH_SEED", "20250101"))


@pytest.fixture(autouse=True)
def _close_pools() -> Iterator[None]:
    # The harness's verifier stores use this process's shared pools; they go before a database is dropped.
    yield
    close_shared_pools()


def assert_clean(report: CampaignReport, kills: int, *, some_acked: bool = True) -> None:
    assert report.failures == [], report.summary()
    assert report.kills == kills, report.summary()
    assert report.recoveries_verified == kills, report.summary()
    assert report.inflight_replays_verified == kills, report.summary()
    if some_acked:  # a few short rounds may all end before a child's first acknowledgement
        assert report.acked_commits > 0, report.summary()
    # One revision per acknowledged commit, plus one per kill (the in-flight turn, durable or finished by the
    # verifier): nothing lost, nothing applied twice.
    assert report.final_head_revision == report.acked_commits + kills, report.summary()


# ---------------------------------------------------------------------------
# The campaigns


def test_postgres_crash_campaign(pg_dsn: str) -> None:
    """SIGKILLs at random moments of a PostgreSQL client; every recovery verified, zero failures."""
    report = run_crash_campaign(pg_dsn, CI_KILLS, SEED, session_id="crash-ci")
    print(report.summary())
    assert_clean(report, CI_KILLS)
    assert report.kills_in_commit_window > 0, report.summary()
    assert verify_store(pg_dsn, SEED, session_id="crash-ci") == report.final_head_revision


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_long_postgres_crash_campaign(pg_dsn: str) -> None:
    report = run_crash_campaign(pg_dsn, LONG_KILLS, SEED + 1, session_id="crash-long")
    print(report.summary())
    assert_clean(report, LONG_KILLS)
    # Over this many kills some land after a commit became durable and before its acknowledgement.
    assert report.inflight_found_committed > 0, report.summary()
    assert verify_store(pg_dsn, SEED + 1, session_id="crash-long") == report.final_head_revision


def test_partitions_of_one_database_crash_independently(pg_dsn: str) -> None:
    """Two campaigns in two partitions of the same database; each resumes from its own head."""
    first = run_crash_campaign(pg_dsn, 4, 3, session_id="left")
    other = run_crash_campaign(pg_dsn, 4, 4, session_id="right")
    again = run_crash_campaign(pg_dsn, 4, 3, session_id="left")
    assert_clean(first, 4, some_acked=False)
    assert_clean(other, 4, some_acked=False)
    assert again.failures == [] and again.recoveries_verified == 4, again.summary()
    assert again.final_head_revision == first.final_head_revision + again.acked_commits + 4
    assert verify_store(pg_dsn, 3, session_id="left") == again.final_head_revision
    assert verify_store(pg_dsn, 4, session_id="right") == other.final_head_revision


def test_cli_runs_a_postgres_campaign_with_subprocess_children(pg_dsn: str) -> None:
    """``--target DSN --session ID``: every child a fresh ``python -m ... child <dsn> ... --session ID``."""
    argv = [sys.executable, "-m", "lash_store.testing.crash", "--target", pg_dsn, "--session", "cli-run"]
    completed = subprocess.run(
        [*argv, "--kills", "3", "--seed", "9", "--launcher", "subprocess", "--max-delay-ms", "60"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = dict(line.rsplit(None, 1) for line in completed.stdout.splitlines() if line.strip())
    assert lines["kills (SIGKILL)"] == "3"
    assert lines["recoveries verified"] == "3"
    assert lines["failures"] == "0"
    assert verify_store(pg_dsn, 9, session_id="cli-run") == int(lines["final head revision"])


def test_a_sqlite_target_takes_no_partition() -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        CrashTarget.of("session.db", "other")
    assert CrashTarget.of("host=/tmp dbname=x", None).partition == SESSION_ID
    assert CrashTarget.of("postgresql://u@h/db", "p").cli_options() == ["--session", "p"]


# ---------------------------------------------------------------------------
# The verifier is not vacuous on PostgreSQL: it flags the damage a crash could cause


@pytest.fixture(scope="module")
def crash_db(pg_server: PostgresServer) -> Iterator[str]:
    """A database whose partition ``campaign`` a short campaign left behind (seed 5)."""
    with scratch_database(pg_server, "lash_crash") as dsn:
        report = run_crash_campaign(dsn, 6, 5, session_id="campaign", max_delay_ms=40)
        assert report.failures == [], report.summary()
        yield dsn


def copy_of(dsn: str) -> str:
    """A fresh partition holding exactly what ``campaign`` holds (the store's own export and import)."""
    copy = f"copy-{uuid.uuid4().hex[:8]}"
    with PostgresStore.open(dsn, "campaign", create=False) as source, PostgresStore.open(dsn, copy) as target:
        target.import_session(source.export_session())
    return copy


def execute(dsn: str, sql: str, partition: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, {"sid": partition}).rowcount  # type: ignore[arg-type]


DAMAGE = [
    pytest.param(
        "DELETE FROM lash.turn_commits WHERE session_id = %(sid)s AND turn_id = 'turn-3'",
        "turn stamps",
        id="lost-turn-stamp",
    ),
    pytest.param(
        "DELETE FROM lash.graph_nodes WHERE session_id = %(sid)s AND node_id = 'u2'", "graph nodes", id="torn-graph"
    ),
    pytest.param(
        "UPDATE lash.attachment_manifest SET committed_at_ms = NULL WHERE session_id = %(sid)s "
        "AND attachment_id = 'att-2-1'",
        "attachments",
        id="attachment-not-stamped",
    ),
    pytest.param(
        "UPDATE lash.sessions SET head_revision = head_revision + 1 WHERE session_id = %(sid)s",
        "head config",
        id="head-ahead",
    ),
    pytest.param(
        "INSERT INTO lash.queued_work_batches (session_id, batch_id, enqueue_seq, queue_session_id, source_key, "
        "delivery_policy, slot_policy, merge_key, available_at_ms, enqueued_at_ms, payloads) VALUES (%(sid)s, "
        "'qwb:stale', 999999, 'crash-session', 'msg-2', 'after_current_turn_commit', 'exclusive', 'never', 0, 0, "
        "'\\x90')",
        "queue holds",
        id="consumed-batch-still-queued",
    ),
    pytest.param(
        # Neither the head's manifest nor a blob it names: tampering with those fails the head read itself
        # (CorruptData) before the verifier compares blobs, and which raw blob has the smallest hash depends on
        # where the campaign stopped (the test was flaky on loaded machines).
        "UPDATE lash.blobs SET content = content || '\\x00'::bytea WHERE session_id = %(sid)s "
        "AND hash = (SELECT min(b.hash) FROM lash.blobs b WHERE b.session_id = %(sid)s AND b.encoding = 'raw' "
        "AND NOT EXISTS (SELECT 1 FROM lash.sessions s JOIN lash.blobs m "
        "ON m.session_id = s.session_id AND m.hash = s.checkpoint_ref WHERE s.session_id = %(sid)s "
        "AND (m.hash = b.hash OR position(convert_to(b.hash, 'UTF8') in m.content) > 0)))",
        "does not read back",
        id="tampered-blob",
    ),
]


@pytest.mark.parametrize(("damage", "complaint"), DAMAGE)
def test_verifier_flags_damage(crash_db: str, damage: str, complaint: str) -> None:
    partition = copy_of(crash_db)
    verify_store(crash_db, 5, session_id=partition)  # the undamaged copy passes
    assert execute(crash_db, damage, partition) == 1
    with pytest.raises(HarnessError, match=complaint):
        verify_store(crash_db, 5, session_id=partition)


def test_observer_sees_every_row_write_and_no_lock(crash_db: str) -> None:
    """What "writes nothing" means on PostgreSQL: any row write moves the fingerprint (even one that
    changes no value), while a transaction that only locks rows - as a replay does - leaves it alone."""
    partition = copy_of(crash_db)
    observer = CrashTarget.of(crash_db, partition).observer()
    try:
        before = observer.version()
        with psycopg.connect(crash_db) as conn:  # one transaction that only locks rows
            conn.execute("SELECT 1 FROM lash.sessions WHERE session_id = %s FOR NO KEY UPDATE", (partition,))
            conn.execute("SELECT 1 FROM lash.blobs WHERE session_id = %s FOR UPDATE", (partition,))
        assert observer.version() == before
        execute(
            crash_db, "UPDATE lash.sessions SET head_revision = head_revision WHERE session_id = %(sid)s", partition
        )
        after_update = observer.version()
        assert after_update != before, "an update that changes no value still writes a row version"
        execute(
            crash_db,
            "UPDATE lash.attachment_manifest SET intent_at_ms = intent_at_ms WHERE session_id = %(sid)s "
            "AND attachment_id = 'att-1-0'",
            partition,
        )
        assert observer.version() != after_update
    finally:
        observer.close()


def test_verifier_flags_a_lost_acknowledged_commit(crash_db: str) -> None:
    partition = copy_of(crash_db)
    head = verify_store(crash_db, 5, session_id=partition)
    lost = RoundOutcome(ready_head=head, acks=[Ack(turn=head + 1, head_revision=head + 1, checkpoint_ref="x")])
    with pytest.raises(HarnessError, match="acknowledged commit lost"):
        verify_recovery(crash_db, 5, head, lost, session_id=partition)


def test_recovery_replays_a_durable_unacknowledged_commit(crash_db: str) -> None:
    """A client killed after its COMMIT reached the server, before it could acknowledge: found, replayed once."""
    partition = copy_of(crash_db)
    head = verify_store(crash_db, 5, session_id=partition)
    with PostgresStore.open(crash_db, partition) as store:
        durable = store.commit_runtime_state(prepare_turn(store, 5, head + 1, "dying-worker", 0))
    assert durable.head_revision == head + 1
    report = CampaignReport()
    new_head = verify_recovery(
        crash_db, 5, head, RoundOutcome(ready_head=head), rng=random.Random(2), report=report, session_id=partition
    )
    assert new_head == head + 1  # found durable, not committed a second time
    assert report.inflight_found_committed == 1
    assert verify_store(crash_db, 5, session_id=partition) == head + 1


def test_recovery_finishes_a_turn_whose_claim_a_dead_process_holds(crash_db: str) -> None:
    """The dead owner's lease (on the database clock) is superseded; its stale proof is refused afterwards."""
    partition = copy_of(crash_db)
    head = verify_store(crash_db, 5, session_id=partition)
    with PostgresStore.open(crash_db, partition) as store:
        stale = prepare_turn(store, 5, head + 1, "dead-worker", 0)  # a live 60 s lease on the database clock
    new_head = verify_recovery(
        crash_db, 5, head, RoundOutcome(ready_head=head), rng=random.Random(1), full=True, session_id=partition
    )
    assert new_head == head + 1
    with PostgresStore.open(crash_db, partition) as store:
        # Its stamp now answers first; without the stamp, the dead owner's claim proof is stale.
        assert store.commit_runtime_state(stale).head_revision == head + 1
        with pytest.raises(QueuedWorkClaimExpired):
            store.commit_runtime_state(turn_commit(5, head + 2, stale.completed_queue_claims))
        assert store.list_queued_work(SESSION_ID) == []
    assert verify_store(crash_db, 5, session_id=partition) == head + 1
