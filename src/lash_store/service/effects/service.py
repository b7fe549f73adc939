"""The effect journal's behaviour, once: the host and its scoped controllers over any backend.

:class:`EffectHostService` hands out :class:`ScopedEffectController` s; a
controller's :meth:`~ScopedEffectController.execute_effect` is reference §c.5
with the fixes of §7:

* the journal key is the scope's full identity (kind and every id) plus the replay key (item 15);
* a heartbeat thread renews the claim's lease while the executor runs (item 16), so a long effect is
  never taken over while its runner is alive; a runner that dies stops renewing, and its claim is taken
  over once the lease expires;
* a retryable failure (:class:`RuntimeEffectControllerError` with ``retryable=True``, or any other
  exception, an interrupt included) releases the row for a later attempt instead of journaling
  ``failed``; rows count their attempts (item 17);
* strict replay is a property of each controller, not of the host (item 18);
* a caller waiting for another's live claim waits at most ``busy_timeout_ms`` (item 19), woken by the
  holder's finalisation (local notices; other processes through the backend's change feed) with a
  polling backstop;
* owner ids are UUID4s (item 20).

``EffectHost`` (SQLite), ``PostgresEffectHost`` and ``ReferenceEffectHost`` are
this class over their backends.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import math
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import msgspec

from lash_store.core.canonical import Verbatim, json_value, json_value_text, spliced_text
from lash_store.core.registry.registration import NormalisedRegistration, normalise_registration
from lash_store.core.validate import MAX_MS, check_id
from lash_store.effects import (
    EFFECT_KINDS,
    EffectInvocation,
    EffectJournalPruneReport,
    EffectJournalRecord,
    EffectReplayOptions,
    EffectScope,
    EffectSubject,
    ProcessCommand,
    ProcessEffectOutcome,
    ProcessStartGrant,
    RuntimeEffectCommand,
    RuntimeEffectEnvelope,
    RuntimeEffectLocalExecutor,
    RuntimeEffectOutcome,
)
from lash_store.errors import (
    BackendError,
    EffectBusyTimeout,
    EffectReplayCorrupt,
    EffectReplayKeyMissing,
    EffectStoreFailure,
    InvalidEffectInput,
    InvalidInput,
    MissingEffectScopeId,
    RuntimeEffectControllerError,
    StoreClosed,
)
from lash_store.options import StoreOptions, check_options
from lash_store.processes import ProcessEventAppendRequest, ProcessRegistration, ProcessScope
from lash_store.service.effects import dispatch, journal
from lash_store.service.lifecycle import BackendService
from lash_store.service.ports import Backend, Tx, joined
from lash_store.service.registry.service import ProcessRegistryService
from lash_store.service.registry.signals import Signals
from lash_store.service.registry.waits import MAX_PARK_S

log = logging.getLogger("lash_store")

T = TypeVar("T")

#: A busy waiter re-reads after this long at first, doubling up to :data:`MAX_BACKSTOP_S`.
FIRST_BACKSTOP_S = 0.025
MAX_BACKSTOP_S = 0.25
_STATUSES = ("in_progress", "released", "completed", "failed")

LocalExecutor = RuntimeEffectLocalExecutor | Callable[[RuntimeEffectEnvelope], RuntimeEffectOutcome] | None


def check_replay_options(options: EffectReplayOptions | None) -> EffectReplayOptions:
    if options is None:
        return EffectReplayOptions()
    if not isinstance(options, EffectReplayOptions):
        raise InvalidEffectInput("replay_options must be an EffectReplayOptions", "replay_options")
    for name in ("lease_ttl_ms", "heartbeat_interval_ms", "busy_timeout_ms"):
        value = getattr(options, name)
        if value is None and name != "lease_ttl_ms":
            continue
        _check_count(f"replay_options.{name}", value)
    return options


def _check_count(what: str, value: Any) -> int:
    """An integer in ``0..2**63-1`` (never a bool), else :class:`InvalidEffectInput` naming ``what``."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_MS:
        raise InvalidEffectInput(f"{what} must be an integer in 0..{MAX_MS}, got {value!r:.50}", what)
    return value


