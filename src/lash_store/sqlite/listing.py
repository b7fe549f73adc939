"""Listing the sessions of a factory root fast: one directory scan, the catalogue, and only the page's files.

By session id: the directory's names (no stat) give every file's session id
when the id is made of letters, digits, ``-`` and ``_`` (the name's stem is
then the id, confirmed by the name's digest), and the catalogue gives the rest,
so the order is known without opening anything; only the files on the
requested page are checked against their signature and read again when they
changed.  Files of other ids the catalogue does not know yet are read once.

By recency: the order needs every file's last write time, so every session file
(and its log) is ``stat``-ed, a few microseconds each; again only the page's
files are read when the catalogue's entry is not current.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from lash_store.errors import InvalidInput, NotAStoreDatabase, StoreError, StoreNotFound
from lash_store.model import SessionListing, SessionPage, SessionPickerInfo
from lash_store.service.factory import decode_cursor, encode_cursor
from lash_store.sqlite.catalog import Catalog, Entry, Signature, last_write_ns, now_ns, signature_of
from lash_store.sqlite.file_names import session_id_in_name
from lash_store.sqlite.store import Store

Failures = list[tuple[str, StoreError]]


def scan(root: Path) -> dict[str, os.DirEntry[str]]:
    """Every entry of the root by name (session files, their sidecars, anything else)."""
    if not root.exists():
        return {}
    if not root.is_dir():
        raise InvalidInput("root", f"{root} is not a directory")
    with os.scandir(root) as found:
        return {entry.name: entry for entry in found}


def session_files(entries: dict[str, os.DirEntry[str]]) -> list[str]:
    return sorted(name for name, entry in entries.items() if name.endswith(".db") and entry.is_file())


class Reader:
    """Reads files for one listing, through the catalogue, and collects the failures.

    Entries are fetched from the catalogue only for the files a page may show,
    a window at a time, so a listing costs little more than the scan itself.
    """

    def __init__(self, root: Path, entries: dict[str, os.DirEntry[str]], catalog: Catalog) -> None:
        self.root = root
        self.entries = entries
        self.catalog = catalog
        self.known: dict[str, Entry] = {}
        self.failures: Failures = []

    def prefetch(self, names: list[str]) -> None:
        """Fetch the catalogue's entries of ``names`` (one query per few hundred)."""
        missing = [name for name in names if name not in self.known]
        if missing:
            self.known.update(self.catalog.entries(missing))

    def current(self, name: str, signature: Signature | None = None) -> Entry | None:
        """The file's entry, read again unless the catalogue's is current (None: unreadable or not ours)."""
        signature = signature or signature_of(self.entries, name)
        if signature is None:
            return None  # deleted since the scan
        entry = self.known.get(name)
        if entry is not None and entry.current_for(signature):
            return entry
        return self._read(name, signature)

    def _replaced(self, name: str) -> bool:
        try:
            return os.stat(self.root / name).st_ino != self.entries[name].inode()
        except OSError:
            return True

    def _read(self, name: str, signature: Signature) -> Entry | None:
        read_at = now_ns()  # before reading: a write during the read leaves a younger signature
        path = self.root / name
        try:
            with Store.open_readonly(path, encryption=self.catalog.encryption) as store:
                info = store.load_picker_info()
        except (NotAStoreDatabase, StoreNotFound):
            return None  # another application's file, or deleted meanwhile: no session
        except StoreError as exc:
            if self._replaced(name):
                return None  # deleted or replaced since the scan: not a session of this listing's moment
            self.failures.append((str(path), exc))
            return None
        entry = Entry(None if info is None else info.session_id, signature, read_at, info)
        self.known[name] = entry
        self.catalog.remember(name, entry)
        return entry


def _windows(names: list[str], size: int) -> Iterator[list[str]]:
    """``names`` a window at a time: the page's size first, then growing (pages can skip unreadable files)."""
    start = 0
    while start < len(names):
        yield names[start : start + size]
        start += size
        size *= 2


def by_session_id(
    root: Path, catalog: Catalog, limit: int | None, after: str | None
) -> tuple[list[SessionPickerInfo], Failures]:
    entries = scan(root)
    reader = Reader(root, entries, catalog)
    names = session_files(entries)
    remembered = catalog.session_ids()
    present = set(names)
    catalog.forget(name for name in remembered if name not in present)
    ids: list[tuple[str, str]] = []
    for name in names:  # a file's name is derived from its id, so a remembered id stays right for that name
        session_id = remembered.get(name) or session_id_in_name(name) or _read_id(reader, name)
        if session_id is not None and (after is None or session_id > after):
            ids.append((session_id, name))
    ids.sort()
    page: list[SessionPickerInfo] = []
    for window in _windows([name for _, name in ids], limit or len(ids) or 1):
        reader.prefetch(window)
        for name in window:
            entry = reader.current(name)
            if entry is not None and entry.info is not None and (after is None or entry.info.session_id > after):
                page.append(entry.info)  # re-read: a file replaced by another session's shows what it holds now
        if limit is not None and len(page) >= limit:
            break
    catalog.flush()
    page.sort(key=lambda info: info.session_id)
    return page[:limit] if limit is not None else page, reader.failures


def _read_id(reader: Reader, name: str) -> str | None:
    read = reader.current(name)
    return None if read is None else read.session_id


def by_recency(root: Path, catalog: Catalog, limit: int, cursor: str | None) -> SessionPage:
    start = decode_cursor(cursor, int)
    entries = scan(root)
    reader = Reader(root, entries, catalog)
    stamped = []
    for name in session_files(entries):
        signature = signature_of(entries, name)
        if signature is not None:
            stamped.append((-last_write_ns(signature), name, signature))
    stamped.sort()
    if start is not None:
        stamped = [item for item in stamped if _after(item, start)]
    page: list[SessionListing] = []
    last: tuple[int, str] | None = None
    taken = 0
    for window in _windows([name for _, name, _ in stamped], limit):
        reader.prefetch(window)
        for negative_ns, name, signature in stamped[taken : taken + len(window)]:
            if len(page) >= limit:
                break
            taken += 1
            entry = reader.current(name, signature)
            last = (-negative_ns, name)
            if entry is not None and entry.info is not None:
                page.append(SessionListing(info=entry.info, updated_at_epoch_ms=-negative_ns // 1_000_000))
        if len(page) >= limit:
            break
    catalog.flush()
    failures = [(where, " ".join(str(exc).split())) for where, exc in reader.failures]
    next_cursor = encode_cursor(last) if taken < len(stamped) and last is not None else None
    return SessionPage(sessions=page, next_cursor=next_cursor, failures=failures)


def _after(item: tuple[int, str, Signature], start: tuple[int, str]) -> bool:
    """Whether ``item`` comes after the cursor in the order: newer first, then by name."""
    return (item[0], item[1]) > (-start[0], start[1])
