"""Migrating the schema-v3 layouts of earlier releases (tests/fixtures/schema) to the current one.

Real files only: every test works on a copy of a fixture directory in
``tmp_path`` (the fixtures themselves are never opened), with real SQLite and,
for the crash test, real processes killed with SIGKILL.  What a file must read
back as comes from the fixture's ``expected.json``, recorded by the release
that wrote it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import select
import shutil
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lash_store import GcPolicy, SqliteSessionStoreFactory, Store, StoreOptions
from lash_store.cli import EXIT_ERROR, EXIT_FAILED, EXIT_OK, main
from lash_store.errors import (
    CorruptData,
    HeadRevisionConflict,
    InvalidInput,
    SchemaMigrationRequired,
    SessionsUnreadable,
    StoreNotFound,
    UnsupportedSchemaVersion,
)
from lash_store.model import (
    DeliveryPolicy,
    GraphDelta,
    HydratedCheckpoint,
    QueuedWorkBatchDraft,
    QueuedWorkCompletion,
    QueuedWorkPayload,
    RuntimeCommit,
    SessionNode,
    SessionReadScope,
    SlotPolicy,
    TokenLedgerEntry,
    TokenUsage,
    TurnCommitStamp,
)
from lash_store.sqlite import schema
from lash_store.sqlite.migrations import inspect_revision, migrate_file
from tests.helpers import ManualClock

SCHEMA_DIR = Path(__file__).parent / "fixtures" / "schema"
LAYOUTS = {"v3a": 1, "v3b": 2, "v3c": 3}  # fixture directory -> the layout revision its files carry
OLD_OBJECTS = {"graph_stats", "usage_totals"}  # revision 1 only
OLD_TRIGGERS = {"graph_nodes_count_insert", "graph_nodes_count_update", "graph_nodes_count_delete"}
SIDECARS = ("-wal", "-shm", "-journal")

TOMBSTONED_NODE, LIVE_NODE = "a3", "a4"
MODULE_REF = "module:fixture-plugin@1.0.0"
DRAFT_ATTACHMENT = "att-upload-2"


@dataclass(frozen=True)
class Fixture:
    """A private copy of one fixture directory and what its expected.json says."""

    layout: str
    revision: int
    root: Path  # the copy: session.db and factory/
    expected: dict[str, Any]

    @property
    def session(self) -> Path:
        return self.root / self.expected["session"]["file"]

    @property
    def factory_root(self) -> Path:
        return self.root / self.expected["factory"]["root"]

    @property
    def session_id(self) -> str:
        return str(self.expected["session"]["session_id"])

    @property
    def now_ms(self) -> int:
        """The generation clock: every read in expected.json was taken at this time."""
        return int(self.expected["clock"]["generation_ms"])

    @property
    def read(self) -> dict[str, Any]:
        return dict(self.expected["session"]["read"])

    @property
    def written(self) -> dict[str, Any]:
        return dict(self.expected["session"]["written"])

    def options(self, **fields: Any) -> StoreOptions:
        return StoreOptions(clock=lambda: self.now_ms, **fields)


def copy_fixture(layout: str, destination: Path) -> Fixture:
    source = SCHEMA_DIR / layout
    expected = json.loads((source / "expected.json").read_text(encoding="utf-8"))
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("expected.json"))
    return Fixture(layout, LAYOUTS[layout], destination, expected)


@pytest.fixture(params=sorted(LAYOUTS))
def fx(request: pytest.FixtureRequest, tmp_path: Path) -> Fixture:
    return copy_fixture(request.param, tmp_path / request.param)


def snapshot(directory: Path) -> dict[str, str]:
    """Every file below ``directory`` (relative path -> SHA-256 of its bytes): sidecars would show up too."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def plain(value: Any) -> Any:
    """An API value in expected.json's form: JSON builtins, bytes as lowercase hex."""
    return _hex(msgspec.to_builtins(value, builtin_types=(bytes,)))


