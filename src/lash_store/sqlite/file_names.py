"""Session file names under a factory root, and the session id a name gives away without opening the file."""

from __future__ import annotations

import hashlib

_MAX_STEM = 80
_DIGEST = 16  # hex characters of the id's SHA-256 in a name


def safe_file_name(session_id: str) -> str:
    """A deterministic, separator-free file name: sanitised id + 16 hex chars of its SHA-256 + ``.db``."""
    kept = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "_" for c in session_id)
    stem = kept.strip("_") or "session"
    return f"{stem[:_MAX_STEM]}-{_digest(session_id)}.db"


def session_id_in_name(name: str) -> str | None:
    """The session id ``name`` was made from, when its stem is the id itself; ``None`` when only the file knows.

    Ids of letters, digits, ``-`` and ``_`` (uuids, ``chat-42``) survive sanitising unchanged, and the digest
    then confirms the stem: a listing learns such a file's id from its name alone.  For any other id the
    stem lost characters, and the id must be read from the file.
    """
    stem, dash, rest = name.rpartition("-")
    if not dash or len(rest) != _DIGEST + 3 or not rest.endswith(".db"):
        return None
    return stem if safe_file_name(stem) == name else None  # the digest and the unchanged stem, in one hash


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()[:_DIGEST]
