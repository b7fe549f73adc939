"""Crash safety: SIGKILL real writer processes mid-commit, then prove every recovery (SPEC §8).

The harness lives in :mod:`lash_store.testing.crash`.  The CI profile kills
at least 200 children; the ``slow`` profile at least 2,000.  Counts and seeds
can be overridden with ``LASH_CRASH_KILLS`` / ``LASH_CRASH_LONG_KILLS`` /
``LASH_CRASH_SEED``.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lash_store import Store
from lash_store.errors import QueuedWorkClaimExpired
from lash_store.testing.crash import (
    SESSION_ID,
    Ack,
    CampaignReport,
    HarnessError,
    RoundOutcome,
    prepare_turn,
    run_crash_campaign,
    turn_commit,
    verify_recovery,
    verify_store,
)

CI_KILLS = int(os.environ.get("LASH_CRASH_KILLS", "200"))
LONG_KILLS = int(os.environ.get("LASH_CRASH_LONG_KILLS", "2000"))
SEED = int(os.environ.get("LASH_CRASH_SEED", "20250101"))


def assert_clean(report: CampaignReport, kills: int) -> None:
    """Zero failures, every kill verified, and the stream actually got somewhere."""
    assert report.failures == [], report.summary()
    assert report.kills == kills, report.summary()
    assert report.recoveries_verified == kills, report.summary()
    assert report.inflight_replays_verified == kills, report.summary()
    assert report.acked_commits > 0, report.summary()


def small_campaign(db_path: Path, kills: int = 8, seed: int = 5) -> CampaignReport:
    report = run_crash_campaign(db_path, kills, seed, max_delay_ms=30)
    assert report.failures == [], report.summary()
    return report


# ---------------------------------------------------------------------------
# The campaigns


def test_ci_crash_campaign(tmp_path: Path) -> None:
    """>= 200 SIGKILLs at random moments; every recovery verified, zero failures."""
    db_path = tmp_path / "crash.db"
    report = run_crash_campaign(db_path, CI_KILLS, SEED)
    print(report.summary())
    assert_clean(report, CI_KILLS)
    # Every in-flight turn is finished by the verifier: one revision per acked commit, plus one per kill
    # whose in-flight turn was not already durable.
    assert report.final_head_revision == report.acked_commits + CI_KILLS
    # The kill moments really vary: some land between a commit's start and its acknowledgement,
    # and some of those leave a durable, unacknowledged commit behind.
    assert report.kills_in_commit_window > 0, report.summary()
    assert report.inflight_found_committed > 0, report.summary()
    assert verify_store(db_path, SEED) == report.final_head_revision


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_long_crash_campaign(tmp_path: Path) -> None:
    """The soak profile: >= 2,000 SIGKILLs on one file."""
    db_path = tmp_path / "crash-long.db"
    report = run_crash_campaign(db_path, LONG_KILLS, SEED + 1)
    print(report.summary())
    assert_clean(report, LONG_KILLS)
    assert report.final_head_revision == report.acked_commits + LONG_KILLS
    assert verify_store(db_path, SEED + 1) == report.final_head_revision


def test_subprocess_launcher(tmp_path: Path) -> None:
    """Children started as fresh ``python -m lash_store.testing.crash child`` processes recover the same way."""
    db_path = tmp_path / "crash.db"
    report = run_crash_campaign(db_path, 4, 11, launcher="subprocess", max_delay_ms=40)
    assert_clean(report, 4)
    assert verify_store(db_path, 11) == report.final_head_revision


def test_campaign_resumes_an_existing_file(tmp_path: Path) -> None:
    """A second campaign on the same file continues the stream from the recovered head."""
    db_path = tmp_path / "crash.db"
    first = small_campaign(db_path, kills=6)
    second = small_campaign(db_path, kills=6)
    assert second.final_head_revision == first.final_head_revision + second.acked_commits + 6
    assert verify_store(db_path, 5) == second.final_head_revision


def test_cli_prints_the_report(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "lash_store.testing.crash", "--kills", "5", "--seed", "3", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = dict(line.rsplit(None, 1) for line in completed.stdout.splitlines() if line.strip())
    assert lines["kills (SIGKILL)"] == "5"
    assert lines["recoveries verified"] == "5"
    assert lines["failures"] == "0"
    assert (tmp_path / "crash-seed3.db").exists()


def test_invalid_launcher_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="launcher"):
        run_crash_campaign(tmp_path / "x.db", 1, 1, launcher="thread")


# ---------------------------------------------------------------------------
# The verifier is not vacuous: it flags damage a crash could cause


@pytest.fixture(scope="module")
def campaign_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file a short campaign left behind (copied per test before damaging it)."""
    db_path = tmp_path_factory.mktemp("campaign") / "crash.db"
    small_campaign(db_path, kills=6)
    return db_path


