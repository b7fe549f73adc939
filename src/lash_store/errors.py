"""Typed errors.  Every error the store raises derives from :class:`StoreError`."""

from __future__ import annotations

__all__ = [
    "HostEventStoreError",
    "InvalidHostEventInput",
    "OccurrenceConflict",
    "UnknownDelivery",
    "UnknownOccurrence",
    "EffectBusyTimeout",
    "EffectExecutorUnavailable",
    "EffectJournalError",
    "EffectLeaseLost",
    "EffectPluginError",
    "EffectReplayConflict",
    "EffectReplayCorrupt",
    "EffectReplayKeyMissing",
    "EffectReplayMissing",
    "EffectStoreFailure",
    "InvalidEffectInput",
    "MissingEffectScopeId",
    "RuntimeEffectControllerError",
    "BackendError",
    "CorruptData",
    "EncryptionError",
    "EncryptionKeyMismatch",
    "EncryptionKeyMissing",
    "EventReplayConflict",
    "HandleNotGranted",
    "HeadRevisionConflict",
    "InvalidEventPayload",
    "InvalidInput",
    "InvalidProcessInput",
    "LeaseLost",
    "MissingWakeTarget",
    "NotAStoreDatabase",
    "NotAWakeEvent",
    "ProcessAlreadyLeased",
    "ProcessAlreadyTerminal",
    "ProcessRegistryError",
    "QueuedWorkClaimExpired",
    "RegistrationConflict",
    "ReplayKeyRequired",
    "RuntimeTurnCommitConflict",
    "SchemaMigrationRequired",
    "SelectorMismatch",
    "SessionBindingMismatch",
    "SessionsUnreadable",
    "StoreBusy",
    "StoreClosed",
    "StoreError",
    "StoreNotFound",
    "UndeclaredEventType",
    "UnknownProcess",
    "UnsupportedSchemaVersion",
    "WaitTimeout",
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


# ---------------------------------------------------------------------------
# The process registry (SPEC §9): one base, typed subclasses carrying their fields.
# The message substrings of the reference's §0.4 ("already leased", "missing or expired",
# "without a wake target scope") are part of the contract.


class ProcessRegistryError(StoreError):
    """Base class of every error the process registry raises (backend failures stay :class:`BackendError`)."""


class InvalidProcessInput(ProcessRegistryError, InvalidInput):
    """A registry argument is invalid; ``.what`` names the field and nothing was written."""

    def __init__(self, what: str, detail: str, message: str | None = None) -> None:
        self.what = what
        self.detail = detail
        ProcessRegistryError.__init__(self, message or f"invalid {what}: {detail}")


class UnknownProcess(ProcessRegistryError, LookupError):
    """No process with that id is registered."""

    def __init__(self, process_id: str) -> None:
        self.process_id = process_id
        super().__init__(f"unknown process {process_id!r}")


class RegistrationConflict(ProcessRegistryError):
    """The id is registered with another registration (a different hash)."""

    def __init__(self, process_id: str, stored_hash: str, requested_hash: str) -> None:
        self.process_id = process_id
        self.stored_hash = stored_hash
        self.requested_hash = requested_hash
        super().__init__(
            f"registration hash conflict for process {process_id!r}: stored {stored_hash}, requested {requested_hash}"
        )


class EventReplayConflict(ProcessRegistryError):
    """A replay key is already used by an event with another type or payload."""

    def __init__(self, process_id: str, replay_key: str) -> None:
        self.process_id = process_id
        self.replay_key = replay_key
        super().__init__(f"event replay key {replay_key!r} conflicts with an existing event of process {process_id!r}")


class UndeclaredEventType(InvalidProcessInput):
    """The process did not declare the event type it tried to emit."""

    def __init__(self, process_id: str, event_type: str) -> None:
        self.process_id = process_id
        self.event_type = event_type
        super().__init__(
            "request.event_type",
            f"{event_type!r} is not declared",
            f"process {process_id!r} emitted undeclared event type {event_type!r}",
        )


class ReplayKeyRequired(InvalidProcessInput):
    """Terminal events and cancel requests must carry a replay key (so that a retry cannot append twice)."""

    def __init__(self, process_id: str, event_type: str) -> None:
        self.process_id = process_id
        self.event_type = event_type
        super().__init__(
            "request.replay",
            "a replay key is required",
            f"event type {event_type!r} of process {process_id!r} requires a deterministic replay key",
        )


class InvalidEventPayload(InvalidProcessInput):
    """The payload does not satisfy the event type's declared schema."""

    def __init__(self, event_type: str, detail: str) -> None:
        self.event_type = event_type
        super().__init__("request.payload", detail, f"invalid {event_type!r} payload: {detail}")


class SelectorMismatch(InvalidProcessInput):
    """A selector of the event type's semantics does not resolve in the payload (a pointer that does not match)."""

    def __init__(self, pointer: str) -> None:
        self.pointer = pointer
        super().__init__(
            "request.payload", f"pointer {pointer!r} did not match", f"payload pointer {pointer!r} did not match"
        )


class MissingWakeTarget(InvalidProcessInput):
    """The event wakes a session, but the request names none."""

    def __init__(self, process_id: str, event_type: str) -> None:
        self.process_id = process_id
        self.event_type = event_type
        super().__init__(
            "request.wake_target_scope",
            "a wake event needs a target scope",
            f"process {process_id!r} emitted wake event {event_type!r} without a wake target scope",
        )


class NotAWakeEvent(InvalidProcessInput):
    """An acknowledgement named a sequence that is not a wake event of the process."""

    def __init__(self, process_id: str, sequence: int) -> None:
        self.process_id = process_id
        self.sequence = sequence
        super().__init__("sequence", f"event {sequence} of process {process_id!r} is not a wake event")


class ProcessAlreadyTerminal(ProcessRegistryError):
    """The process already ended: it takes no second terminal event and no lease."""

    def __init__(self, process_id: str, state: str) -> None:
        self.process_id = process_id
        self.state = state
        super().__init__(f"process {process_id!r} is already terminal ({state})")


class HandleNotGranted(ProcessRegistryError):
    """A transfer named a process whose handle the source scope does not hold."""

    def __init__(self, process_id: str, session_id: str) -> None:
        self.process_id = process_id
        self.session_id = session_id
        super().__init__(f"process handle {process_id!r} is not granted to session {session_id!r}")


class ProcessAlreadyLeased(ProcessRegistryError):
    """Another owner holds a live lease on the process."""

    def __init__(self, process_id: str, owner_id: str, expires_at_ms: int) -> None:
        self.process_id = process_id
        self.owner_id = owner_id
        self.expires_at_ms = expires_at_ms
        super().__init__(f"process {process_id!r} is already leased by {owner_id!r} until {expires_at_ms}")


class LeaseLost(ProcessRegistryError):
    """The caller's lease is no longer the process's live lease: expired, released or taken over.

    Raised by renewals and by fenced writes; nothing was written.
    """

    def __init__(self, process_id: str, owner_id: str, fencing_token: int) -> None:
        self.process_id = process_id
        self.owner_id = owner_id
        self.fencing_token = fencing_token
        super().__init__(
            f"the lease of process {process_id!r} held by {owner_id!r} (fencing token {fencing_token}) "
            "is missing or expired"
        )


class WaitTimeout(ProcessRegistryError, TimeoutError):
    """A blocking wait (``wait_event_after``, ``await_process``) ran out of time; nothing changed."""

    def __init__(self, process_id: str, waited_for: str, timeout_ms: int) -> None:
        self.process_id = process_id
        self.waited_for = waited_for
        self.timeout_ms = timeout_ms
        ProcessRegistryError.__init__(
            self, f"waiting for {waited_for} of process {process_id!r} timed out after {timeout_ms} ms"
        )


# ---------------------------------------------------------------------------
# The effect journal (reference (c) §c.8: every error carries a ``code``)


class EffectJournalError(StoreError):
    """Base of the effect journal's errors; ``code`` is one of reference §c.8's codes."""

    code: str = "effect_journal"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        if code is not None:
            self.code = code
        self.message = message
        Exception.__init__(self, message)  # not super(): with InvalidInput in the MRO it takes other arguments


class RuntimeEffectControllerError(EffectJournalError):
    """An effect failed with ``code`` and ``message`` (reference ``RuntimeEffectControllerError``).

    Executors raise it to report a failure: ``retryable=False`` (the default)
    is journaled as ``failed`` and every replay raises it again;
    ``retryable=True`` releases the journal row so that a later call runs the
    effect again.  Replayed failures are raised as this class.
    """

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(message, code=code)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_effect_error, (self.code, self.message, self.retryable))


