"""One database file per session under a root directory."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
from pathlib import Path

from lash_store.core.validate import check_id, check_instance, check_text
from lash_store.errors import StoreError
from lash_store.model import DurabilityTier, SessionMeta, SessionPickerInfo, SessionRelation
from lash_store.options import StoreOptions
from lash_store.sqlite.store import Store

log = logging.getLogger("lash_store")

_MAX_STEM = 80


def safe_file_name(session_id: str) -> str:
    """A deterministic, separator-free file name: sanitised id + 16 hex chars of its SHA-256 + ``.db``."""
    kept = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "_" for c in session_id)
    stem = kept.strip("_") or "session"
    digest = hashlib.sha256(session_id.encode("utf-8")).hexdigest()[:16]
    return f"{stem[:_MAX_STEM]}-{digest}.db"


class SqliteSessionStoreFactory:
    """Creates, lists and deletes per-session stores below ``root``."""

    def __init__(
        self, root: str | os.PathLike[str], options: StoreOptions | None = None, *, migrate: bool = False
    ) -> None:
        """``migrate``: :meth:`create_store` migrates a session file of an older layout revision when it
        opens it (one transaction; ``Store.open(path, migrate=True)``); without it such a file raises
        :class:`SchemaMigrationRequired`, untouched."""
        self.root = Path(root)
        self.options = options
        self.migrate: bool = check_instance("migrate", migrate, bool)

    @property
    def durability_tier(self) -> DurabilityTier:
        return DurabilityTier.DURABLE

    def path_for_session(self, session_id: str) -> Path:
        check_text("session_id", session_id)
        return self.root / safe_file_name(session_id)

    def create_store(self, session_id: str, *, model: str = "", relation: SessionRelation | None = None) -> Store:
        """Open (creating if needed) the session's store; metadata is written once, never overwritten."""
        check_id("session_id", session_id)
        check_text("model", model)
        relation = check_instance("relation", relation or SessionRelation.root(), SessionRelation)
        self.root.mkdir(parents=True, exist_ok=True)
        store = Store.open(self.path_for_session(session_id), self.options, migrate=self.migrate)
        try:
            if store.load_session_meta() is None:
                store.save_session_meta(
                    SessionMeta(
                        session_id=session_id,
                        session_name=session_id,
                        created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                        model=model,
                        cwd=_cwd(),
                        relation=relation,
                    )
                )
        except BaseException:
            store.close()
            raise
        return store

    def delete_session(self, session_id: str) -> None:
        """Remove the database and its sidecars; deleting a missing session is not an error."""
        path = self.path_for_session(session_id)
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{path}{suffix}")

    def list_sessions(self) -> list[SessionPickerInfo]:
        """Picker info of every session database under the root, by session id."""
        sessions: list[SessionPickerInfo] = []
        if not self.root.is_dir():
            return sessions
        for path in sorted(self.root.glob("*.db")):
            try:
                with Store.open_readonly(path) as store:
                    info = store.load_picker_info()
            except StoreError as exc:
                log.warning("list_sessions: skipping %s: %s", path, exc)
                continue
            if info is not None:
                sessions.append(info)
        return sorted(sessions, key=lambda info: info.session_id)


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return None
