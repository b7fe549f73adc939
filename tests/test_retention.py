"""Retention on real files and a real PostgreSQL server: the options' horizons, idle sessions, ``lash-store prune``.

(The per-store rules — only old turn stamps go, nothing live — are in the conformance suite; the
stateful machine interleaves prunes with everything else against the reference.)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lash_store import RetentionPolicy, SqliteSessionStoreFactory, Store, StoreOptions
from lash_store.errors import InvalidInput, StoreBusy
from lash_store.postgres import PostgresSessionStoreFactory, PostgresStore, close_shared_pools
from lash_store.testing import ManualClock
from lash_store.testing.conformance import commit, draft, stamp
from tests.test_cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, run, run_json

DAY_MS = 86_400_000


def _stamped(store: Store | PostgresStore, turns: int, clock: ManualClock | None = None) -> None:
    for index in range(turns):
        if clock is not None and index:
            clock.advance(DAY_MS)
        sid = store.load_session().session_id if store.load_session() is not None else "s"  # type: ignore[union-attr]
        store.commit_runtime_state(commit(session_id=sid, expected=index, turn_commit=stamp(f"t{index}", "h", sid)))


def _age(path: Path, days: float) -> None:
    """Make a session file (and its log) look last written ``days`` ago."""
    when = time.time() - days * 86_400
    for suffix in ("", "-wal"):
        if os.path.exists(f"{path}{suffix}"):
            os.utime(f"{path}{suffix}", (when, when))


# ---------------------------------------------------------------------------
# the options' horizons


def test_the_options_horizon_applies_when_prune_gets_none(tmp_path: Path) -> None:
    clock = ManualClock()
    options = StoreOptions(clock=clock, retention=RetentionPolicy(turn_stamps_ms=2 * DAY_MS))
    with Store.open(tmp_path / "a.db", options) as store:
        _stamped(store, 4, clock)  # stamps at day 0, 1, 2, 3; now is day 3
        report = store.prune()
        assert report.cutoff_epoch_ms == clock() - 2 * DAY_MS and report.turn_stamp_count == 1
        assert store.prune(turn_stamps_older_than_ms=0).turn_stamp_count == 2  # the argument wins (day 1, 2)


@pytest.mark.parametrize(
    ("retention", "field"),
    [
        (RetentionPolicy(turn_stamps_ms=-1), "turn_stamps_ms"),
        (RetentionPolicy(idle_sessions_ms=True), "idle_sessions_ms"),  # type: ignore[arg-type]
        ("30d", "retention"),
    ],
)
def test_a_bad_retention_policy_is_invalid_input_and_opens_nothing(
    tmp_path: Path, retention: object, field: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        Store.open(tmp_path / "a.db", StoreOptions(retention=retention))  # type: ignore[arg-type]
    assert field in raised.value.what
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------
# idle sessions of a SQLite factory root


def _root_with_sessions(root: Path) -> SqliteSessionStoreFactory:
    factory = SqliteSessionStoreFactory(root)
    for session_id in ("old", "old-with-work", "old-but-open", "fresh"):
        with factory.create_store(session_id) as store:
            store.commit_runtime_state(commit(session_id=session_id, expected=0))
            if session_id == "old-with-work":
                store.enqueue_queued_work(draft(session_id))
    for session_id in ("old", "old-with-work", "old-but-open"):
        _age(factory.path_for_session(session_id), 40)
    return factory


def test_idle_sqlite_sessions_go_unless_they_have_work_or_are_open(tmp_path: Path) -> None:
    factory = _root_with_sessions(tmp_path)
    holder = Store.open(factory.path_for_session("old-but-open"))
    _age(factory.path_for_session("old-but-open"), 40)  # opening it created a fresh log
    listing = {info.session_id for info in factory.list_sessions()}
    files = sorted(p.name for p in tmp_path.iterdir())
    # A dry run cannot know which sessions will be open when the real run comes: it lists them too.
    assert factory.prune_idle_sessions(30 * DAY_MS, dry_run=True) == ["old", "old-but-open"]
    assert sorted(p.name for p in tmp_path.iterdir()) == files, "a dry run created or removed a file"
    assert {info.session_id for info in factory.list_sessions()} == listing
    assert factory.prune_idle_sessions(30 * DAY_MS) == ["old"]
    assert {info.session_id for info in factory.list_sessions()} == listing - {"old"}
    assert not factory.path_for_session("old").exists()
    assert holder.commit_runtime_state(commit(session_id="old-but-open", expected=1)).head_revision == 2
    holder.close()
    assert factory.prune_idle_sessions(365 * DAY_MS) == []


def test_a_session_written_since_the_scan_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lash_store.sqlite import retention

    factory = _root_with_sessions(tmp_path)
    scan = retention.idle_session_files

    def scan_then_write(root: Path, cutoff_ms: int) -> list[tuple[Path, retention.Signature]]:
        found = scan(root, cutoff_ms)
        with Store.open(factory.path_for_session("old")) as store:  # a turn lands between scan and deletion
            store.commit_runtime_state(commit(session_id="old", expected=1))
        return found

    monkeypatch.setattr(retention, "idle_session_files", scan_then_write)
    assert factory.prune_idle_sessions(30 * DAY_MS) == ["old-but-open"]  # idle and closed here
    with Store.open_readonly(factory.path_for_session("old")) as store:
        read = store.load_session()
        assert read is not None and read.head_revision == 2


def test_the_factory_options_horizon_and_no_horizon(tmp_path: Path) -> None:
    factory = _root_with_sessions(tmp_path)
    assert factory.prune_idle_sessions() == []  # no horizon anywhere: nothing
    configured = SqliteSessionStoreFactory(tmp_path, StoreOptions(retention=RetentionPolicy(idle_sessions_ms=DAY_MS)))
    assert configured.prune_idle_sessions(dry_run=True) == ["old", "old-but-open"]
    with pytest.raises(InvalidInput):
        configured.prune_idle_sessions(-5)
    assert SqliteSessionStoreFactory(tmp_path / "missing").prune_idle_sessions(DAY_MS) == []


# ---------------------------------------------------------------------------
# idle sessions on PostgreSQL (judged by the database clock)


@pytest.mark.postgres
def test_idle_postgres_sessions_go_unless_they_have_work(pg_dsn: str) -> None:
    factory = PostgresSessionStoreFactory(pg_dsn)
    try:
        for session_id in ("old", "old-with-work", "fresh"):
            with factory.create_store(session_id) as store:
                store.commit_runtime_state(commit(session_id=session_id, expected=0))
                if session_id == "old-with-work":
                    store.enqueue_queued_work(draft(session_id))
        time.sleep(0.3)
        with factory.create_store("fresh") as store:
            store.commit_runtime_state(commit(session_id="fresh", expected=1))
        assert factory.prune_idle_sessions(200, dry_run=True) == ["old"]
        assert sorted(i.session_id for i in factory.list_sessions()) == ["fresh", "old", "old-with-work"]
        assert factory.prune_idle_sessions(200) == ["old"]
        assert sorted(i.session_id for i in factory.list_sessions()) == ["fresh", "old-with-work"]
        with PostgresStore.open(pg_dsn, "old-with-work", create=False) as store:
            assert len(store.list_queued_work("old-with-work")) == 1
    finally:
        close_shared_pools()


@pytest.mark.postgres
def test_a_stale_postgres_handle_of_a_pruned_session_gets_a_typed_error(pg_dsn: str) -> None:
    factory = PostgresSessionStoreFactory(pg_dsn)
    try:
        stale = factory.create_store("gone")
        stale.commit_runtime_state(commit(session_id="gone", expected=0))
        time.sleep(0.05)
        assert factory.prune_idle_sessions(1) == ["gone"]
        from lash_store.errors import StoreNotFound

        with pytest.raises(StoreNotFound, match="deleted"):
            stale.commit_runtime_state(commit(session_id="gone", expected=1))
        with pytest.raises(StoreNotFound):
            stale.load_session()
        stale.close()
        assert factory.list_sessions() == []
    finally:
        close_shared_pools()


# ---------------------------------------------------------------------------
# lash-store prune


def test_prune_command_on_a_root(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    factory = _root_with_sessions(tmp_path)
    for session_id in ("fresh", "old-with-work"):
        with factory.create_store(session_id) as store:
            store.commit_runtime_state(
                commit(session_id=session_id, expected=1, turn_commit=stamp("t", "h", session_id))
            )
    _age(factory.path_for_session("old-with-work"), 40)
    dry = run_json(capsys, "prune", str(tmp_path), "--idle-sessions", "30d", "--stamps-older-than", "0", "--dry-run")
    assert dry["idle_sessions"] == ["old", "old-but-open"] and dry["turn_stamps"] == 2 and dry["dry_run"] is True
    done = run_json(capsys, "prune", str(tmp_path), "--idle-sessions", "30d", "--stamps-older-than", "0")
    assert done["idle_sessions"] == ["old", "old-but-open"] and done["turn_stamps"] == 2
    assert sorted(i.session_id for i in factory.list_sessions()) == ["fresh", "old-with-work"]
    assert run_json(capsys, "prune", str(tmp_path), "--stamps-older-than", "0")["turn_stamps"] == 0


def test_prune_command_on_one_store_and_its_refusals(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with Store.open(tmp_path / "a.db") as store:
        _stamped(store, 3)
    code, out, _err = run(capsys, "prune", str(tmp_path / "a.db"), "--stamps-older-than", "0ms")
    assert code == EXIT_OK and "pruned 3 turn stamps" in out
    for bad in (["--stamps-older-than", "soon"], ["--idle-sessions", "-3d"]):
        with pytest.raises(SystemExit) as raised:
            run(capsys, "prune", str(tmp_path / "a.db"), *bad)
        assert raised.value.code == EXIT_USAGE
    code, _out, err = run(capsys, "prune", str(tmp_path / "a.db"))
    assert code == EXIT_ERROR and "nothing to prune" in err
    code, _out, err = run(capsys, "prune", str(tmp_path / "a.db"), "--idle-sessions", "1d")
    assert code == EXIT_ERROR and "root" in err
    code, _out, err = run(capsys, "prune", str(tmp_path / "missing.db"), "--stamps-older-than", "1d")
    assert code == EXIT_ERROR and not (tmp_path / "missing.db").exists()


@pytest.mark.postgres
def test_prune_command_on_a_postgres_database(capsys: pytest.CaptureFixture[str], pg_dsn: str) -> None:
    factory = PostgresSessionStoreFactory(pg_dsn)
    try:
        for session_id in ("a", "b"):
            with factory.create_store(session_id) as store:
                _stamped(store, 2)
        done = run_json(capsys, "prune", pg_dsn, "--stamps-older-than", "0")
        assert done["turn_stamps"] == 4 and done["errors"] == []
        one = run_json(capsys, "prune", pg_dsn, "--session", "a", "--stamps-older-than", "0", "--dry-run")
        assert one["turn_stamps"] == 0
    finally:
        close_shared_pools()


def test_delete_of_an_in_use_session_is_busy_not_silent(tmp_path: Path) -> None:
    """The same lock protects prune and delete_session: an open store is never deleted under it."""
    factory = SqliteSessionStoreFactory(tmp_path, StoreOptions(busy_timeout_ms=50))
    with factory.create_store("s"), pytest.raises(StoreBusy):
        factory.delete_session("s")