def _rebuild_effect_error(code: str, message: str, retryable: bool) -> RuntimeEffectControllerError:
    return RuntimeEffectControllerError(code, message, retryable=retryable)


class _CodedError(RuntimeEffectControllerError):
    code_name: str = "effect_journal"
    is_retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(self.code_name, message, retryable=self.is_retryable)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message,))


class MissingEffectScopeId(_CodedError, InvalidInput):
    """A scope with a blank id field; nothing was written."""

    code_name = "missing_effect_scope_id"

    def __init__(self, message: str) -> None:
        self.what = "scope"
        self.detail = message
        _CodedError.__init__(self, message)


class InvalidEffectInput(_CodedError, InvalidInput):
    """An envelope (or argument, named by ``what``) the journal cannot accept; nothing was written."""

    code_name = "invalid_effect_input"

    def __init__(self, message: str, what: str = "envelope") -> None:
        self.what = what
        self.detail = message
        _CodedError.__init__(self, message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message, self.what))


class EffectReplayKeyMissing(InvalidEffectInput):
    """The envelope has no replay key."""

    code_name = "sqlite_effect_replay_key_missing"


class EffectReplayMissing(_CodedError):
    """Strict replay found no journaled outcome for the effect (nothing was written)."""

    code_name = "sqlite_effect_replay_missing"