def _hex(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {key: _hex(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_hex(item) for item in value]
    return value


# The node fields every layout revision had; revision 4 added indexed fields (lane, sort_key, tags,
# blob_refs) that files written before it cannot hold, so a migrated node has them at their defaults.
NODE_FIELDS = ("node_id", "parent_node_id", "kind", "payload", "timestamp_ms", "agent_frame_id", "caused_by")


def plain_node(node: SessionNode | None) -> Any:
    if node is None:
        return None
    assert (node.lane, node.sort_key, node.tags, node.blob_refs) == (None, None, {}, [])
    return plain({name: getattr(node, name) for name in NODE_FIELDS})


def hex_or_none(content: bytes | None) -> str | None:
    return None if content is None else content.hex()


def read_like_expected(store: Store, fx: Fixture) -> dict[str, Any]:
    """Every read of expected.json's ``read`` section, taken the way the fixture generator took it."""
    full = store.load_session()
    path = store.load_session(SessionReadScope.active_path())
    assert full is not None and path is not None
    return {
        "load_session": {
            "full_graph": {
                "session_id": full.session_id,
                "head_revision": full.head_revision,
                "config": plain(full.config),
                "agent_frames": plain(full.agent_frames),
                "current_agent_frame_id": full.current_agent_frame_id,
                "node_ids": [node.node_id for node in full.graph.nodes],
                "leaf_node_id": full.graph.leaf_node_id,
                "nodes": [plain_node(node) for node in full.graph.nodes],
                "checkpoint_ref": full.checkpoint_ref,
                "checkpoint": plain(full.checkpoint),
                "token_ledger": plain(full.token_ledger),
            },
            "active_path": {
                "node_ids": [node.node_id for node in path.graph.nodes],
                "leaf_node_id": path.graph.leaf_node_id,
            },
        },
        "load_node": {node_id: plain_node(store.load_node(node_id)) for node_id in (TOMBSTONED_NODE, LIVE_NODE)},
        "load_session_meta": plain(store.load_session_meta()),
        "load_picker_info": plain(store.load_picker_info()),
        "graph_node_count": store.graph_node_count(),
        "list_queued_work": plain(store.list_queued_work(fx.session_id)),
        "list_pending_queued_work": plain(store.list_pending_queued_work(fx.session_id)),
        "list_uncommitted": plain(store.list_uncommitted(fx.now_ms)),
        "get_module_artifact": {MODULE_REF: hex_or_none(store.get_module_artifact(MODULE_REF))},
        "get_blob": {ref: hex_or_none(store.get_blob(ref)) for ref in fx.read["get_blob"]},
    }


# Reads whose result depends on the store's clock (a live claim, a delayed batch): ``Store.open_readonly``
# reads the wall clock, long past the generation clock, so these are compared only on clocked stores.
CLOCKED_READS = {"list_pending_queued_work"}


def assert_reads_as_expected(store: Store, fx: Fixture, *, clocked: bool = True) -> None:
    actual = read_like_expected(store, fx)
    for key, wanted in fx.read.items():
        if clocked or key not in CLOCKED_READS:
            assert actual[key] == wanted, f"{fx.layout}: {key} differs after migration"


def sqlite_layout(path: Path) -> dict[str, Any]:
    """The file's version, identity, layout revision and schema objects, read with plain sqlite3."""
    conn = sqlite3.connect(path)
    try:
        objects = conn.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
        revision = None
        if ("table", "lash_schema") in objects:
            revision = conn.execute("SELECT revision FROM lash_schema").fetchone()[0]
        return {
            "user_version": conn.execute("PRAGMA user_version").fetchone()[0],
            "application_id": conn.execute("PRAGMA application_id").fetchone()[0],
            "revision": revision,
            "tables": {name for kind, name in objects if kind == "table"},
            "triggers": {name for kind, name in objects if kind == "trigger"},
            "integrity": conn.execute("PRAGMA integrity_check").fetchone()[0],
        }
    finally:
        conn.close()


def counters_and_recount(path: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """(maintained node and user-message counters, the same counted from the graph)."""
    conn = sqlite3.connect(path)
    try:
        stored = conn.execute("SELECT node_count, user_message_count FROM session_head").fetchone()
        counted = conn.execute(
            "SELECT count(*), count(user_text) FROM graph_nodes WHERE tombstoned = 0",
        ).fetchone()
        return tuple(stored), tuple(counted)
    finally:
        conn.close()


def assert_current_layout(path: Path) -> None:
    facts = sqlite_layout(path)
    assert facts["user_version"] == schema.SCHEMA_VERSION == 3
    assert facts["application_id"] == schema.APPLICATION_ID
    assert facts["revision"] == schema.LAYOUT_REVISION == 4
    assert facts["triggers"] == set()
    assert facts["tables"] - {"sqlite_sequence"} == set(schema.EXPECTED_TABLES)
    assert facts["integrity"] == "ok"
    stored, counted = counters_and_recount(path)
    assert stored == counted


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``lash-store`` in-process; returns (exit code, stdout, stderr)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------
# Without migrate: refused, untouched


def test_fixture_files_are_the_old_revision(fx: Fixture) -> None:
    for path in (fx.session, *sorted(fx.factory_root.glob("*.db"))):
        facts = sqlite_layout(path)
        assert facts["user_version"] == 3
        if fx.revision < 3:  # before the revision was recorded, triggers kept the counters
            assert facts["revision"] is None and facts["triggers"] == OLD_TRIGGERS
        else:
            assert facts["revision"] == fx.revision and facts["triggers"] == set()
        assert (facts["tables"] >= OLD_OBJECTS) == (fx.revision == 1)
        assert inspect_revision(path) == (fx.revision, True)


def test_opening_without_migrate_is_refused_and_touches_nothing(fx: Fixture) -> None:
    before = snapshot(fx.root)
    for open_store in (
        lambda: Store.open(fx.session),
        lambda: Store.open(fx.session, fx.options()),
        lambda: Store.open_readonly(fx.session),
    ):
        with pytest.raises(SchemaMigrationRequired) as raised:
            open_store()
        error = raised.value
        assert (error.found_revision, error.expected_revision, error.path) == (fx.revision, 4, str(fx.session))
        assert f"lash-store migrate {fx.session}" in str(error) and "nothing was modified" in str(error)
        assert snapshot(fx.root) == before  # same bytes, and no -wal/-shm/-journal appeared


@pytest.mark.parametrize(
    "command",
    [["inspect"], ["inspect", "--json"], ["history"], ["verify"], ["export"], ["gc", "--dry-run"], ["gc"], ["vacuum"]],
    ids=lambda c: " ".join(c),
)
def test_commands_on_an_old_file_name_the_migration(
    capsys: pytest.CaptureFixture[str], fx: Fixture, command: list[str]
) -> None:
    before = snapshot(fx.root)
    code, _out, err = cli(capsys, command[0], str(fx.session), *command[1:])
    assert code == EXIT_ERROR
    assert err.startswith("lash-store: error: ") and err.count("\n") == 1
    assert f"`lash-store migrate {fx.session}`" in err and f"layout revision {fx.revision}" in err
    assert snapshot(fx.root) == before


def test_sessions_reports_old_files_as_needing_migration(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    before = snapshot(fx.root)
    code, out, _err = cli(capsys, "sessions", str(fx.factory_root), "--json")
    assert code == EXIT_FAILED
    listing = json.loads(out)
    assert listing["sessions"] == [] and len(listing["errors"]) == 2
    assert all("lash-store migrate" in error["error"] for error in listing["errors"])
    assert snapshot(fx.root) == before


# ---------------------------------------------------------------------------
# Migration


def test_migrate_then_every_read_matches_expected_json(fx: Fixture) -> None:
    blobs_before = _blob_rows(fx.session)
    with Store.open(fx.session, fx.options(), migrate=True) as store:
        assert_reads_as_expected(store, fx)
    assert_current_layout(fx.session)
    # Blobs are never rewritten by a migration (their created_at_ms is what GC's grace period reads).
    assert _blob_rows(fx.session) == blobs_before
    assert [dict(zip(("hash", "encoding", "kind", "raw_size", "created_at_ms"), row, strict=True))
            for row in blobs_before] == fx.expected["session"]["sqlite"]["blobs"]  # fmt: skip
    # Reopened without migrate, read-only or not, it reads the same.
    with Store.open(fx.session, fx.options()) as store:
        assert_reads_as_expected(store, fx)
    with Store.open_readonly(fx.session) as store:
        assert_reads_as_expected(store, fx, clocked=False)


def _blob_rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT hash, encoding, kind, raw_size, created_at_ms FROM blobs ORDER BY hash",
        ).fetchall()
    finally:
        conn.close()


def test_migrate_file_returns_the_old_revision_and_is_idempotent(fx: Fixture) -> None:
    assert migrate_file(fx.session) == fx.revision
    assert inspect_revision(fx.session) == (4, False)
    assert_current_layout(fx.session)
    settled = snapshot(fx.root)
    assert not any(name.endswith(SIDECARS) for name in settled)
    # Again: nothing to do, nothing written, whichever way it is asked for.
    assert migrate_file(fx.session) is None
    Store.open(fx.session, migrate=True).close()
    Store.open(fx.session).close()
    assert snapshot(fx.root) == settled
    with Store.open(fx.session, fx.options()) as store:
        assert_reads_as_expected(store, fx)


def test_racing_migrations_migrate_once(fx: Fixture) -> None:
    results: list[int | None] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def migrate() -> None:
        try:
            start.wait()
            results.append(migrate_file(fx.session))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(results, key=lambda r: r is None) == [fx.revision, None, None, None]
    assert_current_layout(fx.session)


def test_migrated_session_keeps_working(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    clock = ManualClock(fx.now_ms)
    options = StoreOptions(clock=clock, gc_policy=GcPolicy(grace_ms=0))
    written = fx.written
    claim = written["queue"]["live_claim"]
    batch_ids = written["queue"]["batch_ids"]
    with Store.open(fx.session, options, migrate=True) as store:
        before = store.load_session()
        assert before is not None and before.head_revision == 4

        # A turn stamp written by the old release still replays: same result, nothing written.
        turn_4 = written["commits"][3]
        replay = RuntimeCommit(
            session_id=fx.session_id,
            expected_head_revision=3,
            turn_commit=TurnCommitStamp(**turn_4["turn_commit"]),
        )
        assert plain(store.commit_runtime_state(replay)) == turn_4["result"]

        # Turn 5 answers the queued inbox message: the claim the old release granted completes inside the commit.
        clock.advance(1_000)
        completion = QueuedWorkCompletion(
            session_id=claim["session_id"],
            claim_id=claim["claim_id"],
            lease_token=claim["lease_token"],
            batch_ids=claim["batch_ids"],
            fencing_token=claim["fencing_token"],
        )
        assert claim["expires_at_epoch_ms"] > clock()  # the lease is still live
        fifth = store.commit_runtime_state(
            _next_turn(before, 5, "a4", usage=(200, 50)).completing_queue_claim(completion)
        )
        assert fifth.head_revision == 5
        remaining = [batch.batch_id for batch in store.list_queued_work(fx.session_id)]
        assert remaining == [batch_ids["session_command"], batch_ids["process_wake"]]
        # The queue sequence survived the migration: enqueue numbers are never reused.
        extra = store.enqueue_queued_work(
            QueuedWorkBatchDraft.new(
                fx.session_id,
                DeliveryPolicy.EARLIEST_SAFE_BOUNDARY,
                SlotPolicy.JOIN,
                [QueuedWorkPayload.session_command({"name": "noop"})],
            )
        )
        assert extra.enqueue_seq == 4

        # Compare-and-set runs on the migrated revision: a stale writer loses, the current one wins.
        clock.advance(1_000)
        with pytest.raises(HeadRevisionConflict) as conflict:
            store.commit_runtime_state(_next_turn(before, 6, "a5", usage=(1, 1)))
        assert (conflict.value.expected, conflict.value.actual) == (4, 5)
        after_fifth = store.load_session()
        assert after_fifth is not None
        sixth = store.commit_runtime_state(
            msgspec.structs.replace(
                _next_turn(after_fifth, 6, "a5", usage=(300, 70)), expected_head_revision=5
            ).with_committed_attachments([DRAFT_ATTACHMENT])
        )
        assert sixth.head_revision == 6
        assert store.list_uncommitted(clock()) == []

        # Counters and the usage ledger went on from the migrated values.
        assert store.graph_node_count() == fx.read["graph_node_count"] + 4
        picker = store.load_picker_info()
        assert picker is not None and picker.user_message_count == fx.read["load_picker_info"]["user_message_count"] + 2
        session = store.load_session()
        assert session is not None and session.head_revision == 6
        agent_before = next(e for e in before.token_ledger if (e.source, e.model) == ("agent", "model-a"))
        agent_now = next(e for e in session.token_ledger if (e.source, e.model) == ("agent", "model-a"))
        assert agent_now.usage.input_tokens == agent_before.usage.input_tokens + 500
        assert [(e.source, e.model) for e in session.token_ledger] == [(e.source, e.model) for e in before.token_ledger]

        # GC: the orphan and the superseded manifests go; everything a root reaches stays.
        orphan = written["orphan_blob_ref"]
        sub_agent = written["sub_agent_execution_state_ref"]
        report = store.gc_unreachable()
        assert report.skipped_reason is None and report.deleted_blob_count >= 1
        assert store.get_blob(orphan) is None
        assert store.get_blob(sub_agent) is not None
        module = store.get_module_artifact(MODULE_REF)
        assert module is not None and module.hex() == fx.read["get_module_artifact"][MODULE_REF]
        superseded = [commit["result"]["checkpoint_ref"] for commit in written["commits"]] + [fifth.checkpoint_ref]
        assert all(store.get_blob(ref) is None for ref in superseded)
        assert store.load_session() == session  # the head checkpoint still hydrates in full
        final = {
            "full": session,
            "path": store.load_session(SessionReadScope.active_path()),
            "queue": store.list_queued_work(fx.session_id),
            "meta": store.load_session_meta(),
            "picker": store.load_picker_info(),
        }

    # Reopened without migrate (it is current now), everything reads back.
    for reopen in (lambda: Store.open(fx.session, StoreOptions(clock=clock)), lambda: Store.open_readonly(fx.session)):
        with reopen() as store:
            assert store.load_session() == final["full"]
            assert store.load_session(SessionReadScope.active_path()) == final["path"]
            assert store.list_queued_work(fx.session_id) == final["queue"]
            assert store.load_session_meta() == final["meta"]
            assert store.load_picker_info() == final["picker"]
            assert store.get_blob(orphan) is None and store.get_blob(sub_agent) is not None
    assert_current_layout(fx.session)
    code, out, err = cli(capsys, "verify", str(fx.session), "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["ok"] is True


def _next_turn(read: Any, turn: int, parent: str, *, usage: tuple[int, int]) -> RuntimeCommit:
    """A stamped turn on top of ``read``: two messages, the same frames, and a checkpoint reusing its snapshots."""
    nodes = [
        SessionNode(
            node_id=f"u{turn}",
            parent_node_id=parent,
            payload={"role": "user", "parts": [{"type": "text", "text": f"question {turn}"}]},
        ),
        SessionNode(
            node_id=f"a{turn}",
            parent_node_id=f"u{turn}",
            payload={"role": "assistant", "parts": [{"type": "text", "text": f"answer {turn}"}]},
        ),
    ]
    checkpoint = read.checkpoint
    return RuntimeCommit(
        session_id=read.session_id,
        expected_head_revision=read.head_revision,
        config=read.config,
        agent_frames=read.agent_frames,  # the sub-agent frame keeps its execution state reachable
        current_agent_frame_id=read.current_agent_frame_id,
        graph=GraphDelta.append(nodes, f"a{turn}"),
        checkpoint=HydratedCheckpoint(
            turn_state={"turn_index": turn, "phase": "idle"},
            tool_state=checkpoint.tool_state,
            plugin_snapshot=checkpoint.plugin_snapshot,
            plugin_snapshot_revision=checkpoint.plugin_snapshot_revision,
            execution_state=checkpoint.execution_state,
        ),
        usage_deltas=[
            TokenLedgerEntry(
                source="agent", model="model-a", usage=TokenUsage(input_tokens=usage[0], output_tokens=usage[1])
            )
        ],
        turn_commit=TurnCommitStamp(session_id=read.session_id, turn_id=f"turn-{turn}", turn_commit_hash=f"h{turn}"),
    )


# ---------------------------------------------------------------------------
# A newer layout revision


def test_a_newer_revision_is_refused_untouched(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    migrate_file(fx.session)
    conn = sqlite3.connect(fx.session)
    with conn:
        conn.execute("UPDATE lash_schema SET revision = 99")
    conn.close()
    before = snapshot(fx.root)
    for attempt in (
        lambda: Store.open(fx.session),
        lambda: Store.open(fx.session, migrate=True),
        lambda: Store.open_readonly(fx.session),
        lambda: inspect_revision(fx.session),
        lambda: migrate_file(fx.session),
    ):
        with pytest.raises(UnsupportedSchemaVersion) as raised:
            attempt()
        assert (raised.value.kind, raised.value.expected, raised.value.found) == (
            "session layout",
            schema.LAYOUT_REVISION,
            99,
        )
        assert "newer release" in str(raised.value) and "delete" not in str(raised.value)
        assert snapshot(fx.root) == before
    code, out, err = cli(capsys, "migrate", str(fx.session), "--check")
    assert code == 1 and out.startswith("0 need migration") and "newer release" in err
    code, _out, err = cli(capsys, "migrate", str(fx.session))
    assert code == 1 and "newer release" in err and err.count("\n") == 1
    assert snapshot(fx.root) == before


def test_a_layout_the_migration_does_not_know_is_rolled_back(fx: Fixture) -> None:
    # A trigger of no known revision would outlive the tables it names and break every later graph write.
    conn = sqlite3.connect(fx.session)
    with conn:
        conn.execute(
            "CREATE TRIGGER graph_nodes_audit AFTER INSERT ON graph_nodes BEGIN "
            "UPDATE session_head SET head_revision = head_revision; END"
        )
    conn.close()
    before = snapshot(fx.root)
    with pytest.raises(CorruptData) as raised:
        migrate_file(fx.session)
    assert "graph_nodes_audit" in str(raised.value) and "nothing was changed" in str(raised.value)
    assert snapshot(fx.root) == before
    assert inspect_revision(fx.session) == (fx.revision, True)


# ---------------------------------------------------------------------------
# The factory


def test_factory_create_store_needs_migrate(fx: Fixture) -> None:
    factory_expected = fx.expected["factory"]
    files = factory_expected["written"]["files"]
    before = snapshot(fx.root)
    plain_factory = SqliteSessionStoreFactory(fx.factory_root)
    with pytest.raises(SchemaMigrationRequired) as raised:
        plain_factory.create_store("alpha", model="model-a")
    assert raised.value.found_revision == fx.revision and raised.value.path == str(fx.factory_root / files["alpha"])
    with pytest.raises(SessionsUnreadable) as unreadable:  # old files are reported, never modified
        plain_factory.list_sessions()
    assert unreadable.value.sessions == []
    assert all(isinstance(error, SchemaMigrationRequired) for _where, error in unreadable.value.failures)
    assert len(unreadable.value.failures) == 2
    assert snapshot(fx.root) == before

    migrating = SqliteSessionStoreFactory(fx.factory_root, migrate=True)
    assert migrating.path_for_session("alpha").name == files["alpha"]
    with migrating.create_store("alpha", model="another-model") as store:
        wanted = factory_expected["read"]["sessions"]["alpha"]
        assert plain(store.load_session_meta()) == wanted["load_session_meta"]  # written once, never overwritten
        full = store.load_session()
        assert full is not None and full.head_revision == 1
        assert [node.node_id for node in full.graph.nodes] == wanted["load_session"]["node_ids"]
        assert plain(full.token_ledger) == wanted["load_session"]["token_ledger"]
    assert_current_layout(fx.factory_root / files["alpha"])
    beta = fx.factory_root / files["beta/with:odd chars"]
    assert inspect_revision(beta) == (fx.revision, True)  # only the opened session was migrated
    with pytest.raises(SessionsUnreadable) as unreadable:
        plain_factory.list_sessions()
    assert [info.session_id for info in unreadable.value.sessions] == ["alpha"]  # type: ignore[attr-defined]

    with migrating.create_store("beta/with:odd chars") as store:
        assert store.load_session_meta() is not None
    assert plain(plain_factory.list_sessions()) == factory_expected["read"]["list_sessions"]
    with plain_factory.create_store("beta/with:odd chars") as store:  # current now: no flag needed
        assert (
            plain(store.load_session_meta())
            == factory_expected["read"]["sessions"]["beta/with:odd chars"]["load_session_meta"]
        )


def test_factory_migrate_must_be_a_bool(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        SqliteSessionStoreFactory(tmp_path, migrate="yes")  # type: ignore[arg-type]


def test_migrate_file_never_creates_a_database(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFound):
        migrate_file(tmp_path / "missing.db")
    with pytest.raises(StoreNotFound):
        inspect_revision(tmp_path / "missing.db")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------
# Crash safety: SIGKILL a migrating process at random moments

CRASH_ROUNDS = int(os.environ.get("LASH_MIGRATION_KILLS", "30"))
_TIMEOUT_S = 30.0


def _run_migrating_child(path: Path, *, delay_s: float | None = None, until: bytes = b"") -> dict[bytes, float]:
    """Fork a child that migrates ``path``, then closes the store; SIGKILL it and say when what happened.

    The child writes ``s`` when it starts, ``m`` once ``Store.open(path, migrate=True)`` returned (migrated, the
    change still in the ``-wal``) and ``d`` once the store is closed (checkpointed, sidecars gone); then it waits
    to be killed.  The kill comes ``delay_s`` after ``s``, or right after the byte ``until`` arrived.  Returns the
    seconds from ``s`` to each byte that arrived before the kill.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            os.close(read_end)
            os.write(write_end, b"s")
            store = Store.open(path, migrate=True)
            os.write(write_end, b"m")
            store.close()
            os.write(write_end, b"d")
            time.sleep(_TIMEOUT_S)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    arrived: dict[bytes, float] = {}
    try:
        assert _read_byte(read_end) == b"s"
        started = time.perf_counter()
        if delay_s is not None:
            time.sleep(delay_s)
        else:
            while until not in arrived:
                byte = _read_byte(read_end)
                assert byte, "the migrating child failed"
                arrived[byte] = time.perf_counter() - started
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_end)
    return arrived


def _read_byte(fd: int) -> bytes:
    readable, _, _ = select.select([fd], [], [], _TIMEOUT_S)
    assert readable, "the child did not report in time"
    return os.read(fd, 1)


def _logical_state(path: Path) -> tuple[int, int, str]:
    """user_version, application_id and a full SQL dump (schema and rows), after SQLite's own recovery."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return (
            conn.execute("PRAGMA user_version").fetchone()[0],
            conn.execute("PRAGMA application_id").fetchone()[0],
            "\n".join(conn.iterdump()),
        )
    finally:
        conn.close()


def test_a_killed_migration_leaves_the_old_or_the_new_layout(fx: Fixture, tmp_path: Path) -> None:
    pristine = tmp_path / "pristine.db"
    shutil.copyfile(fx.session, pristine)
    reference = tmp_path / "reference.db"
    shutil.copyfile(pristine, reference)
    assert migrate_file(reference) == fx.revision
    old_state, new_state = _logical_state(pristine), _logical_state(reference)
    assert old_state != new_state

    def fresh_copy(name: str) -> Path:
        directory = tmp_path / name
        directory.mkdir()
        shutil.copyfile(pristine, directory / "session.db")
        return directory / "session.db"

    # Killed just after the migration committed, before the checkpoint: the change lives only in the -wal.
    uncheckpointed = fresh_copy("uncheckpointed")
    _run_migrating_child(uncheckpointed, until=b"m")
    assert Path(f"{uncheckpointed}-wal").stat().st_size > 0
    assert _logical_state(uncheckpointed) == new_state

    # How long the steps take here (the median of three runs): opening and migrating up to the commit, then
    # closing (the checkpoint that copies the change into the database file and removes the sidecars).
    runs = []
    for i in range(3):
        measured = fresh_copy(f"measure-{i}")
        runs.append(_run_migrating_child(measured, until=b"d"))
        assert _logical_state(measured) == new_state
    migrated = sorted(run[b"m"] for run in runs)[1]
    closed = max(sorted(run[b"d"] for run in runs)[1], migrated)
    # Two thirds of the kills land from the start up to just past the commit, the rest during the close.
    rng = random.Random(f"{fx.layout}-kills")
    early = CRASH_ROUNDS * 2 // 3
    delays = [migrated * 1.2 * (i + rng.random()) / early for i in range(early)]
    late = CRASH_ROUNDS - early
    delays += [migrated + (closed * 1.2 - migrated) * (i + rng.random()) / late for i in range(late)]
    outcomes: list[str] = []
    for round_number, delay in enumerate(delays):
        path = fresh_copy(f"round-{round_number}")
        _run_migrating_child(path, delay_s=delay)
        # Readable at once, without recovery by a writer: read-only opens either refuse or read everything.
        try:
            with Store.open_readonly(path) as store:
                assert_reads_as_expected(store, fx, clocked=False)
                seen = "new"
        except SchemaMigrationRequired as exc:
            assert exc.found_revision == fx.revision
            seen = "old"
        state = _logical_state(path)
        assert state in (old_state, new_state), f"round {round_number} (kill after {delay * 1000:.1f} ms): mixed"
        outcome = "old" if state == old_state else "new"
        assert outcome == seen
        outcomes.append(outcome)
        with Store.open(path, fx.options(), migrate=True) as store:  # an old file still migrates fine
            assert_reads_as_expected(store, fx)
        assert_current_layout(path)
        assert _logical_state(path) == new_state
    # Both sides of the commit were hit (the first delays land before the file is even opened).
    assert outcomes[0] == "old", outcomes
    print(f"{fx.layout}: migrated after ~{migrated * 1000:.1f} ms, closed after ~{closed * 1000:.1f} ms; "
          f"{outcomes.count('old')} kills left the old layout, "
          f"{outcomes.count('new')} the new one")  # fmt: skip