def _check_flag(what: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidEffectInput(f"{what} must be a bool, got {type(value).__name__}", what)
    return value


def check_scope(scope: Any) -> EffectScope:
    """A valid scope, or :class:`MissingEffectScopeId` (reference §c.2: every id field non-blank after trimming)."""
    if not isinstance(scope, EffectScope):
        raise MissingEffectScopeId(f"an effect scope is required, got {type(scope).__name__}")
    fields = journal_fields(scope)
    for name in fields:
        value = getattr(scope, name)
        if not isinstance(value, str) or not value.strip():
            raise MissingEffectScopeId(f"effect scope {scope.type} requires a non-blank {name}")
        try:
            check_id(name, value)  # the scope's ids key the journal: every backend must store and index them
        except InvalidInput as exc:
            raise MissingEffectScopeId(f"effect scope {scope.type} has an invalid {name}: {exc.detail}") from None
    return scope


def journal_fields(scope: EffectScope) -> tuple[str, ...]:
    try:
        return scope.id_fields
    except (KeyError, TypeError):  # an unknown kind, or one that is not even hashable
        raise MissingEffectScopeId(f"unknown effect scope kind {scope.type!r}") from None


class CheckedEnvelope(NamedTuple):
    """What :func:`check_envelope` found: the hash, a sleep's duration, a process start's registration."""

    digest: str
    sleep_ms: int | None
    registration: NormalisedRegistration | None  # a process start's, when it is valid


def check_envelope(envelope: Any) -> CheckedEnvelope:
    """The envelope's hash and sleep duration; typed errors (nothing written) for what the journal cannot take.

    Its structure is checked here, before anything is claimed: the typed parts (invocation, subject, replay,
    command, a process command's fields) must be what they claim to be -- a malformed process command is bad
    input, never a journaled failure.  The runtime scope, the request and ``caused_by`` are opaque (hashed).
    A process start's registration is normalised here too (the registry would, and an invalid one is left
    to it, which journals the failure); the envelope is then encoded around its text, not walked twice.
    """
    if not isinstance(envelope, RuntimeEffectEnvelope):
        raise InvalidEffectInput(f"expected a RuntimeEffectEnvelope, got {type(envelope).__name__}")
    invocation = envelope.invocation
    if not isinstance(invocation, EffectInvocation):
        raise InvalidEffectInput(f"invocation must be an EffectInvocation, got {type(invocation).__name__}")
    replay = invocation.replay
    key = getattr(replay, "key", None)
    if not isinstance(key, str) or not key.strip():
        raise EffectReplayKeyMissing("the envelope has no replay key (invocation.replay.key)")
    try:
        check_id("invocation.replay.key", key)  # it keys the journal: every backend must store and index it
    except InvalidInput as exc:
        raise InvalidEffectInput(f"invalid replay key (invocation.replay.key): {exc.detail}") from None
    subject = invocation.subject
    if not isinstance(subject, EffectSubject):
        raise InvalidEffectInput(f"invocation.subject must be an EffectSubject, got {type(subject).__name__}")
    if not isinstance(subject.effect_id, str) or not subject.effect_id.strip():
        raise InvalidEffectInput("invocation.subject.effect_id must be a non-blank string")
    command = envelope.command
    if not isinstance(command, RuntimeEffectCommand):
        raise InvalidEffectInput(f"command must be a RuntimeEffectCommand, got {type(command).__name__}")
    if not isinstance(command.type, str) or command.type not in EFFECT_KINDS:
        raise InvalidEffectInput(f"unknown effect command type {command.type!r:.50}")
    if subject.kind != command.type:
        raise InvalidEffectInput(
            f"the subject kind {subject.kind!r:.50} differs from the command type {command.type!r}"
        )
    sleep_ms = None
    if command.type == "sleep":
        sleep_ms = command.duration_ms
        if not isinstance(sleep_ms, int) or isinstance(sleep_ms, bool) or not 0 <= sleep_ms <= MAX_MS:
            raise InvalidEffectInput(f"a sleep needs duration_ms in 0..{MAX_MS}")
    registration = None
    if command.type == "process":
        check_process_command(command.process)
        registration = _start_registration(command.process)
    text = None
    if registration is not None and registration.as_given:
        text = _spliced_envelope_text(envelope, registration.text)
    if text is None:
        try:
            _, text = json_value_text("envelope", envelope)  # checked and encoded in one walk: stable_hash's text
        except InvalidInput as exc:
            raise InvalidEffectInput(str(exc)) from exc
    return CheckedEnvelope(hashlib.sha256(text.encode("utf-8")).hexdigest(), sleep_ms, registration)


def _spliced_envelope_text(envelope: RuntimeEffectEnvelope, registration_text: str) -> str | None:
    """A process start's envelope text around its registration's (``None``: walk it all, which says why)."""
    command = envelope.command
    assert command.process is not None
    stand_in = Verbatim(registration_text)
    process = msgspec.structs.replace(command.process, registration=stand_in)
    try:
        return spliced_text(
            msgspec.structs.replace(envelope, command=msgspec.structs.replace(command, process=process)), stand_in
        )
    except InvalidInput:
        return None


def _start_registration(command: ProcessCommand | None) -> NormalisedRegistration | None:
    """A process start's registration, normalised; ``None`` for another command or an invalid registration."""
    if command is None or command.type != "start" or command.registration is None:
        return None
    try:
        return normalise_registration(command.registration)
    except InvalidInput:  # the start fails in the registry, and the journal records that failure
        return None


_PROCESS_KINDS = ("start", "list", "transfer", "delete_session", "await", "cancel", "signal")


def check_process_command(command: Any) -> None:
    """The fields a process command of its kind needs, of the right types (the registry checks their values)."""
    if not isinstance(command, ProcessCommand):
        raise InvalidEffectInput(
            f"a process effect needs command.process, a ProcessCommand (got {type(command).__name__})"
        )
    kind = command.type
    if not isinstance(kind, str) or kind not in _PROCESS_KINDS:
        raise InvalidEffectInput(f"unknown process command {kind!r:.50}")

    def need(name: str, expected: type, optional: bool = False) -> None:
        value = getattr(command, name)
        if value is None and optional:
            return
        if not isinstance(value, expected):
            raise InvalidEffectInput(
                f"process {kind} needs {name}, a {expected.__name__}{' or None' if optional else ''} "
                f"(got {type(value).__name__})"
            )

    def need_id(name: str) -> None:
        value = getattr(command, name)
        if not isinstance(value, str) or not value.strip():
            raise InvalidEffectInput(f"process {kind} needs {name}, a non-blank string (got {value!r:.50})")

    if kind == "start":
        need("registration", ProcessRegistration)
        need("grant", ProcessStartGrant, optional=True)
    elif kind == "list":
        need("owner_scope", ProcessScope)
        if command.mode not in (None, "live", "all"):
            raise InvalidEffectInput(f"process list needs mode 'live', 'all' or None (got {command.mode!r:.50})")
    elif kind == "transfer":
        need("from_scope", ProcessScope)
        need("to_scope", ProcessScope)
        need("process_ids", list, optional=True)
    elif kind == "delete_session":
        need_id("session_id")
    elif kind in ("await", "cancel"):
        need_id("process_id")
        need("reason", str, optional=True)
    else:  # signal
        need_id("process_id")
        need("request", ProcessEventAppendRequest)


def _executor(local_executor: LocalExecutor) -> RuntimeEffectLocalExecutor:
    if local_executor is None:
        return RuntimeEffectLocalExecutor.unavailable()
    if isinstance(local_executor, RuntimeEffectLocalExecutor):
        return local_executor
    if callable(local_executor):
        return RuntimeEffectLocalExecutor.runner(local_executor)
    raise InvalidEffectInput(
        f"local_executor must be a RuntimeEffectLocalExecutor or callable, got {local_executor!r:.50}", "local_executor"
    )


class Beat:
    """One claim kept alive by a host's heartbeat thread; ``lost`` once a renewal finds the claim gone."""

    __slots__ = ("due", "interval_s", "lost", "renew")

    def __init__(self, renew: Callable[[], bool], interval_s: float) -> None:
        self.renew = renew
        self.interval_s = interval_s
        self.due = time.monotonic() + interval_s
        self.lost = False


class Heartbeats:
    """One thread per host renews every running claim's lease when it is due (reference §7 item 16).

    Starting and stopping a thread per effect would cost more than the
    effect's journal writes; this thread starts with the first claim and
    ends after a while without any.  A renewal that fails transiently is
    retried at the next beat (the interval is a third of the TTL, so two
    beats fit before the lease expires).
    """

    IDLE_S = 5.0

    def __init__(self, name: str) -> None:
        self._name = name
        # Entered as the bare lock, never as the condition (Condition.__enter__ is Python code: an interrupt
        # landing just after its acquire would leave the lock held for good).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._beats: set[Beat] = set()
        self._thread: threading.Thread | None = None
        self._wake_at = -math.inf  # when the thread wakes by itself (-inf: it is not waiting)
        self._pid = os.getpid()

    def add(self, renew: Callable[[], bool], interval_s: float) -> Beat:
        beat = Beat(renew, interval_s)
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's thread is not here
                self._pid, self._thread = os.getpid(), None
                self._beats = set()
            self._beats.add(beat)
            if self._thread is None:
                self._wake_at = -math.inf
                self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
                self._thread.start()
            elif beat.due < self._wake_at:
                # Only then: a thread woken for nothing would cost the claim a thread switch.
                self._cond.notify()
        return beat

    def remove(self, beat: Beat) -> None:
        with self._lock:
            self._beats.discard(beat)

    def _main(self) -> None:
        while True:
            with self._lock:
                idle_since = time.monotonic()
                while not self._beats:
                    if time.monotonic() - idle_since >= self.IDLE_S:
                        self._thread = None
                        return
                    self._sleep(self.IDLE_S)
                now = time.monotonic()
                due = [beat for beat in self._beats if beat.due <= now]
                if not due:
                    self._sleep(min(beat.due for beat in self._beats) - now)
                    continue
                for beat in due:
                    beat.due = now + beat.interval_s
            for beat in due:
                with self._lock:
                    if beat not in self._beats:
                        continue
                try:
                    alive = beat.renew()
                except StoreClosed:
                    alive = False
                except Exception:  # a transient database failure: the next beat tries again before the lease runs out
                    log.warning("effect lease renewal failed; retrying", exc_info=True)
                    continue
                if not alive:
                    beat.lost = True
                    self.remove(beat)

    def _sleep(self, seconds: float) -> None:
        """Wait (holding the condition) until notified or ``seconds`` pass; ``add`` notifies only earlier beats."""
        seconds = min(seconds, MAX_PARK_S)  # a TTL of 2**62 ms would overflow the lock's timeout
        self._wake_at = time.monotonic() + seconds
        try:
            self._cond.wait(seconds)
        finally:
            self._wake_at = -math.inf


class EffectHostService(BackendService):
    """An effect host over any backend (see the module docstring).

    Every controller it hands out shares its backend, its owner id (a UUID4)
    and its options; a host is safe to share between threads.
    """

    def __init__(
        self,
        backend: Backend,
        options: StoreOptions,
        signals: Signals,
        replay_options: EffectReplayOptions | None = None,
    ) -> None:
        self._backend = backend
        self.options = check_options(options)
        self.signals = signals
        self.replay_options = check_replay_options(replay_options)
        self.owner_id = str(uuid.uuid4())
        self._tokens = itertools.count(1)
        self.heartbeats = Heartbeats(f"lash-store effect heartbeats {self.owner_id[:8]}")
        self._replay_default = False
        # Whether execute_effect looks for a finished row in a read transaction before the locked prepare.
        # Only a hint (prepare answers every case): off after a lookup found nothing and the effect was
        # claimed, back on once a prepare replays, so a run of first executions pays no extra transaction
        # and a run of replays takes no write lock.
        self.read_first = True

    # -- lifecycle -------------------------------------------------------

    def requires_durable_attachment_store(self) -> bool:
        """Journaled outcomes may name attachments by reference, so attachments must be durable too."""
        return True

    # -- controllers -----------------------------------------------------

    def scoped(self, scope: EffectScope, *, replay: bool | None = None) -> ScopedEffectController:
        """A controller journaling under ``scope``; :class:`MissingEffectScopeId` for a blank id.

        ``replay`` (default: the host's :meth:`start_replay` setting when the
        controller is made) puts the controller in strict replay mode.
        """
        checked = check_scope(scope)
        strict = self._replay_default if replay is None else _check_flag("replay", replay)
        return ScopedEffectController(self, checked, strict)

    def scoped_static(self, scope: EffectScope) -> ScopedEffectController:
        """Same as :meth:`scoped` (this host supports every scope)."""
        return self.scoped(scope)

    def start_replay(self) -> None:
        """Controllers scoped from now on start in strict replay mode (existing ones keep theirs)."""
        self._replay_default = True

    # -- listings and retention ------------------------------------------

    def list_journal(
        self,
        *,
        status: str | None = None,
        scope: EffectScope | None = None,
        limit: int | None = None,
    ) -> list[EffectJournalRecord]:
        """Journal rows, oldest update first, optionally of one status and/or one scope."""
        if status is not None and (not isinstance(status, str) or status not in _STATUSES):
            raise InvalidEffectInput(
                f"status must be one of {', '.join(_STATUSES)} or None, got {status!r:.50}", "status"
            )
        identity = None if scope is None else check_scope(scope).identity
        if limit is not None:
            _check_count("limit", limit)
        params = {"status": status, "scope_identity": identity, "limit": 2**62 if limit is None else limit}
        found = self._read(lambda tx: tx.all("list_effects", params))
        return [journal.record(row) for row in found]

    def prune_journal(self, older_than_epoch_ms: int, *, dry_run: bool = False) -> EffectJournalPruneReport:
        """Delete finished rows (completed, failed) last updated before ``older_than_epoch_ms``.

        Claimed and released rows are never pruned: their effects have not finished.
        """
        value = _check_count("older_than_epoch_ms", older_than_epoch_ms)
        _check_flag("dry_run", dry_run)
        params = {"before_ms": value}
        if dry_run:
            row = self._read(lambda tx: tx.one("count_prunable_effects", params))
            count = 0 if row is None else int(row[0])
        else:
            count = self._write(lambda tx: tx.run("prune_effects", params))
        return EffectJournalPruneReport(older_than_epoch_ms=value, dry_run=dry_run, row_count=count)

    # -- internals ---------------------------------------------------------

    def next_token(self) -> str:
        return f"{self.owner_id}:{next(self._tokens)}:{secrets.token_hex(8)}"

    @property
    def backend(self) -> Backend:
        """The backend the journal's transactions run on."""
        return self._backend

    def _read(self, body: Callable[[Tx], T]) -> T:
        try:
            return self._backend.read(body)
        except (StoreClosed, RuntimeEffectControllerError, InvalidInput):
            raise
        except BackendError as exc:
            raise EffectStoreFailure(f"effect journal database failure: {exc}") from exc

    def _write(self, body: Callable[[Tx], T]) -> T:
        try:
            return self._backend.write(body)
        except (StoreClosed, RuntimeEffectControllerError, InvalidInput):
            raise
        except BackendError as exc:
            raise EffectStoreFailure(f"effect journal database failure: {exc}") from exc


class ScopedEffectController:
    """The journal of one scope (reference ``ScopedEffectController``); make one with ``host.scoped(scope)``."""

    def __init__(self, host: EffectHostService, scope: EffectScope, replay: bool) -> None:
        self._host = host
        self._scope = scope
        self._identity = scope.identity
        self._replay = replay

    @property
    def effect_scope(self) -> EffectScope:
        return self._scope

    @property
    def scope_id(self) -> str:
        """The reference's scope id (the kind's last id); the journal keys on :attr:`scope_identity`."""
        return self._scope.scope_id

    @property
    def scope_identity(self) -> str:
        return self._identity

    @property
    def turn_id(self) -> str | None:
        return self._scope.turn_id if self._scope.type == "turn" else None

    @property
    def controller(self) -> EffectHostService:
        """The host this controller journals through."""
        return self._host

    @property
    def replaying(self) -> bool:
        return self._replay

    def start_replay(self) -> None:
        """Strict replay from now on, for this controller only: a missing record is an error, never executed."""
        self._replay = True

    def execute_effect(
        self, envelope: RuntimeEffectEnvelope, local_executor: LocalExecutor = None
    ) -> RuntimeEffectOutcome:
        """Run ``envelope`` at most once per journal key and return its outcome (reference §c.5, see the module).

        A journaled outcome is returned without running anything (a sleep's
        due time is kept); a journaled failure is raised again.
        """
        return self.execute_effect_with(envelope, local_executor)[0]

    def execute_effect_with(
        self,
        envelope: RuntimeEffectEnvelope,
        local_executor: LocalExecutor = None,
        also: tuple[Backend, Callable[[Tx], object]] | None = None,
    ) -> tuple[RuntimeEffectOutcome, bool]:
        """:meth:`execute_effect`, and ``also = (backend, body)`` in the very transaction that journals the outcome
        where that is one transaction (a process start whose registry, and ``backend``, share the journal's
        database).  Returns the outcome and whether ``body`` ran and committed with it; when it did not, the
        caller runs it itself.  The router closes a delivery this way.
        """
        digest, sleep_ms, registration = check_envelope(envelope)
        executor = _executor(local_executor)
        host = self._host
        options = host.replay_options
        ttl = max(1, options.lease_ttl_ms)
        key = journal.Key(self._identity, envelope.replay_key, self._scope.type, self._scope.scope_id)
        deadline = None if options.busy_timeout_ms is None else time.monotonic() + options.busy_timeout_ms / 1000
        signals = host.signals
        backstop = FIRST_BACKSTOP_S
        # The replay fast path: a finished row is final, so a read transaction (no write lock) can answer it.
        # Strict replay always takes it (nothing will be claimed); other controllers when the host's hint says so.
        read_first = self._replay or host.read_first
        if read_first:
            finished = host._read(lambda tx: _finished(tx, key, digest))
            if isinstance(finished, journal.Replayed):
                _sleep_until(finished.due_at_ms, finished.now_ms)
                return finished.outcome, False
            if isinstance(finished, journal.Failed):
                raise finished.error
        fused = self._start_in_one_transaction(envelope, registration, executor, key, digest, also)
        if fused is not None:
            if read_first:
                host.read_first = False
            host.signals.publish(None)
            return fused
        while True:
            cursor = signals.cursor()
            step = host._write(
                functools.partial(
                    journal.prepare,
                    key=key,
                    digest=digest,
                    sleep_ms=sleep_ms,
                    owner_id=host.owner_id,
                    token=host.next_token(),
                    ttl_ms=ttl,
                    strict=self._replay,
                )
            )
            if isinstance(step, journal.Replayed):
                host.read_first = True
                _sleep_until(step.due_at_ms, step.now_ms)
                return step.outcome, False
            if isinstance(step, journal.Failed):
                host.read_first = True
                raise step.error
            if isinstance(step, journal.Claimed):
                if read_first:
                    host.read_first = False
                return self._run(envelope, executor, key, digest, step, ttl), False
            # Busy: wait for the holder's finalisation, its lease's expiry, or the backstop.  Only a waiting
            # caller counts as a waiter (the change feed runs while anyone waits).
            with signals.waiting():
                signals.prepare()
                while True:
                    wait_s = min(backstop, max(step.expires_at_ms - step.now_ms, 0) / 1000 + 0.001)
                    if deadline is not None:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise EffectBusyTimeout(
                                f"replay key {key.replay_key!r} stayed claimed by another caller for longer than "
                                f"{options.busy_timeout_ms} ms"
                            )
                        wait_s = min(wait_s, left)
                    signals.wait(cursor, wait_s)
                    backstop = min(backstop * 2, MAX_BACKSTOP_S)
                    cursor = signals.cursor()
                    still = host._read(lambda tx: _still_busy(tx, key))
                    if still is None:
                        break
                    step = still

    def _run(
        self,
        envelope: RuntimeEffectEnvelope,
        executor: RuntimeEffectLocalExecutor,
        key: journal.Key,
        digest: str,
        claim: journal.Claimed,
        ttl: int,
    ) -> RuntimeEffectOutcome:
        host = self._host
        interval = host.replay_options.heartbeat_interval_ms
        interval = max(1, ttl // 3) if interval is None else interval
        heartbeat = None
        if interval > 0:
            heartbeat = host.heartbeats.add(
                lambda: host._write(lambda tx: journal.renew(tx, key, claim.token, ttl)), interval / 1000
            )
        outcome: RuntimeEffectOutcome | None = None
        failure: RuntimeEffectControllerError | None = None
        try:
            try:
                if envelope.command.type == "sleep":
                    _sleep_until(claim.due_at_ms, claim.now_ms)
                    outcome = RuntimeEffectOutcome.sleep()
                elif envelope.command.type == "process":
                    # Built here from the registry's checked records: plain JSON already.
                    outcome = dispatch.run_process_command(envelope, executor)
                else:
                    outcome = _checked_outcome(executor.execute(envelope))
            except RuntimeEffectControllerError as exc:
                if exc.retryable:
                    raise
                failure, outcome = exc, None
        except BaseException:
            if heartbeat is not None:
                host.heartbeats.remove(heartbeat)
                heartbeat = None
            self._release(key, claim.token)
            raise
        finally:
            if heartbeat is not None:
                host.heartbeats.remove(heartbeat)
        result = journal.encode_result(outcome, failure)  # encoded before the write lock is taken
        host._write(lambda tx: journal.finalize(tx, key, digest, claim.token, result))
        host.signals.publish(None)
        if failure is not None:
            raise failure
        assert outcome is not None
        return outcome

    def _start_in_one_transaction(
        self,
        envelope: RuntimeEffectEnvelope,
        registration: NormalisedRegistration | None,
        executor: RuntimeEffectLocalExecutor,
        key: journal.Key,
        digest: str,
        also: tuple[Backend, Callable[[Tx], object]] | None,
    ) -> tuple[RuntimeEffectOutcome, bool] | None:
        """A process start whose registry shares the journal's database: start and journal in one transaction.

        Nothing runs outside the database, so nothing can happen between a claim and its result: the
        registration, the grant and the journaled outcome commit together or not at all, and the journal
        row is written once, finished (no claim exists for anyone to wait on or take over; a crash leaves
        nothing behind).  The row's primary key still arbitrates: when a row exists -- a replay, or another
        run's claim -- the insert writes nothing, everything is rolled back and the caller's general path
        reads the row.  ``None`` then, and when this does not apply (strict replay, another command, a
        registry elsewhere) or the start itself fails (bad arguments, a registration conflict, a database
        error in it): the general path claims, runs and journals the failure as it always does.
        """
        process = envelope.command.process
        if (
            self._replay  # strict replay never writes
            or process is None
            or process.type != "start"
            or registration is None  # none, or an invalid one: the general path journals the failure
            or process.grant is None
            or executor.label != "process_control"
        ):
            return None
        registry = executor.into_process()
        if not isinstance(registry, ProcessRegistryService):
            return None
        host = self._host
        join = joined(host.backend, registry.backend)
        if join is None:
            return None
        also_join = None if also is None else joined(host.backend, also[0])
        try:
            start = registry.start_body(registration, process.grant.owner_scope, process.grant.descriptor)
        except InvalidInput:
            return None

        def body(tx: Tx) -> tuple[RuntimeEffectOutcome, bool]:
            try:
                record = start(join(tx))
                if also is not None and also_join is not None:
                    also[1](also_join(tx))
            except Exception as exc:
                raise _StartFailed() from exc
            outcome = RuntimeEffectOutcome.process_outcome(ProcessEffectOutcome(type="start", record=record))
            if not journal.record_finished(tx, key, digest, journal.encode_result(outcome, None)):
                raise _StartFailed()  # the row exists: the general path reads it
            return outcome, also_join is not None

        try:
            return host._write(body)
        except _StartFailed:
            return None

    def _release(self, key: journal.Key, token: str) -> None:
        try:
            released = self._host._write(lambda tx: journal.release(tx, key, token))
        except BaseException:  # the claim then simply expires after its TTL
            log.warning("releasing the claim on effect %r failed", key.replay_key, exc_info=True)
            return
        if released:
            self._host.signals.publish(None)


class _StartFailed(Exception):
    """A one-transaction process start failed, or found its journal row (rolled back: take the general path)."""


def _checked_outcome(outcome: Any) -> RuntimeEffectOutcome:
    """An executor's result, if the journal can record it (plain JSON inside a :class:`RuntimeEffectOutcome`)."""
    if not isinstance(outcome, RuntimeEffectOutcome):
        raise RuntimeEffectControllerError(
            "sqlite_effect_replay_encode",
            f"the executor returned {type(outcome).__name__}, not a RuntimeEffectOutcome",
            retryable=True,
        )
    try:
        plain_outcome = json_value("outcome", outcome)
    except InvalidInput as exc:
        message = f"the outcome cannot be journaled: {exc}"
        raise EffectReplayCorrupt(message, code="sqlite_effect_replay_encode") from exc
    try:  # its typed fields must be of their types, or every replay would fail to decode the journaled row
        msgspec.convert(plain_outcome, RuntimeEffectOutcome)
    except msgspec.ValidationError as exc:
        message = f"the outcome cannot be journaled: {exc}"
        raise EffectReplayCorrupt(message, code="sqlite_effect_replay_encode") from exc
    return outcome


def _finished(tx: Tx, key: journal.Key, digest: str) -> journal.Replayed | journal.Failed | None:
    """A completed or failed row's result, read without the write lock; ``None`` for anything else."""
    row = tx.one("effect_row", key.params())
    if row is None or journal.col(row, "envelope_hash") != digest:
        return None  # absent, or a conflict: prepare decides (and raises) under the lock
    status = journal.col(row, "status")
    if status == "completed":
        now = tx.now_ms() if journal.col(row, "due_at_ms") is not None else 0
        return journal.Replayed(
            journal.decode_outcome(key, journal.col(row, "outcome")), journal.col(row, "due_at_ms"), now
        )
    if status == "failed":
        return journal.Failed(journal.decode_error(key, journal.col(row, "error")))
    return None


def _still_busy(tx: Tx, key: journal.Key) -> journal.Busy | None:
    """The row's live claim, or ``None`` when the caller should prepare again (finished, released, expired)."""
    row = tx.one("effect_row", key.params())
    if row is None or journal.col(row, "status") != "in_progress":
        return None
    now = tx.now_ms()
    expires = journal.col(row, "lease_expires_at_ms")
    return journal.Busy(expires, now) if expires > now else None


def _sleep_until(due_at_ms: int | None, now_ms: int) -> None:
    if due_at_ms is not None and due_at_ms > now_ms:
        remaining = (due_at_ms - now_ms) / 1000
        end = time.monotonic() + remaining
        while remaining > 0:
            time.sleep(min(remaining, MAX_PARK_S))
            remaining = end - time.monotonic()
