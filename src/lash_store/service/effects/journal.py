"""The journal's transactions (reference §c.5 steps 1 and 5, with the fixes of §7 items 15-17).

Each function runs inside one write transaction of a backend.  The key of a
row is (scope identity, replay key).  SQLite serialises every writer on the
file's lock; PostgreSQL locks the row (``lock_effect``) and lets the primary
key arbitrate two first claims (``insert_effect`` does nothing for the loser,
who then reads the winner's row under its lock).  ``now`` is read after the
lock: the database clock on PostgreSQL.

Statuses: ``in_progress`` (claimed; the lease is live while it has not
expired), ``released`` (a claimant gave it up after a retryable failure:
claimable at once), ``completed`` and ``failed`` (final; replayed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from lash_store.core.validate import saturating_add
from lash_store.effects import EffectJournalRecord, RuntimeEffectOutcome
from lash_store.errors import (
    EffectLeaseLost,
    EffectReplayConflict,
    EffectReplayCorrupt,
    EffectReplayMissing,
    RuntimeEffectControllerError,
)
from lash_store.service.ports import Row, Tx

#: The columns of ``effect_row`` and ``list_effects``, in order.
EFFECT_COLUMNS = (
    "scope_identity",
    "replay_key",
    "scope_kind",
    "scope_id",
    "envelope_hash",
    "status",
    "outcome",
    "error",
    "lease_owner_id",
    "lease_token",
    "lease_expires_at_ms",
    "due_at_ms",
    "attempts",
    "created_at_ms",
    "updated_at_ms",
)
_INDEX = {name: index for index, name in enumerate(EFFECT_COLUMNS)}

_OUTCOME = msgspec.json.Decoder(RuntimeEffectOutcome)
_ENCODE = msgspec.json.Encoder()


class _Error(msgspec.Struct, frozen=True):
    code: str
    message: str


_ERROR = msgspec.json.Decoder(_Error)


@dataclass(frozen=True)
class Key:
    """Where one effect is journaled, plus what its row records about the scope."""

    scope_identity: str
    replay_key: str
    scope_kind: str
    scope_id: str

    def params(self) -> dict[str, Any]:
        return {"scope_identity": self.scope_identity, "replay_key": self.replay_key}

    def new_row(self, digest: str, now_ms: int) -> dict[str, Any]:
        """The parameters every insert of this key's row takes (its status and lease come on top)."""
        return {
            **self.params(),
            "scope_kind": self.scope_kind,
            "scope_id": self.scope_id,
            "envelope_hash": digest,
            "now_ms": now_ms,
        }


@dataclass(frozen=True)
class Claimed:
    token: str
    due_at_ms: int | None
    now_ms: int
    attempt: int


@dataclass(frozen=True)
class Replayed:
    outcome: RuntimeEffectOutcome
    due_at_ms: int | None
    now_ms: int


@dataclass(frozen=True)
class Failed:
    error: RuntimeEffectControllerError


@dataclass(frozen=True)
class Busy:
    expires_at_ms: int
    now_ms: int


Step = Claimed | Replayed | Failed | Busy


def col(row: Row, name: str) -> Any:
    return row[_INDEX[name]]


def prepare(
    tx: Tx,
    key: Key,
    digest: str,
    sleep_ms: int | None,
    owner_id: str,
    token: str,
    ttl_ms: int,
    strict: bool,
) -> Step:
    """Claim, replay, or report busy (reference §c.5 step 1).  Raises with nothing written on a conflict.

    The claim is tried first (the primary key arbitrates): a first execution, the common case here, then
    takes one statement instead of a read and an insert; only a row that exists is read.
    """
    tx.send("lock_effect", key.params())
    now = tx.now_ms()
    due = None if sleep_ms is None else saturating_add(now, sleep_ms)
    if strict:
        row = tx.one("effect_row", key.params())
        if row is None:
            raise EffectReplayMissing(f"strict replay found no journaled outcome for replay key {key.replay_key!r}")
    else:
        inserted = tx.run(
            "insert_effect",
            {
                **key.new_row(digest, now),
                "owner_id": owner_id,
                "lease_token": token,
                "expires_at_ms": saturating_add(now, ttl_ms),
                "due_at_ms": due,
            },
        )
        if inserted:
            return Claimed(token, due, now, 1)
        tx.send("lock_effect", key.params())  # the row exists (another claimant's insert): read it under the lock
        row = tx.one("effect_row", key.params())
        if row is None:  # pragma: no cover - the primary key refused the insert, so the row is there
            raise EffectReplayCorrupt(f"journal row for {key.replay_key!r} vanished during a claim")
    if col(row, "envelope_hash") != digest:
        raise EffectReplayConflict(
            f"replay key {key.replay_key!r} was journaled with another envelope "
            f"(stored hash {col(row, 'envelope_hash')}, this one {digest})"
        )
    status = col(row, "status")
    if status == "completed":
        return Replayed(decode_outcome(key, col(row, "outcome")), col(row, "due_at_ms"), now)
    if status == "failed":
        return Failed(decode_error(key, col(row, "error")))
    if status == "in_progress" and col(row, "lease_expires_at_ms") > now:
        return Busy(col(row, "lease_expires_at_ms"), now)
    if status not in ("in_progress", "released"):
        raise EffectReplayCorrupt(f"journal row for {key.replay_key!r} has unknown status {status!r}")
    kept_due = col(row, "due_at_ms")
    due = kept_due if kept_due is not None else due
    changed = tx.run(
        "take_over_effect",
        {
            **key.params(),
            "owner_id": owner_id,
            "lease_token": token,
            "expires_at_ms": saturating_add(now, ttl_ms),
            "due_at_ms": due,
            "now_ms": now,
        },
    )
    if changed != 1:  # pragma: no cover - the row is locked (SQLite: the file is)
        raise EffectLeaseLost(f"journal row for {key.replay_key!r} changed during a takeover")
    return Claimed(token, due, now, int(col(row, "attempts")) + 1)


