"""Typed errors.  Every error the store raises derives from :class:`StoreError`."""

from __future__ import annotations

__all__ = [
    "BackendError",
    "CorruptData",
    "EncryptionError",
    "EncryptionKeyMismatch",
    "EncryptionKeyMissing",
    "HeadRevisionConflict",
    "InvalidInput",
    "NotAStoreDatabase",
    "QueuedWorkClaimExpired",
    "RuntimeTurnCommitConflict",
    "SchemaMigrationRequired",
    "SessionBindingMismatch",
    "SessionsUnreadable",
    "StoreBusy",
    "StoreClosed",
    "StoreError",
    "StoreNotFound",
    "UnsupportedSchemaVersion",
]


class StoreError(Exception):
    """Base class of every lash-store error."""


class SessionBindingMismatch(StoreError):
    """The store already holds another session's head."""

    def __init__(self, bound_session_id: str, attempted_session_id: str) -> None:
        self.bound_session_id = bound_session_id
        self.attempted_session_id = attempted_session_id
        super().__init__(
            f"store is bound to session {bound_session_id!r}; refusing a commit for session {attempted_session_id!r}"
        )


class HeadRevisionConflict(StoreError):
    """Compare-and-set failed: the head moved since the caller read it."""

    def __init__(self, expected: int | None, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"head revision conflict: expected {expected}, stored head is at {actual}")


class RuntimeTurnCommitConflict(StoreError):
    """The turn was already committed with a different commit hash."""

    def __init__(self, session_id: str, turn_id: str) -> None:
        self.session_id = session_id
        self.turn_id = turn_id
        super().__init__(f"turn {turn_id!r} of session {session_id!r} was already committed with a different hash")


class QueuedWorkClaimExpired(StoreError):
    """The claim no longer owns exactly its batches (expired, reclaimed, cancelled or stale fence)."""

    def __init__(self, session_id: str, claim_id: str) -> None:
        self.session_id = session_id
        self.claim_id = claim_id
        super().__init__(f"queued-work claim {claim_id!r} of session {session_id!r} is missing, expired or stale")


class UnsupportedSchemaVersion(StoreError):
    """The database file carries a schema version this release cannot open."""

    def __init__(self, kind: str, expected: int, found: int) -> None:
        self.kind = kind
        self.expected = expected
        self.found = found
        # A newer file is not damaged: deleting it would lose data a newer release can still read.
        advice = (
            "it was written by a newer release: open it with that release (the file was not modified)"
            if found > expected
            else "no migration exists, so delete the file to start over"
        )
        super().__init__(
            f"this lash-store release supports {kind} schema version {expected}, but the database "
            f"reports version {found}; {advice}"
        )


class SchemaMigrationRequired(StoreError):
    """The database was written by an earlier release (an older layout); it opens after an explicit migration.

    Nothing was modified.  Migrate with ``lash-store migrate PATH`` or open with ``migrate=True``.
    """

    def __init__(self, kind: str, expected_revision: int, found_revision: int, path: str = "") -> None:
        self.kind = kind
        self.expected_revision = expected_revision
        self.found_revision = found_revision
        self.path = path
        super().__init__(
            f"{path or 'the database'} has {kind} layout revision {found_revision}, written by an earlier release; "
            f"this release uses revision {expected_revision}. Migrate it first: `lash-store migrate {path or 'PATH'}` "
            "(or open with migrate=True); nothing was modified"
        )


class NotAStoreDatabase(StoreError):
    """The file is not a lash-store database; it was left untouched."""

    def __init__(self, path: str, detail: str = "") -> None:
        self.path = path
        self.detail = detail
        suffix = f": {detail}" if detail else ""
        super().__init__(f"{path} is not a lash-store session database{suffix}")


class StoreNotFound(StoreError, FileNotFoundError):
    """An open that must not create named a store that does not exist (or was deleted)."""

    def __init__(self, path: str, detail: str | None = None) -> None:
        self.path = path
        StoreError.__init__(self, f"no lash-store database at {path}" + (f" ({detail})" if detail else ""))


class CorruptData(StoreError):
    """Stored bytes do not decode; raised, never skipped silently."""

    def __init__(self, what: str, detail: str) -> None:
        self.what = what
        self.detail = detail
        super().__init__(f"corrupt stored data in {what}: {detail}")


class EncryptionError(StoreError):
    """Encryption at rest refused to go on; ``key_id`` names the key concerned (``None``: none applies).

    Nothing was written, and no stored byte was returned undecrypted.
    """

    def __init__(self, key_id: str | None, message: str) -> None:
        self.key_id = key_id
        super().__init__(message)


class EncryptionKeyMissing(EncryptionError):
    """Stored data is sealed with a key the key ring does not hold (or no key ring was given)."""

    def __init__(self, key_id: str, what: str, *, no_ring: bool = False) -> None:
        self.what = what
        reason = "no key ring was given" if no_ring else "the key ring does not hold it"
        super().__init__(key_id, f"{what} is encrypted with key {key_id!r}, but {reason}; nothing was returned")


class EncryptionKeyMismatch(EncryptionError):
    """A value sealed under this key id does not open with the ring's key of that id.

    Either the ring holds the wrong key under that id, or the stored value was
    damaged or moved to another row (the ciphertext is bound to its row).
    """

    def __init__(self, key_id: str, what: str) -> None:
        self.what = what
        super().__init__(
            key_id,
            f"key {key_id!r} of the key ring does not open {what}: it is not the key this data was encrypted with "
            "(or the stored value was damaged or moved); nothing was returned",
        )


class InvalidInput(StoreError, ValueError):
    """A caller-supplied value is invalid; nothing was written."""

    def __init__(self, what: str, detail: str) -> None:
        self.what = what
        self.detail = detail
        super().__init__(f"invalid {what}: {detail}")


class SessionsUnreadable(StoreError):
    """Listing sessions found some that cannot be read; they are reported, never silently left out.

    ``sessions`` holds what could be read (a picker may still show it) and
    ``failures`` one ``(where, error)`` pair per session that could not.
    """

    def __init__(self, sessions: list[object], failures: list[tuple[str, StoreError]]) -> None:
        self.sessions = sessions
        self.failures = failures
        listed = "; ".join(f"{where}: {error}" for where, error in failures[:3])
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        super().__init__(f"{len(failures)} session(s) could not be read: {listed}{more}")


class StoreClosed(StoreError):
    """The store was closed."""

    def __init__(self) -> None:
        super().__init__("the store is closed")


class BackendError(StoreError):
    """A database driver error; the original is chained as ``__cause__``."""


class StoreBusy(BackendError):
    """The write lock could not be taken within the busy timeout."""
