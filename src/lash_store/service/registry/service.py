"""The process registry's behaviour, once: every public method of every backend's registry.

:class:`ProcessRegistryService` checks arguments (before any transaction, so
bad input writes nothing), runs the rules of :mod:`lash_store.core.registry`
inside the backend's transactions, and publishes what it appended to the
waiters of this process after each commit.  ``ProcessRegistry`` (SQLite),
``PostgresProcessRegistry`` and ``ReferenceProcessRegistry`` are this class
over their backends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import msgspec

from lash_store.core.canonical import canonical_text
from lash_store.core.registry import registration as checks
from lash_store.core.registry import rows
from lash_store.errors import InvalidProcessInput, NotAWakeEvent, RegistrationConflict, UnknownProcess
from lash_store.options import StoreOptions, check_options
from lash_store.processes import (
    CANCELLED,
    COMPLETED,
    FAILED,
    ProcessAwaitOutput,
    ProcessEvent,
    ProcessEventAppendRequest,
    ProcessEventAppendResult,
    ProcessExternalRef,
    ProcessHandleDescriptor,
    ProcessHandleGrant,
    ProcessHandleGrantEntry,
    ProcessLease,
    ProcessLeaseCompletion,
    ProcessPruneReport,
    ProcessRecord,
    ProcessRegistration,
    ProcessReplay,
    ProcessScope,
    ProcessSessionDeleteReport,
    terminal_replay_key,
)
from lash_store.service.lifecycle import BackendService
from lash_store.service.ports import Backend, Tx
from lash_store.service.registry import events, handles, leases
from lash_store.service.registry.events import key, locked_process
from lash_store.service.registry.signals import Signals
from lash_store.service.registry.waits import Checked, Wait, wait_sync

T = TypeVar("T")

_TERMINAL_TYPE = {"success": COMPLETED, "failure": FAILED, "cancelled": CANCELLED}
_STATES = ("running", "completed", "failed", "cancelled", "terminal")
_NO_LIMIT = 2**62


class ProcessRegistryService(BackendService):
    """A process registry over any backend (see the module docstring).

    A registry is safe to share between threads.  Several registries
    (threads, processes, machines) may share the same data: writes to one
    process serialise on its row (SQLite: on the file's write lock).
    """

    def __init__(self, backend: Backend, options: StoreOptions, signals: Signals) -> None:
        self._backend = backend
        self.options = check_options(options)
        self.signals = signals

    # -- registration ----------------------------------------------------

    def register_process(self, registration: ProcessRegistration) -> ProcessRecord:
        """Register a process (idempotent by id and registration hash); returns the stored record.

        The same id with another registration raises :class:`RegistrationConflict`.
        """
        normal = checks.normalise_registration(registration)
        return self._backend.write(lambda tx: _register(tx, normal))

    def register_and_grant(
        self,
        registration: ProcessRegistration,
        owner_scope: ProcessScope,
        descriptor: ProcessHandleDescriptor | None = None,
    ) -> ProcessRecord:
        """:meth:`register_process` then :meth:`grant_handle` of the same process, in one transaction.

        What a journaled process start does.  Every argument is checked first (the errors the two calls would
        raise, in their order), so bad input -- a bad scope or descriptor too -- registers nothing.
        """
        return self._backend.write(self.start_body(registration, owner_scope, descriptor))

    def start_body(
        self,
        registration: ProcessRegistration | checks.NormalisedRegistration,
        owner_scope: ProcessScope,
        descriptor: ProcessHandleDescriptor | None = None,
    ) -> Callable[[Tx], ProcessRecord]:
        """:meth:`register_and_grant`'s transaction body, its arguments checked now (:class:`InvalidInput`).

        A caller whose transaction is on this registry's database (see :attr:`backend`) runs it inside its own
        transaction: an effect host journals a process start and performs it in one (passing the registration
        it has already normalised).
        """
        if isinstance(registration, checks.NormalisedRegistration):
            normal = registration
        else:
            normal = checks.normalise_registration(registration)
        scope = checks.check_scope("owner_scope", owner_scope)
        handle = checks.check_descriptor("descriptor", descriptor or ProcessHandleDescriptor())
        handle_json = canonical_text(handle)  # encoded before the transaction takes its locks

        def body(tx: Tx) -> ProcessRecord:
            record, inserted = _insert_or_compare(tx, normal)
            if inserted:  # this transaction created the row (and holds it): nothing to look up
                handles.put(tx, scope, record.id, handle_json)
            else:
                handles.grant(tx, scope, record.id, handle)
            return record

        return body

    @property
    def backend(self) -> Backend:
        """The backend this registry's transactions run on."""
        return self._backend

    def set_external_ref(self, process_id: str, external_ref: ProcessExternalRef) -> ProcessRecord:
        """Record where an external system runs the process (any status); returns the updated record."""
        checks.check_process_id("process_id", process_id)
        ref = checks.check_external_ref("external_ref", external_ref)
        return self._backend.write(lambda tx: _set_external_ref(tx, process_id, ref))

    def get_process(self, process_id: str) -> ProcessRecord | None:
        """The record, or ``None`` when no such process exists (backend failures raise)."""
        checks.check_process_id("process_id", process_id)
        row = self._backend.read(lambda tx: tx.one("process_row", key(process_id)))
        return None if row is None else rows.record(rows.process_row(row))

    def list_non_terminal(self) -> list[ProcessRecord]:
        """Every running process, by id: the recovery worklist."""
        return self.list_processes(state="running")

    def list_processes(
        self, *, state: str | None = None, after: str | None = None, limit: int | None = None
    ) -> list[ProcessRecord]:
        """Processes by id, a page at a time (``after`` = the last id of the previous page).

        ``state`` is ``None`` (all), ``"running"``, ``"completed"``, ``"failed"``,
        ``"cancelled"`` or ``"terminal"`` (every state but running).
        """
        params = _list_params(state, after, limit)
        found = self._backend.read(lambda tx: tx.all("list_processes", params))
        return [rows.record(rows.process_row(row)) for row in found]

    # -- events ----------------------------------------------------------

    def append_event(
        self, process_id: str, request: ProcessEventAppendRequest, *, lease: ProcessLease | None = None
    ) -> ProcessEventAppendResult:
        """Append an event (reference §a.5.2); a replayed request returns the stored event and appends nothing.

        With ``lease``, the append happens only while that lease is the
        process's live lease; otherwise :class:`LeaseLost` and nothing is written.
        """
        checks.check_process_id("process_id", process_id)
        prepared = checks.prepare_append(request)
        held = self._fence(process_id, lease)
        appended = self._backend.write(lambda tx: events.append(tx, process_id, prepared, held))
        self._announce(process_id, appended)
        return appended.result

    def complete_process(
        self, process_id: str, await_output: ProcessAwaitOutput, *, lease: ProcessLease | None = None
    ) -> ProcessRecord:
        """Append the terminal event matching ``await_output``'s type; returns the record after it.

        Repeating it with the same output is a no-op; another output raises.
        With ``lease``, it is a fenced write like :meth:`append_event`'s.
        """
        checks.check_process_id("process_id", process_id)
        output = checks.check_await_output("await_output", await_output)
        event_type = _TERMINAL_TYPE[output.type]
        request = ProcessEventAppendRequest(
            event_type=event_type,
            payload={"await_output": output},
            replay=ProcessReplay(key=terminal_replay_key(process_id, event_type)),
        )
        prepared = checks.prepare_append(request)
        held = self._fence(process_id, lease)

        def body(tx: Tx) -> tuple[events.Appended, ProcessRecord]:
            appended = events.append(tx, process_id, prepared, held)
            return appended, rows.record(rows.process_row(_one(tx.one("process_row", key(process_id)))))

        appended, record = self._backend.write(body)
        self._announce(process_id, appended)
        return record

    def events_after(self, process_id: str, after_sequence: int, *, limit: int | None = None) -> list[ProcessEvent]:
        """Events with a sequence above ``after_sequence``, ascending (at most ``limit``)."""
        checks.check_process_id("process_id", process_id)
        checks.check_duration("after_sequence", after_sequence)
        count = _NO_LIMIT if limit is None else checks.check_duration("limit", limit)
        params = {"process_id": process_id, "after_sequence": after_sequence, "limit": count}
        return self._backend.read(lambda tx: _events(tx, process_id, "events_after", params))

    def wake_events_after(self, process_id: str, after_sequence: int) -> list[ProcessEvent]:
        """Wake events above ``after_sequence`` that were not acknowledged, ascending."""
        checks.check_process_id("process_id", process_id)
        checks.check_duration("after_sequence", after_sequence)
        params = {"process_id": process_id, "after_sequence": after_sequence}
        return self._backend.read(lambda tx: _events(tx, process_id, "wake_events_after", params))

    def ack_wake(self, process_id: str, sequence: int) -> None:
        """Acknowledge the wake event at ``sequence`` (idempotent); a sequence that is no wake event is refused."""
        checks.check_process_id("process_id", process_id)
        checks.check_duration("sequence", sequence)
        self._backend.write(lambda tx: _ack(tx, process_id, sequence))

    # -- waits -----------------------------------------------------------

    def wait_event_after(
        self, process_id: str, event_type: str, after_sequence: int, *, timeout_ms: int | None = None
    ) -> ProcessEvent:
        """The first event of ``event_type`` above ``after_sequence``, waiting for it if needed.

        Raises :class:`WaitTimeout` after ``timeout_ms`` (``None``: wait until
        it comes or the caller is interrupted), :class:`UnknownProcess` if the
        process does not (or no longer) exist.
        """
        wait, read = self.event_wait(process_id, event_type, after_sequence, timeout_ms)
        return wait_sync(wait, lambda: self._backend.read(read))

    def await_process(self, process_id: str, *, timeout_ms: int | None = None) -> ProcessAwaitOutput:
        """The process's await output once it is terminal, waiting for that if needed (see :meth:`wait_event_after`)."""
        wait, read = self.terminal_wait(process_id, timeout_ms)
        return wait_sync(wait, lambda: self._backend.read(read))

    def event_wait(
        self, process_id: str, event_type: str, after_sequence: int, timeout_ms: int | None
    ) -> tuple[Wait[ProcessEvent], Callable[[Tx], Checked[ProcessEvent]]]:
        """The checked plan of :meth:`wait_event_after`: its decisions and its read (the async facade runs it)."""
        checks.check_process_id("process_id", process_id)
        checks.check_process_id("event_type", event_type)
        checks.check_duration("after_sequence", after_sequence)
        checks.check_timeout("timeout_ms", timeout_ms)

        def match(event: ProcessEvent) -> ProcessEvent | None:
            return event if event.event_type == event_type and event.sequence > after_sequence else None

        params = {"process_id": process_id, "event_type": event_type, "after_sequence": after_sequence}

        def read(tx: Tx) -> Checked[ProcessEvent]:
            process, (found,) = _read_process(tx, process_id, ("first_event_of_type", params))
            event = rows.event(found[0], process.owner_session_id) if found else None
            return event, process.last_sequence

        what = f"an event of type {event_type!r} after sequence {after_sequence}"
        return Wait(self.signals, process_id, what, timeout_ms, match), read

    def terminal_wait(
        self, process_id: str, timeout_ms: int | None
    ) -> tuple[Wait[ProcessAwaitOutput], Callable[[Tx], Checked[ProcessAwaitOutput]]]:
        """The checked plan of :meth:`await_process`."""
        checks.check_process_id("process_id", process_id)
        checks.check_timeout("timeout_ms", timeout_ms)

        def match(event: ProcessEvent) -> ProcessAwaitOutput | None:
            terminal = event.semantics.terminal
            return None if terminal is None else terminal.await_output

        def read(tx: Tx) -> Checked[ProcessAwaitOutput]:
            process, _ = _read_process(tx, process_id)
            record = rows.record(process)
            return record.status.await_output, process.last_sequence

        return Wait(self.signals, process_id, "its terminal event", timeout_ms, match), read

    def run_read(self, body: Callable[[Tx], Checked[T]]) -> Checked[T]:
        """Run a wait plan's read in a read transaction (the async facade runs it off the loop)."""
        return self._backend.read(body)

    # -- handles ---------------------------------------------------------

    def grant_handle(
        self, owner_scope: ProcessScope, process_id: str, descriptor: ProcessHandleDescriptor | None = None
    ) -> ProcessHandleGrant:
        """Give ``owner_scope`` a handle to the process (re-granting replaces the descriptor)."""
        scope = checks.check_scope("owner_scope", owner_scope)
        checks.check_process_id("process_id", process_id)
        handle = checks.check_descriptor("descriptor", descriptor or ProcessHandleDescriptor())
        return self._backend.write(lambda tx: handles.grant(tx, scope, process_id, handle))

    def revoke_handle(self, owner_scope: ProcessScope, process_id: str) -> None:
        """Remove the scope's handle if it has one (never an error)."""
        scope = checks.check_scope("owner_scope", owner_scope)
        checks.check_process_id("process_id", process_id)
        self._backend.write(lambda tx: tx.send("delete_grant", {"scope_id": scope.scope_id, "process_id": process_id}))

    def transfer_handle_grants(
        self, from_scope: ProcessScope, to_scope: ProcessScope, process_ids: Iterable[str]
    ) -> None:
        """Move handles between scopes, all or nothing; appends no events."""
        source = checks.check_scope("from_scope", from_scope)
        target = checks.check_scope("to_scope", to_scope)
        ids = checks.check_process_ids("process_ids", process_ids)
        self._backend.write(lambda tx: handles.transfer(tx, source, target, ids))

    def list_handle_grants(self, owner_scope: ProcessScope) -> list[ProcessHandleGrantEntry]:
        """Every handle of exactly this scope with its process, by process id (terminal processes included)."""
        return self._scope_grants(owner_scope, running_only=False)

    def list_live_handle_grants(self, owner_scope: ProcessScope) -> list[ProcessHandleGrantEntry]:
        """:meth:`list_handle_grants` restricted to running processes."""
        return self._scope_grants(owner_scope, running_only=True)

    def _scope_grants(self, owner_scope: ProcessScope, *, running_only: bool) -> list[ProcessHandleGrantEntry]:
        scope = checks.check_scope("owner_scope", owner_scope)
        params = {"scope_id": scope.scope_id, "running_only": running_only}
        return handles.entries(self._backend.read(lambda tx: tx.all("grants_of_scope", params)))

    def has_handle_grant(self, owner_scope: ProcessScope, process_id: str) -> bool:
        scope = checks.check_scope("owner_scope", owner_scope)
        checks.check_process_id("process_id", process_id)
        reads = [
            ("grant_descriptor", {"scope_id": scope.scope_id, "process_id": process_id}),
            ("process_row", key(process_id)),
        ]
        found = self._backend.read(lambda tx: tx.fetch_many(reads))
        return bool(found[0]) and bool(found[1])

    def handle_grants_for_process(self, process_id: str) -> list[ProcessHandleGrant]:
        """Every scope's grant of the process, by session id then scope id."""
        checks.check_process_id("process_id", process_id)

        def body(tx: Tx) -> list[ProcessHandleGrant]:
            _, (found,) = _read_process(tx, process_id, ("grants_of_process", key(process_id)))
            return [
                ProcessHandleGrant(session_id=row[0], process_id=process_id, descriptor=handles.descriptor(row[2]))
                for row in found
            ]

        return self._backend.read(body)

    def delete_session_process_state(
        self, session_id: str, *, reason: str | None = "session deleted"
    ) -> ProcessSessionDeleteReport:
        """Revoke every handle of the session and, in the same transaction, request cancellation of each running
        process no other session holds (``process.cancel_requested`` with ``reason``)."""
        checks.check_process_id("session_id", session_id)
        if reason is not None:
            checks.check_process_id("reason", reason)
        report, appended = self._backend.write(lambda tx: handles.delete_session(tx, session_id, reason))
        for event in appended:
            self.signals.publish(event.process_id, [event])
        return report

    # -- leases ----------------------------------------------------------

    def claim_process_lease(self, process_id: str, owner_id: str, lease_ttl_ms: int) -> ProcessLease:
        """Lease a running process (see :mod:`lash_store.service.registry.leases` for the rules)."""
        checks.check_process_id("process_id", process_id)
        checks.check_process_id("owner_id", owner_id)
        checks.check_duration("lease_ttl_ms", lease_ttl_ms)
        return self._backend.write(lambda tx: leases.claim(tx, process_id, owner_id, lease_ttl_ms))

    def renew_process_lease(self, lease: ProcessLease, lease_ttl_ms: int) -> ProcessLease:
        """Extend a live lease held by the caller (owner, token and fencing token), else :class:`LeaseLost`."""
        held = checks.check_lease("lease", lease)
        checks.check_duration("lease_ttl_ms", lease_ttl_ms)
        return self._backend.write(lambda tx: leases.renew(tx, held, lease_ttl_ms))

    def complete_process_lease(self, completion: ProcessLeaseCompletion) -> None:
        """Release the lease if ``completion`` names it; a stale or unknown completion is a no-op."""
        done = checks.check_completion("completion", completion)
        self._backend.write(lambda tx: leases.complete(tx, done))

    def get_process_lease(self, process_id: str) -> ProcessLease | None:
        """The process's current lease as stored (live or expired), ``None`` when released or never claimed."""
        checks.check_process_id("process_id", process_id)
        found = rows.lease_row(self._backend.read(lambda tx: tx.one("lease_row", key(process_id))))
        if found is None or found.lease_token is None or found.lease_owner_id is None:
            return None
        return rows.lease(process_id, found)

    def _fence(self, process_id: str, lease: ProcessLease | None) -> ProcessLease | None:
        if lease is None:
            return None
        held = checks.check_lease("lease", lease)
        if held.process_id != process_id:
            raise InvalidProcessInput("lease.process_id", f"is {held.process_id!r}, not {process_id!r}")
        return held

    # -- retention -------------------------------------------------------

    def prune_processes(
        self, older_than_epoch_ms: int, *, limit: int | None = None, dry_run: bool = False
    ) -> ProcessPruneReport:
        """Delete terminal processes last updated at or before ``older_than_epoch_ms``, with their events, acks,
        grants and leases (oldest first, at most ``limit``); ``dry_run`` only reports."""
        checks.check_duration("older_than_epoch_ms", older_than_epoch_ms)
        count = _NO_LIMIT if limit is None else checks.check_duration("limit", limit)
        if not isinstance(dry_run, bool):
            raise InvalidProcessInput("dry_run", f"must be a bool, got {type(dry_run).__name__}")

        def body(tx: Tx) -> ProcessPruneReport:
            return _prune(tx, older_than_epoch_ms, count, dry_run)

        report = self._backend.read(body) if dry_run else self._backend.write(body)
        if not dry_run:
            for process_id in report.process_ids:
                self.signals.publish(process_id)  # waiters on a pruned process learn it is gone
        return report

    # -- diagnostics -----------------------------------------------------

    def raw_rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every stored row of the registry, undecoded, from one snapshot (tools and tests look with this)."""
        tables = ("process", "event", "ack", "grant", "lease")

        def body(tx: Tx) -> dict[str, list[tuple[Any, ...]]]:
            found = tx.fetch_many([(f"all_{table}_rows", None) for table in tables])
            return {table: [tuple(row) for row in rows_] for table, rows_ in zip(tables, found, strict=True)}

        return self._backend.read(body)

    def describe_backend(self) -> dict[str, Any]:
        return self._backend.describe()

    def _announce(self, process_id: str, appended: events.Appended) -> None:
        """Tell this process's waiters what the commit changed."""
        if appended.written:
            self.signals.publish(process_id, [appended.result.event])
        elif appended.repaired:
            self.signals.publish(process_id)


# ---------------------------------------------------------------------------
# Transaction bodies


def _one(row: Any) -> Any:
    if row is None:
        raise AssertionError("a row read under the process lock vanished")
    return row


def _read_process(tx: Tx, process_id: str, *extra: tuple[str, Any]) -> tuple[rows.ProcessRow, list[list[Any]]]:
    """Read a process row (and ``extra``) in one go without locking; :class:`UnknownProcess` when absent."""
    found = tx.fetch_many([("process_row", key(process_id)), *extra])
    if not found[0]:
        raise UnknownProcess(process_id)
    return rows.process_row(found[0][0]), found[1:]


def _register(tx: Tx, normal: checks.NormalisedRegistration) -> ProcessRecord:
    return _insert_or_compare(tx, normal)[0]


def _insert_or_compare(tx: Tx, normal: checks.NormalisedRegistration) -> tuple[ProcessRecord, bool]:
    """The stored record, and whether this transaction inserted it."""
    registration = normal.registration
    now = tx.now_ms()
    owner = registration.provenance.owner_scope
    params = {
        "process_id": registration.id,
        "registration_hash": normal.hash,
        "input": normal.input_json,
        "event_types": normal.event_types_json,
        "owner_session_id": owner.session_id,
        "owner_agent_frame_id": owner.agent_frame_id,
        "host_profile_id": registration.provenance.host_profile_id,
        "caused_by": normal.caused_by_json,
        "now_ms": now,
    }
    # The primary key is the arbiter: the first registration wins, every later one compares hashes.
    if tx.run("insert_process", params) == 1:
        record = ProcessRecord(
            id=registration.id,
            input=registration.input,
            event_types=registration.event_types,
            provenance=registration.provenance,
            registration_hash=normal.hash,
            created_at_ms=now,
            updated_at_ms=now,
        )
        return record, True
    stored = rows.process_row(_one(tx.one("process_row", key(registration.id))))
    if stored.registration_hash != normal.hash:
        raise RegistrationConflict(registration.id, stored.registration_hash, normal.hash)
    return rows.record(stored), False


def _set_external_ref(tx: Tx, process_id: str, ref: ProcessExternalRef) -> ProcessRecord:
    process, _ = locked_process(tx, process_id)
    now = tx.now_ms()
    tx.send("set_external_ref", {"process_id": process_id, "external_ref": canonical_text(ref), "now_ms": now})
    return msgspec.structs.replace(rows.record(process), external_ref=ref, updated_at_ms=now)


def _events(tx: Tx, process_id: str, query: str, params: dict[str, Any]) -> list[ProcessEvent]:
    process, (found,) = _read_process(tx, process_id, (query, params))
    return [rows.event(row, process.owner_session_id) for row in found]


def _ack(tx: Tx, process_id: str, sequence: int) -> None:
    tx.send("lock_process_shared", key(process_id))
    _, (found,) = _read_process(tx, process_id, ("event_is_wake", {"process_id": process_id, "sequence": sequence}))
    if not found or not found[0][0]:
        raise NotAWakeEvent(process_id, sequence)
    tx.send("ack_wake", {"process_id": process_id, "sequence": sequence, "now_ms": tx.now_ms()})


def _list_params(state: str | None, after: str | None, limit: int | None) -> dict[str, Any]:
    if state is not None and state not in _STATES:
        raise InvalidProcessInput("state", f"must be one of {', '.join(_STATES)} or None, got {state!r}")
    if after is not None:
        checks.check_process_id("after", after)
    count = _NO_LIMIT if limit is None else checks.check_duration("limit", limit)
    return {"state": state, "after": after, "limit": min(count, _NO_LIMIT)}


def _prune(tx: Tx, older_than_ms: int, limit: int, dry_run: bool) -> ProcessPruneReport:
    found = tx.all("prunable_processes", {"older_than_ms": older_than_ms, "limit": min(limit, _NO_LIMIT)})
    ids = sorted(str(row[0]) for row in found)
    if not ids:
        return ProcessPruneReport(older_than_epoch_ms=older_than_ms, dry_run=dry_run)
    if not dry_run:
        for process_id in ids:  # in id order, like every multi-process write
            tx.send("lock_process", key(process_id))
    counts = _one(tx.one("prune_counts", {"process_ids": ids}))
    if not dry_run:
        tx.send("delete_processes", {"process_ids": ids})
        for process_id in ids:
            tx.send("notify_process", key(process_id))
    return ProcessPruneReport(
        older_than_epoch_ms=older_than_ms,
        dry_run=dry_run,
        process_ids=ids,
        event_count=int(counts[0]),
        grant_count=int(counts[1]),
    )