@dataclass(frozen=True)
class Result:
    """A result as the row records it: its status and its outcome or error, encoded."""

    status: str
    outcome: str | None
    error: str | None


def encode_result(outcome: RuntimeEffectOutcome | None, error: RuntimeEffectControllerError | None) -> Result:
    """The row's columns for a result (encoded before the transaction: its lock is not held for this)."""
    if outcome is not None:
        return Result("completed", _ENCODE.encode(outcome).decode(), None)
    assert error is not None
    return Result("failed", None, _ENCODE.encode(_Error(code=error.code, message=error.message)).decode())


def finalize(tx: Tx, key: Key, digest: str, token: str, result: Result) -> None:
    """Record the result, only while ``token`` still owns the row (reference §c.5 step 5)."""
    params = {
        **key.params(),
        "envelope_hash": digest,
        "lease_token": token,
        "status": result.status,
        "outcome": result.outcome,
        "error": result.error,
    }
    tx.send("lock_effect", key.params())
    params["now_ms"] = tx.now_ms()
    changed = tx.run("finalize_effect", params)
    if changed != 1:
        raise EffectLeaseLost(
            f"the claim on replay key {key.replay_key!r} was taken over before it finished; its result is discarded"
        )
    tx.send("notify_effect", {"payload": key.scope_identity})


def record_finished(tx: Tx, key: Key, digest: str, result: Result) -> bool:
    """Journal an effect that ran inside ``tx`` itself, claim and result in one row: ``False`` (nothing written)
    when the row exists -- another run's claim or result, which the caller reads in a transaction of its own
    after rolling ``tx`` back.

    Only for an effect whose every write is in ``tx`` (a process start on the journal's database): nothing
    outside the transaction can have happened, so there is no claim for anyone to wait on or take over.
    """
    params = {
        **key.new_row(digest, tx.now_ms()),
        "status": result.status,
        "outcome": result.outcome,
        "error": result.error,
    }
    return tx.run("insert_finished_effect", params) == 1


def renew(tx: Tx, key: Key, token: str, ttl_ms: int) -> bool:
    """Extend a live claim's lease (the heartbeat); ``False`` when the claim is no longer the row's."""
    tx.send("lock_effect", key.params())
    now = tx.now_ms()
    params = {**key.params(), "lease_token": token, "expires_at_ms": saturating_add(now, ttl_ms), "now_ms": now}
    return tx.run("renew_effect", params) == 1


def release(tx: Tx, key: Key, token: str) -> bool:
    """Give a claim up (a retryable failure): the row becomes claimable at once, its attempt count kept."""
    tx.send("lock_effect", key.params())
    changed = tx.run("release_effect", {**key.params(), "lease_token": token, "now_ms": tx.now_ms()})
    if changed:
        tx.send("notify_effect", {"payload": key.scope_identity})
    return changed == 1


def decode_outcome(key: Key, text: Any) -> RuntimeEffectOutcome:
    if text is None:
        raise EffectReplayCorrupt(f"completed journal row for {key.replay_key!r} has no outcome")
    try:
        return _OUTCOME.decode(text)
    except (msgspec.DecodeError, TypeError) as exc:
        raise EffectReplayCorrupt(
            f"journaled outcome for {key.replay_key!r} does not decode: {exc}", code="sqlite_effect_replay_decode"
        ) from exc


def decode_error(key: Key, text: Any) -> RuntimeEffectControllerError:
    if text is None:
        raise EffectReplayCorrupt(f"failed journal row for {key.replay_key!r} has no error")
    try:
        found = _ERROR.decode(text)
    except (msgspec.DecodeError, TypeError) as exc:
        raise EffectReplayCorrupt(
            f"journaled error for {key.replay_key!r} does not decode: {exc}", code="sqlite_effect_replay_decode"
        ) from exc
    return RuntimeEffectControllerError(found.code, found.message)


def record(row: Row) -> EffectJournalRecord:
    """A listing row as a public record (outcome and error decoded)."""
    outcome_text, error_text = col(row, "outcome"), col(row, "error")
    key = Key(col(row, "scope_identity"), col(row, "replay_key"), col(row, "scope_kind"), col(row, "scope_id"))
    error = None
    if error_text is not None:
        found = decode_error(key, error_text)
        error = {"code": found.code, "message": found.message}
    return EffectJournalRecord(
        scope_identity=key.scope_identity,
        scope_kind=key.scope_kind,
        scope_id=key.scope_id,
        replay_key=key.replay_key,
        envelope_hash=col(row, "envelope_hash"),
        status=col(row, "status"),
        attempts=int(col(row, "attempts")),
        lease_owner_id=col(row, "lease_owner_id"),
        lease_expires_at_ms=int(col(row, "lease_expires_at_ms")),
        due_at_ms=col(row, "due_at_ms"),
        created_at_ms=int(col(row, "created_at_ms")),
        updated_at_ms=int(col(row, "updated_at_ms")),
        outcome=None if outcome_text is None else decode_outcome(key, outcome_text),
        error=error,
    )
