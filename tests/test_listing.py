"""Listing sessions at scale: the SQLite root's catalogue (a cache that is repaired, never trusted blindly),
pages by id and by recency that stay complete and stable while sessions come and go, on both backends."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lash_store import SqliteSessionStoreFactory, Store
from lash_store.errors import InvalidInput, SessionsUnreadable
from lash_store.model import GraphDelta, SessionMeta, SessionPickerInfo
from lash_store.postgres import PostgresSessionStoreFactory, close_shared_pools
from lash_store.sqlite.catalog import CATALOG_NAME
from lash_store.testing.conformance import commit, message


def _say(store: Any, session_id: str, text: str, revision: int) -> None:
    node = message(f"u{revision}", "user", text)
    store.commit_runtime_state(commit(session_id=session_id, expected=revision, graph=GraphDelta.append([node], None)))


def _sqlite(tmp_path: Path) -> SqliteSessionStoreFactory:
    """A factory that keeps the root's catalogue file."""
    return SqliteSessionStoreFactory(tmp_path / "root", keep_catalog=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        yield SqliteSessionStoreFactory(tmp_path / "root")
        return
    yield PostgresSessionStoreFactory(request.getfixturevalue("pg_dsn"))
    close_shared_pools()


def _create(factory: Any, session_id: str, text: str | None = None) -> None:
    with factory.create_store(session_id) as store:
        if text is not None:
            _say(store, session_id, text, 0)


# ---------------------------------------------------------------------------
# both backends


def test_recent_sessions_come_newest_first_a_page_at_a_time(factory: Any) -> None:
    for session_id in ("a", "b", "c", "d"):
        _create(factory, session_id, f"hello from {session_id}")
        time.sleep(0.01)  # distinct update times on either clock
    first = factory.recent_sessions(limit=2)
    assert [s.info.session_id for s in first.sessions] == ["d", "c"] and first.next_cursor is not None
    assert first.sessions[0].info.first_user_message == "hello from d"
    assert first.sessions[0].updated_at_epoch_ms >= first.sessions[1].updated_at_epoch_ms
    with factory.create_store("b") as store:  # b is updated between the pages: it moves to the front
        _say(store, "b", "again", 1)
    second = factory.recent_sessions(limit=2, cursor=first.next_cursor)
    assert [s.info.session_id for s in second.sessions] == ["a"] and second.next_cursor is None
    assert [s.info.session_id for s in factory.recent_sessions(limit=10).sessions] == ["b", "d", "c", "a"]
    assert factory.recent_sessions(limit=0).sessions == []


@pytest.mark.parametrize("cursor", ["", "yesterday:a", 5, "12"])
def test_a_foreign_cursor_is_invalid_input(factory: Any, cursor: Any) -> None:
    with pytest.raises(InvalidInput) as raised:
        factory.recent_sessions(cursor=cursor)
    assert raised.value.what == "cursor"


def test_pages_by_id_stay_complete_while_other_sessions_come_and_go(factory: Any) -> None:
    stable = [f"s{n:02d}" for n in range(12)]
    for session_id in stable:
        _create(factory, session_id, "hi")
    stop = threading.Event()

    def churn() -> None:
        number = 0
        while not stop.is_set():
            name = f"s{number % 12:02d}x"  # sorts between the stable ids
            _create(factory, name, "churn")
            factory.delete_session(name)
            number += 1

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        seen: list[str] = []
        for _ in range(3):
            seen, after = [], None
            while True:
                page = factory.list_sessions(limit=4, after=after)
                if not page:
                    break
                seen.extend(info.session_id for info in page)
                after = page[-1].session_id
            assert [s for s in seen if not s.endswith("x")] == stable
            assert seen == sorted(seen) and len(seen) == len(set(seen))
    finally:
        stop.set()
        churner.join()


def _churn_process(target: str, stop: Any) -> None:
    factory: Any = SqliteSessionStoreFactory(target) if not target.startswith("postgresql") else None
    if factory is None:
        factory = PostgresSessionStoreFactory(target)
    number = 0
    while not stop.is_set():
        name = f"churn{number % 5}"
        _create(factory, name, "churn")
        factory.delete_session(name)
        number += 1


def test_recent_pages_stay_complete_while_another_process_creates_and_deletes(
    factory: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    stable = [f"r{n:02d}" for n in range(15)]
    for session_id in stable:
        _create(factory, session_id, "hi")
        time.sleep(0.003)
    target = str(factory.root) if isinstance(factory, SqliteSessionStoreFactory) else request.getfixturevalue("pg_dsn")
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    churner = context.Process(target=_churn_process, args=(target, stop))
    churner.start()
    try:
        for _ in range(3):
            seen: list[str] = []
            stamps: list[int] = []
            page = factory.recent_sessions(limit=4)
            while True:
                seen.extend(s.info.session_id for s in page.sessions)
                stamps.extend(s.updated_at_epoch_ms for s in page.sessions)
                if page.next_cursor is None:
                    break
                page = factory.recent_sessions(limit=4, cursor=page.next_cursor)
            assert sorted(s for s in seen if not s.startswith("churn")) == stable  # each exactly once
            assert len(seen) == len(set(seen)) and stamps == sorted(stamps, reverse=True)
    finally:
        stop.set()
        churner.join(60)
    assert churner.exitcode == 0


# ---------------------------------------------------------------------------
# the SQLite catalogue


def _catalog_rows(root: Path) -> dict[str, tuple[Any, ...]]:
    conn = sqlite3.connect(root / CATALOG_NAME)
    try:
        return {row[0]: row for row in conn.execute("SELECT * FROM files")}
    finally:
        conn.close()


def _ids(infos: list[SessionPickerInfo]) -> list[str]:
    return [info.session_id for info in infos]


def test_the_catalogue_follows_every_change_to_the_files(tmp_path: Path) -> None:
    factory = _sqlite(tmp_path)
    for session_id in ("a", "b"):
        _create(factory, session_id, f"first {session_id}")
    assert [i.first_user_message for i in factory.list_sessions()] == ["first a", "first b"]
    assert set(_catalog_rows(factory.root)) == {factory.path_for_session(s).name for s in ("a", "b")}
    with factory.create_store("a") as store:  # a commit changes the file's signature: read again
        store.tombstone_nodes(["u0"])
        _say(store, "a", "second a", 1)
    assert [i.first_user_message for i in factory.list_sessions()] == ["second a", "first b"]
    factory.delete_session("b")
    assert _ids(factory.list_sessions()) == ["a"]
    assert set(_catalog_rows(factory.root)) == {factory.path_for_session("a").name}
    # a session file made without the factory (a restored backup) is found and read
    with Store.open(factory.root / "restored.db") as store:
        store.save_session_meta(SessionMeta(session_id="zz-restored", session_name="r", created_at="now", model="m"))
    assert _ids(factory.list_sessions()) == ["a", "zz-restored"]


def _tamper(root: Path, file_name: str, *, first_message: str, read_at_ns: int) -> None:
    """Rewrite a catalogue entry's info as if it had been read at ``read_at_ns`` (same signature)."""
    import msgspec

    conn = sqlite3.connect(root / CATALOG_NAME)
    (blob,) = conn.execute("SELECT info FROM files WHERE file_name = ?", (file_name,)).fetchone()
    info = msgspec.msgpack.decode(blob, type=SessionPickerInfo)
    forged = msgspec.structs.replace(info, first_user_message=first_message)
    conn.execute(
        "UPDATE files SET info = ?, read_at_ns = ? WHERE file_name = ?",
        (msgspec.msgpack.encode(forged), read_at_ns, file_name),
    )
    conn.commit()
    conn.close()


def test_an_entry_is_used_only_when_read_well_after_the_files_last_write(tmp_path: Path) -> None:
    factory = _sqlite(tmp_path)
    _create(factory, "a", "the truth")
    factory.list_sessions()
    name = factory.path_for_session("a").name
    path = factory.root / name
    last_write = max(
        os.stat(path).st_mtime_ns, os.stat(f"{path}-wal").st_mtime_ns if os.path.exists(f"{path}-wal") else 0
    )
    _tamper(factory.root, name, first_message="a cached lie", read_at_ns=last_write + 1_000_000_000)
    assert factory.list_sessions()[0].first_user_message == "the truth", "a same-tick entry was trusted"
    _tamper(factory.root, name, first_message="cached", read_at_ns=last_write + 10_000_000_000)
    assert factory.list_sessions()[0].first_user_message == "cached", "a current entry must spare the read"


def test_a_damaged_catalogue_is_rebuilt_and_the_listing_is_right(tmp_path: Path) -> None:
    factory = _sqlite(tmp_path)
    for session_id in ("a", "b"):
        _create(factory, session_id, session_id)
    (factory.root / CATALOG_NAME).write_bytes(b"SQLite format 3\x00" + os.urandom(5000))
    assert _ids(factory.list_sessions()) == ["a", "b"]
    assert _ids(factory.list_sessions()) == ["a", "b"]
    assert len(_catalog_rows(factory.root)) == 2, "the catalogue was not rebuilt"
    conn = sqlite3.connect(factory.root / CATALOG_NAME)  # rows of the wrong types: left out, files read
    conn.execute("UPDATE files SET info = x'c1', session_id = 42")
    conn.commit()
    conn.close()
    assert _ids(factory.list_sessions()) == ["a", "b"]


def test_a_read_only_listing_writes_nothing(tmp_path: Path) -> None:
    factory = _sqlite(tmp_path)
    _create(factory, "a", "x")
    os.remove(factory.root / CATALOG_NAME)
    before = sorted(os.listdir(factory.root))
    reader = SqliteSessionStoreFactory(factory.root)
    assert _ids(reader.list_sessions()) == ["a"] and reader.recent_sessions().sessions[0].info.session_id == "a"
    assert sorted(os.listdir(factory.root)) == before


def test_the_catalogue_is_private(tmp_path: Path) -> None:
    factory = _sqlite(tmp_path)
    _create(factory, "a", "secret first message")
    factory.list_sessions()
    assert (factory.root / CATALOG_NAME).stat().st_mode & 0o777 == 0o600


def test_an_unreadable_session_is_reported_on_both_listings(tmp_path: Path) -> None:
    factory = _sqlite(tmp_path)
    for session_id in ("a", "b"):
        _create(factory, session_id, session_id)
    damaged = factory.path_for_session("b")
    with open(damaged, "r+b") as file:  # break the schema page
        file.seek(100)
        file.write(os.urandom(3000))
    with pytest.raises(SessionsUnreadable) as raised:
        factory.list_sessions()
    assert _ids(raised.value.sessions) == ["a"]  # type: ignore[arg-type]
    page = factory.recent_sessions()
    assert [s.info.session_id for s in page.sessions] == ["a"]
    assert [where for where, _ in page.failures] == [str(damaged)]


def test_the_first_listing_of_a_factory_made_root_opens_only_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = _sqlite(tmp_path)
    for number in range(30):
        _create(factory, f"s{number:02d}", "x")
    opened: list[Path] = []
    real = Store.open_readonly

    def counting(path: Any, **options: Any) -> Store:
        opened.append(Path(path))
        return real(path, **options)

    monkeypatch.setattr(Store, "open_readonly", staticmethod(counting))
    assert _ids(factory.list_sessions(limit=5)) == [f"s{n:02d}" for n in range(5)]
    assert len(opened) == 5
    opened.clear()
    assert len(factory.recent_sessions(limit=5).sessions) == 5
    assert len(opened) <= 5


def _counting_opens(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    opened: list[Path] = []
    real = Store.open_readonly

    def counting(path: Any, **options: Any) -> Store:
        opened.append(Path(path))
        return real(path, **options)

    monkeypatch.setattr(Store, "open_readonly", staticmethod(counting))
    return opened


def test_by_default_nothing_is_written_and_the_factory_remembers_what_it_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = SqliteSessionStoreFactory(tmp_path / "root")
    for number in range(12):
        _create(factory, f"s{number:02d}", "x")
    with Store.open(factory.root / "restored.db") as store:  # made without the factory: read once
        store.save_session_meta(SessionMeta(session_id="zz", session_name="r", created_at="now", model="m"))
    for name in os.listdir(factory.root):  # as long ago as a real root's files: entries are current at once
        os.utime(factory.root / name, ns=(10**18, 10**18))
    before = sorted(os.listdir(factory.root))
    opened = _counting_opens(monkeypatch)
    assert _ids(factory.list_sessions(limit=4)) == ["s00", "s01", "s02", "s03"]
    assert len(opened) == 5  # the page, and the file the factory did not make
    opened.clear()
    assert _ids(factory.list_sessions(limit=4)) == ["s00", "s01", "s02", "s03"]
    assert len(factory.recent_sessions(limit=4).sessions) == 4
    assert opened == [], "a second listing read files it had read before"
    assert sorted(os.listdir(factory.root)) == before, "a listing wrote a file"
    # a fresh process's factory over a root whose catalogue file another factory keeps: only the page is read
    SqliteSessionStoreFactory(factory.root, keep_catalog=True).list_sessions()
    opened.clear()
    assert _ids(SqliteSessionStoreFactory(factory.root).list_sessions(limit=3)) == ["s00", "s01", "s02"]
    assert opened == []


def test_a_fresh_factory_learns_plain_ids_from_file_names_and_opens_only_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = SqliteSessionStoreFactory(tmp_path / "root")
    plain = [f"chat-{number:02d}" for number in range(20)] + ["3f2b7c1e-9a4d-4e8b-b1c2-0d5e6f7a8b9c", "a_b"]
    other = ["Ünïcode", "with space", "_leading", "x" * 81]  # their names do not give the id back
    for session_id in plain + other:
        _create(made, session_id, "x")
    for name in os.listdir(made.root):  # as long ago as a real root's files: entries are current at once
        os.utime(made.root / name, ns=(10**18, 10**18))
    opened = _counting_opens(monkeypatch)
    cold = SqliteSessionStoreFactory(made.root)  # a new process: nothing remembered, no catalogue file
    page = sorted(plain + other)[:3]
    assert _ids(cold.list_sessions(limit=3)) == page
    # Read: each file of an id its name cannot give back (once), and the page's files; nothing else.
    expected = {made.path_for_session(session_id).name for session_id in other + page}
    assert sorted(path.name for path in opened) == sorted(expected)
    assert _ids(SqliteSessionStoreFactory(made.root).list_sessions()) == sorted(plain + other)


def test_a_forged_name_cannot_put_another_session_on_a_page(tmp_path: Path) -> None:
    made = SqliteSessionStoreFactory(tmp_path / "root")
    _create(made, "real", "x")
    _create(made, "zeta", "x")
    # The file of "real" renamed as the file "alpha" would have: the name says alpha, the file says real.
    os.rename(made.path_for_session("real"), made.path_for_session("alpha"))
    listed = SqliteSessionStoreFactory(made.root).list_sessions()
    assert _ids(listed) == ["real", "zeta"]  # what the file holds is shown, never what its name claims
