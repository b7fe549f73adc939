"""Encryption at rest (README, "Encryption at rest"): no conversation byte in plaintext, keys, rotation, rekey.

Every byte and text column of an encrypted store (a SQLite session file, its
WAL and raw bytes; every PostgreSQL table) is scanned for fragments of the
conversation written through every write path; the same scan over a plaintext
store finds them, which shows the scan looks where the data is.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lash_store import KeyRing, PoisonPolicy, SqliteSessionStoreFactory, Store, StoreOptions
from lash_store.core.crypto import Cipher
from lash_store.errors import EncryptionKeyMismatch, EncryptionKeyMissing, InvalidInput
from lash_store.model import (
    AttachmentIntent,
    BlobArtifactDescriptor,
    DeliveryPolicy,
    GraphDelta,
    HydratedCheckpoint,
    QueuedWorkBatchDraft,
    QueuedWorkPayload,
    RuntimeCommit,
    SessionNode,
    SlotPolicy,
    StagedWrite,
    TokenLedgerEntry,
    TokenUsage,
    TurnCommitStamp,
    TurnInput,
)
from lash_store.service.sealed import REF
from lash_store.service.session import SessionService
from lash_store.testing.conformance import IDLE as IDLE_BOUNDARY
from lash_store.testing.conformance import must_claim

RING = KeyRing.generate("k1")

# One fragment per write path; none of them is an id, a kind, a channel or a timestamp (those stay plaintext).
FRAGMENTS = {
    "user": "Zanzibar-user-says-quokka",
    "assistant": "Zanzibar-assistant-replies-narwhal",
    "config": "Zanzibar-config-axolotl",
    "turn_state": "Zanzibar-turn-state-pangolin",
    "tool_state": "Zanzibar-tool-state-okapi",
    "blob": "Zanzibar-raw-blob-capybara",
    "artifact": "Zanzibar-artifact-blob-tapir",
    "module": "Zanzibar-module-bytes-dugong",
    "staged": "Zanzibar-staged-value-ibex",
    "queue": "Zanzibar-queued-input-marmot",
    "tag": "Zanzibar-tag-value-lemur",
    "uri": "Zanzibar-attachment-uri-gecko",
    "stamp": "Zanzibar-turn-hash-wombat",
    "model": "Zanzibar-model-name-serval",
    "error": "Zanzibar-worker-error-tamarin",
}


def populate(store: SessionService, session_id: str, *, revision: int = 0) -> None:
    """Conversation through every write path (commit, blobs, staged writes, queue, attachments, modules)."""
    f = FRAGMENTS
    user = SessionNode(
        node_id=f"u{revision}",
        payload={"role": "user", "parts": [{"type": "text", "text": f["user"]}]},
        tags={"topic": f["tag"]},
    )
    reply = SessionNode(
        node_id=f"a{revision}",
        parent_node_id=f"u{revision}",
        payload={"role": "assistant", "parts": [{"type": "text", "text": f["assistant"]}]},
    )
    commit = RuntimeCommit(
        session_id=session_id,
        expected_head_revision=revision,
        config={"system": f["config"]},
        graph=GraphDelta.append([user, reply], leaf_node_id=f"a{revision}"),
        checkpoint=HydratedCheckpoint(turn_state={"note": f["turn_state"]}, tool_state={"note": f["tool_state"]}),
        usage_deltas=[TokenLedgerEntry(source="turn", model=f["model"], usage=TokenUsage(input_tokens=3))],
    ).with_turn_commit(TurnCommitStamp(session_id=session_id, turn_id=f"turn-{revision}", turn_commit_hash=f["stamp"]))
    assert store.commit_runtime_state(commit).head_revision == revision + 1
    if revision:
        return
    store.put_blob(f["blob"].encode())
    store.put_artifact_blob(BlobArtifactDescriptor.tool_state_snapshot(), f["artifact"].encode())
    store.put_module_artifact("mod:1", f["module"].encode())
    store.put_staged_writes([StagedWrite(anchor_id="a0", task_id="t", idx=0, channel="ch", value=f["staged"])])
    payload = QueuedWorkPayload.turn_input(TurnInput.text(f["queue"]))
    store.enqueue_queued_work(
        QueuedWorkBatchDraft.new(session_id, DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, SlotPolicy.EXCLUSIVE, [payload])
    )
    store.record_intent(
        AttachmentIntent(attachment_id="att-1", session_id=session_id, canonical_uri=f["uri"], intent_at_epoch_ms=1)
    )
    held = must_claim(store, session_id)  # a failed attempt's error text may quote the conversation
    store.abandon_queued_work_claim(held, error=f["error"])


def check_reads(store: SessionService, *, turns: int = 1) -> None:
    """Everything written by ``populate`` reads back as written."""
    f = FRAGMENTS
    read = store.load_session()
    assert read is not None and read.head_revision == turns
    assert read.config == {"system": f["config"]}
    assert read.checkpoint is not None and read.checkpoint.turn_state == {"note": f["turn_state"]}
    texts = [node.payload["parts"][0]["text"] for node in read.graph.nodes]
    assert texts[:2] == [f["user"], f["assistant"]]
    assert "u0" in {node.node_id for node in store.query_nodes(tags={"topic": f["tag"]})}
    assert store.get_module_artifact("mod:1") == f["module"].encode()
    assert [w.value for w in store.load_staged_writes(["a0"])] == [f["staged"]]
    info = store.load_picker_info()
    if info is not None:
        assert info.first_user_message == f["user"]
    assert all(check["ok"] for check in store.verify()), store.verify()


def _found(value: Any) -> set[str]:
    if isinstance(value, memoryview):
        value = bytes(value)
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogatepass")
    if not isinstance(value, bytes):
        return set()
    return {name for name, fragment in FRAGMENTS.items() if fragment.encode() in value}


def scan_sqlite(path: Path) -> set[str]:
    """Fragments found in any column of any table of the file, or anywhere in its bytes and its WAL."""
    found: set[str] = set()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert "graph_nodes" in tables and "blobs" in tables
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    found |= _found(value)
    finally:
        conn.close()
    for file in path.parent.glob(path.name + "*"):  # the database, -wal, -shm
        found |= _found(file.read_bytes())
    return found


def scan_postgres(dsn: str) -> set[str]:
    """Fragments found in any text or bytea column of any table of the lash schema."""
    found: set[str] = set()
    with psycopg.connect(dsn) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'lash' AND data_type IN ('text', 'bytea', 'jsonb', 'json', 'character varying')"
        ).fetchall()
        assert len({table for table, _ in columns}) >= 10
        for table, column in columns:
            for (value,) in conn.execute(f'SELECT "{column}" FROM lash."{table}"'):  # type: ignore[arg-type]
                found |= _found(value)
    return found


# ---------------------------------------------------------------------------
# No plaintext at rest


def test_sqlite_store_holds_no_plaintext(tmp_path: Path) -> None:
    factory = SqliteSessionStoreFactory(tmp_path / "root", StoreOptions(encryption=RING))
    store = factory.create_store("chat-1", model=FRAGMENTS["model"])
    populate(store, "chat-1")
    check_reads(store)
    path = factory.path_for_session("chat-1")
    assert scan_sqlite(path) == set()  # WAL still holds the pages: scanned too
    store.close()
    assert scan_sqlite(path) == set()
    listed = factory.list_sessions()
    assert [info.first_user_message for info in listed] == [FRAGMENTS["user"]]


def test_a_dead_letters_error_is_sealed_and_reads_back(tmp_path: Path) -> None:
    options = StoreOptions(encryption=RING, poison=PoisonPolicy(max_attempts=1, jitter=0.0, backoff_base_ms=0))
    path = tmp_path / "s.db"
    with Store.open(path, options) as store:
        store.enqueue_queued_work(
            QueuedWorkBatchDraft.new(
                "s",
                DeliveryPolicy.EARLIEST_SAFE_BOUNDARY,
                SlotPolicy.EXCLUSIVE,
                [QueuedWorkPayload.turn_input(TurnInput.text("x"))],
            )
        )
        store.abandon_queued_work_claim(must_claim(store, "s"), error=FRAGMENTS["error"])
        assert store.claim_ready_queued_work("s", "w", IDLE_BOUNDARY, 1_000, 1) is None  # dead-lettered now
        [letter] = store.list_dead_letters("s")
        assert letter.last_error == FRAGMENTS["error"]
        assert store.get_dead_letter("s", letter.batch.batch_id) == letter
    assert FRAGMENTS["error"].encode() not in path.read_bytes()


def test_the_root_catalogue_holds_no_plaintext_and_lists_with_the_ring(tmp_path: Path) -> None:
    from lash_store.sqlite.catalog import CATALOG_NAME

    factory = SqliteSessionStoreFactory(tmp_path / "root", StoreOptions(encryption=RING), keep_catalog=True)
    with factory.create_store("chat-1", model=FRAGMENTS["model"]) as store:
        populate(store, "chat-1")
    assert [info.first_user_message for info in factory.list_sessions()] == [FRAGMENTS["user"]]
    assert [s.info.first_user_message for s in factory.recent_sessions().sessions] == [FRAGMENTS["user"]]
    catalogue = factory.root / CATALOG_NAME
    stored = catalogue.read_bytes()
    assert [name for name, text in FRAGMENTS.items() if text.encode() in stored] == []
    # a fresh process with the ring uses the sealed entries; another ring cannot open them and reads the files
    fresh = SqliteSessionStoreFactory(factory.root, StoreOptions(encryption=RING))
    assert [s.info.first_user_message for s in fresh.recent_sessions().sessions] == [FRAGMENTS["user"]]
    other = KeyRing.generate("k7")
    page = SqliteSessionStoreFactory(factory.root, StoreOptions(encryption=other)).recent_sessions()
    assert page.sessions == [] and len(page.failures) == 1 and "k1" in page.failures[0][1]


def test_the_scan_finds_a_plaintext_store(tmp_path: Path) -> None:
    factory = SqliteSessionStoreFactory(tmp_path / "root")
    with factory.create_store("chat-1", model=FRAGMENTS["model"]) as store:
        populate(store, "chat-1")
    found = scan_sqlite(factory.path_for_session("chat-1"))
    assert found == set(FRAGMENTS), set(FRAGMENTS) - found


@pytest.mark.postgres
def test_postgres_recent_listing_opens_each_row_in_its_partition(pg_dsn: str) -> None:
    from lash_store.postgres import PostgresSessionStoreFactory

    factory = PostgresSessionStoreFactory(pg_dsn, StoreOptions(encryption=RING))
    for name in ("chat-1", "chat-2"):
        with factory.create_store(name, model=FRAGMENTS["model"]) as store:
            populate(store, name)
    page = factory.recent_sessions()
    assert sorted(s.info.session_id for s in page.sessions) == ["chat-1", "chat-2"]
    assert {s.info.first_user_message for s in page.sessions} == {FRAGMENTS["user"]} and page.failures == []


@pytest.mark.postgres
def test_postgres_store_holds_no_plaintext(pg_dsn: str) -> None:
    from lash_store.postgres import PostgresSessionStoreFactory

    factory = PostgresSessionStoreFactory(pg_dsn, StoreOptions(encryption=RING))
    with factory.create_store("chat-1", model=FRAGMENTS["model"]) as store:
        populate(store, "chat-1")
        check_reads(store)
        populate(store, "chat-1", revision=1)
    assert scan_postgres(pg_dsn) == set()
    assert [info.first_user_message for info in factory.list_sessions()] == [FRAGMENTS["user"]]
    plain = PostgresSessionStoreFactory(pg_dsn)
    with plain.create_store("chat-2", model=FRAGMENTS["model"]) as store:
        populate(store, "chat-2")
    assert scan_postgres(pg_dsn) == set(FRAGMENTS)  # the scan sees plaintext where there is some


# ---------------------------------------------------------------------------
# Keys


def _encrypted_file(tmp_path: Path, ring: KeyRing = RING) -> Path:
    path = tmp_path / "s.db"
    with Store.open(path, StoreOptions(encryption=ring)) as store:
        populate(store, "chat-1")
    return path


def test_opened_without_keys_fails_typed(tmp_path: Path) -> None:
    path = _encrypted_file(tmp_path)
    with Store.open(path) as store:
        with pytest.raises(EncryptionKeyMissing, match="'k1'") as caught:
            store.load_session()
        assert caught.value.key_id == "k1"
        with pytest.raises(EncryptionKeyMissing):
            store.load_node("u0")
        with pytest.raises(EncryptionKeyMissing):
            store.list_queued_work("chat-1")
    with Store.open_readonly(path) as store, pytest.raises(EncryptionKeyMissing):
        store.load_session()


def test_a_missing_key_id_is_typed_and_named(tmp_path: Path) -> None:
    path = _encrypted_file(tmp_path)
    other = KeyRing(keys={"k9": KeyRing.generate_key()}, current="k9", index_key=RING.index_key)
    with Store.open(path, StoreOptions(encryption=other)) as store:
        with pytest.raises(EncryptionKeyMissing, match="'k1'") as caught:
            store.load_session()
        assert caught.value.key_id == "k1"
        with pytest.raises(EncryptionKeyMissing, match="'k1'"):
            store.get_module_artifact("mod:1")


def test_a_wrong_key_is_typed_and_named(tmp_path: Path) -> None:
    path = _encrypted_file(tmp_path)
    wrong = KeyRing(keys={"k1": KeyRing.generate_key()}, current="k1", index_key=RING.index_key)
    with Store.open(path, StoreOptions(encryption=wrong)) as store:
        with pytest.raises(EncryptionKeyMismatch, match="'k1'") as caught:
            store.load_session()
        assert caught.value.key_id == "k1"
        with pytest.raises(EncryptionKeyMismatch):
            store.list_queued_work("chat-1")
    wrong_index = KeyRing(keys=RING.keys, current="k1", index_key=KeyRing.generate_key())
    with Store.open(path, StoreOptions(encryption=wrong_index)) as store, pytest.raises(EncryptionKeyMismatch):
        store.load_session()


@pytest.mark.parametrize(
    "ring",
    [
        KeyRing(keys={"k1": b"short"}, current="k1", index_key=bytes(32)),
        KeyRing(keys={"k1": bytes(32)}, current="k2", index_key=bytes(32)),
        KeyRing(keys={"bad id!": bytes(32)}, current="bad id!", index_key=bytes(32)),
        KeyRing(keys={}, current="k1", index_key=bytes(32)),
        KeyRing(keys={"k1": bytes(32)}, current="k1", index_key=b"x"),
        KeyRing(keys={"k1": "not bytes"}, current="k1", index_key=bytes(32)),  # type: ignore[dict-item]
    ],
)
def test_bad_key_material_is_invalid_input_and_writes_nothing(tmp_path: Path, ring: KeyRing) -> None:
    path = tmp_path / "s.db"
    with pytest.raises(InvalidInput) as caught:
        Store.open(path, StoreOptions(encryption=ring))
    assert "short" not in str(caught.value) and str(bytes(32)) not in str(caught.value)
    assert not path.exists()
    with pytest.raises(InvalidInput):
        SqliteSessionStoreFactory(tmp_path / "root", StoreOptions(encryption=ring)).create_store("s")
    assert list(tmp_path.rglob("*.db")) == []


def test_key_bytes_never_show_in_repr() -> None:
    assert RING.keys["k1"].hex() not in repr(RING) and "k1" in repr(RING)
    assert RING.keys["k1"].hex() not in repr(StoreOptions(encryption=RING))


def test_ciphertext_is_bound_to_its_row(tmp_path: Path) -> None:
    path = _encrypted_file(tmp_path)
    conn = sqlite3.connect(path)
    with conn:  # move the user node's sealed body onto the assistant node
        (body,) = conn.execute("SELECT body FROM graph_nodes WHERE node_id = 'u0'").fetchone()
        conn.execute("UPDATE graph_nodes SET body = ? WHERE node_id = 'a0'", (body,))
    conn.close()
    with Store.open(path, StoreOptions(encryption=RING)) as store, pytest.raises(EncryptionKeyMismatch):
        store.load_session()


def test_a_plaintext_store_opened_with_keys_keeps_working_in_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Store.open(path) as store:
        populate(store, "chat-1")
    with Store.open(path, StoreOptions(encryption=RING)) as store:
        check_reads(store)
        populate(store, "chat-1", revision=1)
        check_reads(store, turns=2)
        with pytest.raises(InvalidInput, match="plaintext"):
            store.rekey()
    with Store.open(path) as store:  # still readable without keys: nothing was sealed
        check_reads(store, turns=2)


# ---------------------------------------------------------------------------
# Content addressing


def test_addresses_do_not_show_equal_contents_across_rings_or_partitions(tmp_path: Path) -> None:
    content = b"the same attachment in two stores"
    hashes = []
    for index in range(2):
        with Store.open(tmp_path / f"{index}.db", StoreOptions(encryption=KeyRing.generate())) as store:
            ref = store.put_blob(content)
            assert store.get_blob(ref) == content
        conn = sqlite3.connect(tmp_path / f"{index}.db")
        hashes.append([row[0] for row in conn.execute("SELECT hash FROM blobs")])
        conn.close()
    assert ref not in hashes[0] + hashes[1]  # the public SHA-256 ref is nowhere
    assert set(hashes[0]).isdisjoint(hashes[1])  # two rings: no shared address
    # within one ring, PostgreSQL partitions address apart (a session file is its own partition)
    assert Cipher(RING, "s1").address(REF, ref) != Cipher(RING, "s2").address(REF, ref)
    # rotation never moves an address: it depends on the index key only
    assert Cipher(RING.rotated("k2")).address(REF, ref) == Cipher(RING).address(REF, ref)


# ---------------------------------------------------------------------------
# Rotation and rekey


def test_rekey_reseals_everything_and_the_old_key_can_go(tmp_path: Path) -> None:
    path = _encrypted_file(tmp_path)
    rotated = RING.rotated("k2")
    with Store.open(path, StoreOptions(encryption=rotated)) as store:
        check_reads(store)  # old values open with k1, new ones are sealed with k2
        populate(store, "chat-1", revision=1)
        first = store.rekey(batch_size=2)
        assert first.key_id == "k2" and first.remaining_key_ids == []
        assert first.resealed["nodes"] == 2 and first.resealed["blobs"] >= 4 and first.resealed["head"] == 0
        again = store.rekey(batch_size=2)  # resumable: a second run finds nothing left
        assert sum(again.resealed.values()) == 0
    with Store.open(path, StoreOptions(encryption=rotated.without("k1"))) as store:
        check_reads(store, turns=2)
    assert scan_sqlite(path) == set()


def _rotation_writer(
    target: str, ring: tuple[dict[str, bytes], str, bytes], stop: Any, log: str, session: str | None = None
) -> None:
    from lash_store.targets import open_store

    keys, current, index_key = ring
    options = StoreOptions(encryption=KeyRing(keys=keys, current=current, index_key=index_key))
    with open_store(target, session, options=options) as store:
        revision = store.load_session().head_revision  # type: ignore[union-attr]
        while not stop.is_set() or revision < 40:
            populate(store, session or "chat-1", revision=revision)
            revision += 1
            store.put_blob(f"{FRAGMENTS['blob']}-{revision}".encode())
            Path(log).write_text(str(revision))


@pytest.mark.timeout(240)
def test_rotation_under_load(tmp_path: Path) -> None:
    """A writer process commits (with the new key current) while rekey runs; all data readable, no plaintext."""
    path = _encrypted_file(tmp_path)
    with Store.open(path, StoreOptions(encryption=RING)) as store:
        for revision in range(1, 30):  # plenty of rows under k1
            populate(store, "chat-1", revision=revision)
            store.put_blob(f"{FRAGMENTS['blob']}-old-{revision}".encode())
    rotated = RING.rotated("k2")
    log = tmp_path / "revision.log"
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    writer = context.Process(
        target=_rotation_writer, args=(str(path), (rotated.keys, rotated.current, rotated.index_key), stop, str(log))
    )
    writer.start()
    try:
        deadline = time.monotonic() + 60
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        with Store.open(path, StoreOptions(encryption=rotated)) as store:
            reports = []
            while writer.is_alive() and len(reports) < 3:
                reports.append(store.rekey(batch_size=7))  # bounded batches between the writer's commits
            assert reports and sum(reports[0].resealed.values()) > 0
    finally:
        stop.set()
        writer.join(timeout=120)
        if writer.is_alive():
            writer.kill()
    assert writer.exitcode == 0
    with Store.open(path, StoreOptions(encryption=rotated)) as store:
        final = store.rekey(batch_size=50)
        assert final.remaining_key_ids == []
    turns = int(log.read_text())
    with Store.open(path, StoreOptions(encryption=rotated.without("k1"))) as store:
        check_reads(store, turns=turns)
        assert len(store.load_session().graph.nodes) == 2 * turns  # type: ignore[union-attr]
    assert scan_sqlite(path) == set()


@pytest.mark.postgres
def test_postgres_rekey(pg_dsn: str) -> None:
    from lash_store.postgres import PostgresStore

    session = f"s-{uuid.uuid4().hex[:8]}"
    with PostgresStore.open(pg_dsn, session, StoreOptions(encryption=RING)) as store:
        populate(store, session)
    rotated = RING.rotated("k2")
    with PostgresStore.open(pg_dsn, session, StoreOptions(encryption=rotated)) as store:
        populate(store, session, revision=1)
        report = store.rekey(batch_size=3)
        assert report.remaining_key_ids == [] and report.resealed["nodes"] == 2
    with PostgresStore.open(pg_dsn, session, StoreOptions(encryption=rotated.without("k1"))) as store:
        check_reads(store, turns=2)
    with PostgresStore.open(pg_dsn, session) as store, pytest.raises(EncryptionKeyMissing, match="'k2'"):
        store.load_session()
    assert scan_postgres(pg_dsn) == set()


def test_cli_rekey_of_a_factory_root(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    root = tmp_path / "root"
    factory = SqliteSessionStoreFactory(root, StoreOptions(encryption=RING))
    for session in ("a", "b"):
        with factory.create_store(session) as store:
            populate(store, session)
    rotated = RING.rotated("k2")
    keys = tmp_path / "ring.json"
    keys.write_text(rotated.to_json())
    assert KeyRing.from_json(keys.read_text()) == rotated

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "lash_store.cli", "rekey", "--json", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    done = run("--keys", str(keys), "--batch", "3", str(root))
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["stores"] == 2 and data["remaining_key_ids"] == [] and data["resealed"]["nodes"] == 4
    assert RING.keys["k1"].hex() not in done.stdout + done.stderr
    keys.write_text(rotated.without("k1").to_json())
    again = run("--keys", str(keys), str(root))
    assert again.returncode == 0, again.stderr
    assert sum(json.loads(again.stdout)["resealed"].values()) == 0
    reader = SqliteSessionStoreFactory(root, StoreOptions(encryption=rotated.without("k1")))
    assert sorted(info.first_user_message for info in reader.list_sessions()) == [FRAGMENTS["user"]] * 2
    keys.write_text('{"current": "k1", "keys": {"k1": "c2hvcnQ="}, "index_key": ""}')
    bad = run("--keys", str(keys), str(root))
    assert bad.returncode != 0 and "key ring" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_reads_an_encrypted_store_with_its_key_ring(tmp_path: Path) -> None:
    """inspect, history, sessions, stats, verify and export take --keys (or $LASH_STORE_KEYS); without it they
    stop with EncryptionKeyMissing, and with the wrong ring with EncryptionKeyMismatch -- never a traceback."""
    import subprocess
    import sys

    root = tmp_path / "root"
    factory = SqliteSessionStoreFactory(root, StoreOptions(encryption=RING))
    with factory.create_store("chat") as store:
        populate(store, "chat")
    db = str(factory.path_for_session("chat"))
    keys = tmp_path / "ring.json"
    keys.write_text(RING.to_json())
    wrong = tmp_path / "wrong.json"
    wrong.write_text(KeyRing.generate("k1").to_json())
    before = {path.name: path.read_bytes() for path in root.iterdir()}

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        environment = {k: v for k, v in os.environ.items() if k != "LASH_STORE_KEYS"} | (env or {})
        command = [sys.executable, "-m", "lash_store.cli", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment)

    history = run("history", "--json", db, "--keys", str(keys))
    assert history.returncode == 0, history.stderr
    assert FRAGMENTS["user"] in history.stdout and FRAGMENTS["assistant"] in history.stdout
    from_env = run("history", "--json", db, env={"LASH_STORE_KEYS": str(keys)})
    assert from_env.returncode == 0 and from_env.stdout == history.stdout
    inspected = run("inspect", "--json", db, "--keys", str(keys))
    assert inspected.returncode == 0, inspected.stderr
    listed = run("sessions", "--json", str(root), "--keys", str(keys))
    assert listed.returncode == 0, listed.stderr
    assert FRAGMENTS["user"] in listed.stdout
    for command in (["stats", "--json", db], ["verify", "--json", db]):
        done = run(*command, "--keys", str(keys))
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    exported = run("export", "--json", db, "-o", str(tmp_path / "chat.json"), "--keys", str(keys))
    assert exported.returncode == 0, exported.stderr
    plain = str(tmp_path / "plain.db")  # exports are plaintext by design: imported without a ring, it reads
    assert run("import", "--json", str(tmp_path / "chat.json"), plain).returncode == 0
    assert FRAGMENTS["assistant"] in run("history", "--json", plain).stdout
    missing = run("history", "--json", db)
    assert missing.returncode != 0 and "EncryptionKeyMissing" in missing.stdout and "Traceback" not in missing.stderr
    mismatched = run("history", "--json", db, "--keys", str(wrong))
    assert mismatched.returncode != 0 and "EncryptionKeyMismatch" in mismatched.stdout
    assert "Traceback" not in mismatched.stderr
    assert FRAGMENTS["user"] not in mismatched.stdout
    assert {path.name: path.read_bytes() for path in root.iterdir() if path.name in before} == before  # read only


@pytest.mark.postgres
@pytest.mark.timeout(240)
def test_postgres_rotation_under_load(pg_dsn: str) -> None:
    """The same on PostgreSQL: a writer process commits under the new key while rekey runs in batches."""
    from lash_store.postgres import PostgresStore, close_shared_pools

    session = "rotating"
    with PostgresStore.open(pg_dsn, session, StoreOptions(encryption=RING)) as store:
        for revision in range(20):
            populate(store, session, revision=revision)
    rotated = RING.rotated("k2")
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"lash-rotation-{uuid.uuid4().hex}.log"
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    args = (pg_dsn, (rotated.keys, rotated.current, rotated.index_key), stop, str(log), session)
    writer = context.Process(target=_rotation_writer, args=args)
    writer.start()
    try:
        deadline = time.monotonic() + 60
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        with PostgresStore.open(pg_dsn, session, StoreOptions(encryption=rotated)) as store:
            first = store.rekey(batch_size=5)
            assert sum(first.resealed.values()) > 0
    finally:
        stop.set()
        writer.join(timeout=120)
        if writer.is_alive():
            writer.kill()
    assert writer.exitcode == 0
    turns = int(log.read_text())
    log.unlink()
    with PostgresStore.open(pg_dsn, session, StoreOptions(encryption=rotated)) as store:
        assert store.rekey(batch_size=50).remaining_key_ids == []
    with PostgresStore.open(pg_dsn, session, StoreOptions(encryption=rotated.without("k1"))) as store:
        check_reads(store, turns=turns)
    close_shared_pools()
    assert scan_postgres(pg_dsn) == set()


def test_rekey_needs_a_ring_and_a_database(tmp_path: Path) -> None:
    from lash_store.testing.reference import ReferenceStore

    with Store.open(tmp_path / "plain.db") as store, pytest.raises(InvalidInput, match="key ring"):
        store.rekey()
    with ReferenceStore(StoreOptions(encryption=RING)) as reference:
        populate(reference, "chat-1")
        check_reads(reference)  # the reference store seals through the same layer
        with pytest.raises(InvalidInput, match="reference"):
            reference.rekey()
    with Store.open(tmp_path / "s.db", StoreOptions(encryption=RING)) as store, pytest.raises(InvalidInput):
        store.rekey(batch_size=0)


def test_plaintext_planted_in_an_encrypted_store_is_refused(tmp_path: Path) -> None:
    """A downgrade (a sealed value replaced by a plaintext one) is damage, never data."""
    from lash_store.core import codec
    from lash_store.errors import CorruptData

    path = _encrypted_file(tmp_path)
    with Store.open(tmp_path / "plain.db") as plain:
        populate(plain, "chat-1")
    source = sqlite3.connect(tmp_path / "plain.db")
    (plain_body,) = source.execute("SELECT body FROM graph_nodes WHERE node_id = 'u0'").fetchone()
    source.close()
    assert codec.decode_any("node", plain_body)  # a perfectly good plaintext node
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE graph_nodes SET body = ? WHERE node_id = 'u0'", (plain_body,))
        conn.execute("UPDATE graph_nodes SET user_text = 'planted' WHERE node_id = 'u0'")
    conn.close()
    with Store.open(path, StoreOptions(encryption=RING)) as store:
        with pytest.raises(CorruptData, match="not sealed"):
            store.load_session()
        with pytest.raises(CorruptData, match="not sealed"):
            store.load_node("u0")
        with pytest.raises(CorruptData, match="not sealed"):
            store.export_session()  # the planted user text too
        assert store.get_module_artifact("mod:1") == FRAGMENTS["module"].encode()  # the rest still reads


def test_a_queue_row_sealed_under_a_wrong_key_is_typed(tmp_path: Path) -> None:
    path = _encrypted_file(tmp_path)
    other = Cipher(KeyRing(keys={"k1": KeyRing.generate_key()}, current="k1", index_key=RING.index_key))
    conn = sqlite3.connect(path)
    with conn:
        (batch_id,) = conn.execute("SELECT batch_id FROM queued_work_batches").fetchone()
        forged = other.seal(b"queue-payloads", batch_id, b"\x90")
        conn.execute("UPDATE queued_work_batches SET payloads = ?", (forged,))
    conn.close()
    with Store.open(path, StoreOptions(encryption=RING)) as store, pytest.raises(EncryptionKeyMismatch) as caught:
        store.list_queued_work("chat-1")
    assert caught.value.key_id == "k1" and batch_id in str(caught.value)
