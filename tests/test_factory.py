"""SqliteSessionStoreFactory: file names, metadata written once, deletion, listing, tier."""

from __future__ import annotations

import datetime
import os
import re
import sqlite3
import stat
from pathlib import Path

import pytest

from lash_store import SqliteSessionStoreFactory, Store, StoreOptions
from lash_store.errors import StoreError
from lash_store.model import DurabilityTier, SessionGraph, SessionMeta, SessionPickerInfo, SessionRelation
from tests.helpers import commit_at, message

RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")

VECTORS = [
    ("../weird/session", "weird_session-7a2d2bada3f30bfe.db"),
    ("chat/alpha", "chat_alpha-d8d20168f855065d.db"),
    ("root", "root-4813494d137e1631.db"),
    ("", "session-e3b0c44298fc1c14.db"),
    ("___", "session-bda251550bf0478f.db"),
    ("héllo wörld", "h_llo_w_rld-a1003f7d04a41157.db"),
    ("delete/me", "delete_me-cc812727fc741128.db"),
    ("a" * 100, "a" * 80 + "-2816597888e4a0d3.db"),
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "sessions"


@pytest.fixture
def factory(root: Path) -> SqliteSessionStoreFactory:
    return SqliteSessionStoreFactory(root)


# ---------------------------------------------------------------------------
# file names


@pytest.mark.parametrize(("session_id", "file_name"), VECTORS, ids=[f"v{i}" for i in range(len(VECTORS))])
def test_file_name_vectors(factory: SqliteSessionStoreFactory, root: Path, session_id: str, file_name: str) -> None:
    path = factory.path_for_session(session_id)
    assert isinstance(path, Path)
    assert path.name == file_name
    assert path.parent == root


@pytest.mark.parametrize(
    "session_id",
    ["../weird/session", "../../etc/passwd", "/abs/path", "a/../../b", "..", ".", "x\\y", "日本語", "-x-", "tab\tid"],
)
def test_path_for_session_is_deterministic_and_inside_root(
    factory: SqliteSessionStoreFactory, root: Path, session_id: str
) -> None:
    first = factory.path_for_session(session_id)
    second = SqliteSessionStoreFactory(root).path_for_session(session_id)
    assert first == second
    assert first.parent == root
    assert first.name.endswith(".db")
    assert "/" not in first.name and "\\" not in first.name
    assert first.name not in {".db", "..db"}
    assert os.path.commonpath([first.resolve(), root.resolve()]) == str(root.resolve())


def test_ids_that_sanitise_alike_get_distinct_files(factory: SqliteSessionStoreFactory) -> None:
    ids = ["chat/alpha", "chat_alpha", "chat.alpha", "chat alpha", "chat\\alpha", "chat/alpha/"]
    paths = {factory.path_for_session(session_id) for session_id in ids}
    assert len(paths) == len(ids)


# ---------------------------------------------------------------------------
# create_store


def test_create_store_creates_root_and_metadata(factory: SqliteSessionStoreFactory, root: Path) -> None:
    assert not root.exists()
    before = datetime.datetime.now(datetime.UTC)
    with factory.create_store("chat/alpha", model="first-model") as store:
        assert store.path == factory.path_for_session("chat/alpha")
        meta = store.load_session_meta()
    after = datetime.datetime.now(datetime.UTC)
    assert factory.path_for_session("chat/alpha").is_file()
    assert meta is not None
    assert meta.session_id == "chat/alpha"
    assert meta.session_name == "chat/alpha"
    assert meta.model == "first-model"
    assert meta.relation == SessionRelation.root()
    assert meta.cwd == os.getcwd()
    created = datetime.datetime.fromisoformat(meta.created_at)
    assert created.tzinfo is not None, "created_at must carry a UTC offset (RFC 3339)"
    assert RFC3339.fullmatch(meta.created_at), meta.created_at
    assert before - datetime.timedelta(seconds=2) <= created <= after + datetime.timedelta(seconds=2)


def test_metadata_is_created_once_and_preserved(factory: SqliteSessionStoreFactory) -> None:
    """Acceptance scenario B-4."""
    relation = SessionRelation.child("parent")
    with factory.create_store("chat/alpha", model="first-model", relation=relation) as store:
        meta = store.load_session_meta()
        assert meta is not None
        assert (meta.session_id, meta.model) == ("chat/alpha", "first-model")
        assert meta.relation == relation
        assert meta.relation.kind == "child" and meta.relation.parent_session_id == "parent"
        store.save_session_meta(
            SessionMeta(
                session_id="chat/alpha",
                session_name="Renamed",
                created_at="original",
                model="preserved-model",
                cwd="/tmp/original",
                relation=relation,
            )
        )
    with factory.create_store("chat/alpha", model="second-model", relation=SessionRelation.root()) as store:
        meta = store.load_session_meta()
    assert meta is not None
    assert meta.session_name == "Renamed"
    assert meta.model == "preserved-model"
    assert meta.created_at == "original"
    assert meta.cwd == "/tmp/original"
    assert meta.relation == relation


def test_recreate_keeps_created_at_and_data(factory: SqliteSessionStoreFactory) -> None:
    with factory.create_store("s1", model="m1") as store:
        first = store.load_session_meta()
        store.commit_runtime_state(commit_at("s1", 0))
    with factory.create_store("s1", model="m2") as store:
        again = store.load_session_meta()
        read = store.load_session()
    assert first == again
    assert read is not None and read.head_revision == 1 and read.session_id == "s1"


def test_child_relation_with_cause_is_stored(factory: SqliteSessionStoreFactory) -> None:
    relation = SessionRelation.child("parent-session", caused_by={"tool_call_id": "call-7", "depth": 2})
    with factory.create_store("child", model="m", relation=relation) as store:
        meta = store.load_session_meta()
        info = store.load_picker_info()
    assert meta is not None and meta.relation == relation
    assert info is not None and info.relation == relation


def test_create_store_uses_the_factory_options(root: Path) -> None:
    options = StoreOptions(busy_timeout_ms=1234)
    factory = SqliteSessionStoreFactory(root, options)
    with factory.create_store("opts") as store:
        assert store.options.busy_timeout_ms == 1234


def test_create_store_files_are_private(factory: SqliteSessionStoreFactory) -> None:
    old = os.umask(0)
    try:
        with factory.create_store("private") as store:
            store.commit_runtime_state(commit_at("private", 0))
            path = factory.path_for_session("private")
            for suffix in ("", "-wal", "-shm"):
                assert stat.S_IMODE(Path(f"{path}{suffix}").stat().st_mode) == 0o600, suffix
    finally:
        os.umask(old)


def test_create_store_refuses_a_foreign_file(factory: SqliteSessionStoreFactory, root: Path) -> None:
    root.mkdir()
    path = factory.path_for_session("taken")
    path.write_text("someone else's notes\n" * 10)
    before = path.read_bytes()
    with pytest.raises(StoreError):
        factory.create_store("taken")
    assert path.read_bytes() == before


# ---------------------------------------------------------------------------
# delete_session


def test_delete_session_removes_database_and_sidecars(factory: SqliteSessionStoreFactory) -> None:
    store = factory.create_store("delete/me", model="m")
    store.commit_runtime_state(commit_at("delete/me", 0))
    path = factory.path_for_session("delete/me")
    assert path.exists() and Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()
    store.close()
    factory.delete_session("delete/me")
    for suffix in ("", "-wal", "-shm"):
        assert not Path(f"{path}{suffix}").exists(), suffix
    factory.delete_session("delete/me")  # idempotent
    with factory.create_store("delete/me", model="fresh") as fresh:
        assert fresh.load_session() is None
        meta = fresh.load_session_meta()
        assert meta is not None and meta.model == "fresh"


def test_delete_session_removes_dummy_files_idempotently(factory: SqliteSessionStoreFactory, root: Path) -> None:
    """Acceptance scenario B-6."""
    root.mkdir()
    path = factory.path_for_session("delete/me")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").write_bytes(b"dummy")
    neighbour = factory.path_for_session("keep/me")
    neighbour.write_bytes(b"keep")
    factory.delete_session("delete/me")
    factory.delete_session("delete/me")
    for suffix in ("", "-wal", "-shm"):
        assert not Path(f"{path}{suffix}").exists(), suffix
    assert neighbour.read_bytes() == b"keep"


def test_delete_session_when_nothing_exists(factory: SqliteSessionStoreFactory, root: Path) -> None:
    assert not root.exists()
    factory.delete_session("never-created")  # no root directory at all
    root.mkdir()
    factory.delete_session("never-created")  # root exists, files do not
    Path(f"{factory.path_for_session('only-wal')}-wal").write_bytes(b"stray")
    factory.delete_session("only-wal")  # only a sidecar exists
    assert list(root.iterdir()) == []


# ---------------------------------------------------------------------------
# list_sessions


def _commit_messages(store: Store, session_id: str, *texts: str) -> None:
    nodes = []
    parent = None
    for index, text in enumerate(texts):
        node = message(f"{session_id}-{index}", "user" if index % 2 == 0 else "assistant", text, parent)
        nodes.append(node)
        parent = node.node_id
    graph = SessionGraph(nodes=nodes, leaf_node_id=parent)
    store.commit_runtime_state(commit_at(session_id, 0, session_graph=graph))


def test_list_sessions_returns_picker_info_and_ignores_foreign_files(
    factory: SqliteSessionStoreFactory, root: Path
) -> None:
    relation = SessionRelation.child("alpha")
    with factory.create_store("alpha", model="m") as store:
        _commit_messages(store, "alpha", "first question", "answer", "second question")
    with factory.create_store("beta/child", model="m", relation=relation) as store:
        _commit_messages(store, "beta/child", "only question")
    factory.create_store("gamma", model="m").close()  # metadata, but no commit yet
    # foreign files in the directory
    (root / "notes.db").write_text("not a database\n" * 10)
    (root / "README.txt").write_text("hello")
    other = sqlite3.connect(root / "other-app.db")
    other.execute("CREATE TABLE t (x)")
    other.commit()
    other.close()
    (root / "subdir.db").mkdir()
    foreign_before = (root / "notes.db").read_bytes()

    sessions = factory.list_sessions()
    assert all(isinstance(info, SessionPickerInfo) for info in sessions)
    by_id = {info.session_id: info for info in sessions}
    assert set(by_id) == {"alpha", "beta/child", "gamma"}
    assert by_id["alpha"].first_user_message == "first question"
    assert by_id["alpha"].user_message_count == 2
    assert by_id["alpha"].relation == SessionRelation.root()
    assert by_id["beta/child"].first_user_message == "only question"
    assert by_id["beta/child"].user_message_count == 1
    assert by_id["beta/child"].relation == relation
    assert by_id["gamma"].first_user_message == ""
    assert by_id["gamma"].user_message_count == 0
    assert by_id["alpha"].cwd == os.getcwd()
    assert (root / "notes.db").read_bytes() == foreign_before


def test_list_sessions_while_stores_are_open(factory: SqliteSessionStoreFactory) -> None:
    stores = [factory.create_store(f"open-{i}", model="m") for i in range(3)]
    try:
        for index, store in enumerate(stores):
            _commit_messages(store, f"open-{index}", f"hello {index}")
        sessions = factory.list_sessions()
        assert sorted((s.session_id, s.first_user_message) for s in sessions) == [
            (f"open-{i}", f"hello {i}") for i in range(3)
        ]
        for store in stores:  # listing did not disturb the writers
            read = store.load_session()
            assert read is not None
            assert store.commit_runtime_state(commit_at(read.session_id, 1)).head_revision == 2
    finally:
        for store in stores:
            store.close()


def test_list_sessions_of_missing_or_empty_root(factory: SqliteSessionStoreFactory, root: Path) -> None:
    assert factory.list_sessions() == []
    root.mkdir()
    assert factory.list_sessions() == []


def test_deleted_session_disappears_from_the_list(factory: SqliteSessionStoreFactory) -> None:
    for session_id in ("keep", "drop"):
        factory.create_store(session_id, model="m").close()
    factory.delete_session("drop")
    assert [info.session_id for info in factory.list_sessions()] == ["keep"]


# ---------------------------------------------------------------------------
# tier


def test_durability_tier_is_durable(factory: SqliteSessionStoreFactory) -> None:
    assert factory.durability_tier is DurabilityTier.DURABLE
    with factory.create_store("tier") as store:
        assert store.durability_tier is DurabilityTier.DURABLE