def copy_of(source: Path, target_dir: Path) -> Path:
    target = target_dir / "copy.db"
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    os.chmod(target, 0o600)
    return target


def _count_usage_twice(conn: sqlite3.Connection) -> None:
    """Add one turn's input tokens to the stored ledger, as a replayed delta would."""
    (stored,) = conn.execute("SELECT usage_ledger FROM session_head").fetchone()
    entries = msgspec.msgpack.decode(stored)
    entries[0]["usage"]["input_tokens"] += 1
    conn.execute("UPDATE session_head SET usage_ledger = ?", (msgspec.msgpack.encode(entries),))


DAMAGE: list[Any] = [
    pytest.param("DELETE FROM runtime_turn_commits WHERE turn_id = 'turn-3'", "turn stamps", id="lost-turn-stamp"),
    pytest.param(_count_usage_twice, "per-turn delta", id="usage-counted-twice"),
    pytest.param("DELETE FROM graph_nodes WHERE node_id = 'u2'", "graph nodes", id="half-written-graph"),
    pytest.param(
        "UPDATE attachment_manifest SET committed_at_ms = NULL WHERE attachment_id = 'att-2-1'",
        "attachments",
        id="attachment-not-stamped",
    ),
    pytest.param("UPDATE session_head SET head_revision = head_revision + 1", "head config", id="head-ahead"),
    pytest.param(
        "INSERT INTO queued_work_batches (batch_id, session_id, source_key, delivery_policy, slot_policy, "
        "merge_key, available_at_ms, enqueued_at_ms, payloads) "
        "VALUES ('qwb:stale', 'crash-session', 'msg-2', 'after_current_turn_commit', 'exclusive', 'never', 0, 0, "
        "x'90')",
        "queue holds",
        id="consumed-batch-still-queued",
    ),
]


@pytest.mark.parametrize(("damage", "complaint"), DAMAGE)
def test_verifier_flags_damage(
    campaign_file: Path, tmp_path: Path, damage: str | Callable[[sqlite3.Connection], None], complaint: str
) -> None:
    db_path = copy_of(campaign_file, tmp_path)
    verify_store(db_path, 5)  # the undamaged copy passes
    conn = sqlite3.connect(db_path)
    with conn:
        if callable(damage):
            damage(conn)
        else:
            conn.execute(damage)
    conn.close()
    with pytest.raises(HarnessError, match=complaint):
        verify_store(db_path, 5)


def test_verifier_flags_a_lost_acknowledged_commit(campaign_file: Path, tmp_path: Path) -> None:
    """A child that acknowledged a turn the file does not hold is reported as a lost commit."""
    db_path = copy_of(campaign_file, tmp_path)
    head = verify_store(db_path, 5)
    claimed = RoundOutcome(ready_head=head, acks=[Ack(turn=head + 1, head_revision=head + 1, checkpoint_ref="x")])
    with pytest.raises(HarnessError, match="acknowledged commit lost"):
        verify_recovery(db_path, 5, head, claimed)


def test_verifier_flags_a_wrong_acknowledged_result(campaign_file: Path, tmp_path: Path) -> None:
    """The stored result of an acknowledged turn must be the one the child was given."""
    db_path = copy_of(campaign_file, tmp_path)
    head = verify_store(db_path, 5)
    claimed = RoundOutcome(ready_head=head - 1, acks=[Ack(turn=head, head_revision=head, checkpoint_ref="0" * 64)])
    with pytest.raises(HarnessError, match=f"acked turn {head}"):
        verify_recovery(db_path, 5, head - 1, claimed)


def test_recovery_finishes_a_turn_whose_claim_a_dead_process_holds(campaign_file: Path, tmp_path: Path) -> None:
    """The dead owner's lease is superseded: the recovered turn commits once, and the stale fence is refused."""
    db_path = copy_of(campaign_file, tmp_path)
    head = verify_store(db_path, 5)
    with Store.open(db_path) as store:
        stale = prepare_turn(store, 5, head + 1, "dead-worker", 0)  # a claim with a live (60 s) lease
    new_head = verify_recovery(db_path, 5, head, RoundOutcome(ready_head=head), rng=random.Random(1), full=True)
    assert new_head == head + 1
    with Store.open(db_path) as store:
        # Its stamp now answers first; without the stamp, the dead owner's claim proof is stale.
        assert store.commit_runtime_state(stale).head_revision == head + 1
        later_turn = turn_commit(5, head + 2, stale.completed_queue_claims)
        with pytest.raises(QueuedWorkClaimExpired):
            store.commit_runtime_state(later_turn)
        assert store.list_queued_work(SESSION_ID) == []
    assert verify_store(db_path, 5) == head + 1