class EffectReplayConflict(_CodedError):
    """The replay key was journaled with another envelope (the row is untouched)."""

    code_name = "sqlite_effect_replay_hash_conflict"


class EffectReplayCorrupt(_CodedError):
    """A journal row does not decode (``code`` tells which: corrupt row, decode, encode)."""

    code_name = "sqlite_effect_replay_corrupt_row"

    def __init__(self, message: str, code: str = "sqlite_effect_replay_corrupt_row") -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message, self.code))


class EffectLeaseLost(_CodedError):
    """The claim was taken over before it finished: its result was not recorded (the new claimant's is)."""

    code_name = "sqlite_effect_replay_lease_lost"


class EffectStoreFailure(_CodedError):
    """The journal's database failed (the driver's error is chained); retrying may succeed."""

    code_name = "sqlite_effect_replay_store"
    is_retryable = True


class EffectExecutorUnavailable(_CodedError):
    """The local executor cannot run this effect (a process command without a registry, ...)."""

    code_name = "runtime_effect_local_executor_unavailable"


class EffectPluginError(_CodedError):
    """The process registry raised while a process command ran (its error is chained)."""

    code_name = "plugin"


class EffectBusyTimeout(_CodedError, TimeoutError):
    """Another caller's claim stayed live longer than the busy timeout; nothing was written."""

    code_name = "effect_replay_busy_timeout"
    is_retryable = True


# ---------------------------------------------------------------------------
# The host-event store (reference (b))


class HostEventStoreError(StoreError):
    """Base of the host-event store's errors; ``code`` names the kind (stable, for programs)."""

    code: str = "host_event_store"


class InvalidHostEventInput(HostEventStoreError, InvalidInput):
    """A blank or malformed field of a draft, request or argument; nothing was written."""

    code = "host_event_invalid_input"

    def __init__(self, what: str, detail: str) -> None:
        InvalidInput.__init__(self, what, detail)


class OccurrenceConflict(HostEventStoreError):
    """An idempotency key was reused with other content; the stored occurrence is unchanged."""

    code = "host_event_idempotency_conflict"

    def __init__(self, idempotency_key: str, stored_hash: str, request_hash: str) -> None:
        self.idempotency_key = idempotency_key
        self.stored_hash = stored_hash
        self.request_hash = request_hash
        super().__init__(
            f"host event occurrence idempotency conflict for `{idempotency_key}` "
            f"(stored request hash {stored_hash}, this one {request_hash})"
        )


class UnknownOccurrence(HostEventStoreError, LookupError):
    """No occurrence has this id; nothing was written."""

    code = "host_event_unknown_occurrence"

    def __init__(self, occurrence_id: str) -> None:
        self.occurrence_id = occurrence_id
        super().__init__(f"unknown host event occurrence {occurrence_id!r}")


class UnknownDelivery(HostEventStoreError, LookupError):
    """No delivery of this occurrence to this subscription was reserved; nothing was written."""

    code = "host_event_unknown_delivery"

    def __init__(self, occurrence_id: str, subscription_id: str) -> None:
        self.occurrence_id = occurrence_id
        self.subscription_id = subscription_id
        super().__init__(f"unknown host event delivery of {occurrence_id!r} to {subscription_id!r}")
