"""The host-event router, end to end: an occurrence starts exactly one process per matching subscription.

:class:`HostEventRouter` ties the three deployment components together:

1. ``record_occurrence`` (idempotent per source and idempotency key) and
2. ``reserve_matching_deliveries`` (each (occurrence, subscription) delivery handed out once, as ``reserved``),
   in one transaction (``record_and_reserve``);
3. for each reserved delivery, a ``process.start`` effect through the effect journal -- the process id is
   the delivery's deterministic id, the registration is derived from the stored subscription and
   occurrence only, so a re-run registers the very same process (registration is idempotent by id and
   hash) and the journal replays the recorded start instead of starting it again;
4. ``mark_delivery_started`` -- in the transaction of step 3 when the registry, the journal and the
   host-event store share one database (a deployment file, or one PostgreSQL schema): the journal row,
   the registration, the grant and the closed delivery then commit together.

A crash anywhere leaves a state that the next :meth:`~HostEventRouter.route` of the same occurrence or a
:meth:`~HostEventRouter.sweep` finishes: reserved deliveries are listed by ``pending_deliveries``; a start
interrupted inside the journal is taken over once its lease expires.

:func:`run_worker` is the other half: it claims the lease of each running process, runs it, completes it
with a fenced write and releases the lease; a worker killed mid-process leaves a lease that expires, and
the next worker runs the process again (so the work itself must be idempotent or journaled too).

Example::

    router = HostEventRouter(HostEventStore.open(path), EffectHost.open(path), ProcessRegistry.open(path))
    router.route(HostEventOccurrenceRequest(source_type="ui.button.pressed", source_key=key,
                                            idempotency_key="press-1", payload={"button": "Blue"}))
    router.sweep()  # at start-up: finish what a crash left behind
    run_worker(registry, "worker-1", lambda record: ProcessAwaitOutput.success({"ok": True}))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from msgspec import Struct

from lash_store.api import ProcessRegistryAPI
from lash_store.effects import (
    EffectScope,
    ProcessCommand,
    ProcessStartGrant,
    RuntimeEffectCommand,
    RuntimeEffectEnvelope,
    RuntimeEffectLocalExecutor,
    RuntimeScope,
)
from lash_store.errors import ProcessAlreadyLeased, ProcessAlreadyTerminal, UnknownProcess
from lash_store.host_events import HostEventOccurrenceRequest, TriggerDeliveryReservation
from lash_store.processes import (
    ProcessAwaitOutput,
    ProcessHandleDescriptor,
    ProcessProvenance,
    ProcessRecord,
    ProcessRegistration,
    ProcessScope,
    ProcessSessionDeleteReport,
)
from lash_store.service.effects.service import EffectHostService
from lash_store.service.host_events.service import HostEventStoreService

__all__ = ["START_REPLAY_KEY", "HostEventRouter", "SessionDeletionReport", "delivery_registration", "run_worker"]

#: The replay key of a delivery's start effect (its scope is the delivery's process).
START_REPLAY_KEY = "host-event:start"


class SessionDeletionReport(Struct, kw_only=True, frozen=True):
    """What :meth:`HostEventRouter.delete_session` did, step by step."""

    session_id: str
    subscriptions_cancelled: int
    deliveries_finished: int
    processes: ProcessSessionDeleteReport
    session_deleted: bool


class SessionDeleter(Protocol):
    """Deletes a session's conversation store: a session factory (SQLite root or PostgreSQL)."""

    def delete_session(self, session_id: str) -> None: ...


def delivery_registration(
    delivery: TriggerDeliveryReservation, host_profile_id: str = "default"
) -> ProcessRegistration:
    """The registration a delivery starts: a function of the stored subscription and occurrence only."""
    sub, occurrence = delivery.subscription, delivery.occurrence
    process_input = {
        "type": "lashlang_process",
        "module_ref": sub.module_ref,
        "required_surface_ref": sub.required_surface_ref,
        "process_ref": sub.process_ref,
        "process_name": sub.process_name,
        "input_template": sub.input_template,
        "event": occurrence.payload,
    }
    provenance = ProcessProvenance(
        owner_scope=ProcessScope(session_id=sub.session_id),
        host_profile_id=host_profile_id,
        caused_by={
            "type": "host_event",
            "occurrence_id": occurrence.occurrence_id,
            "subscription_id": sub.subscription_id,
            "handle": sub.handle,
        },
    )
    return ProcessRegistration.new(delivery.process_id, process_input).with_provenance(provenance)


class HostEventRouter:
    """Routes occurrences to processes through the host-event store, the effect journal and the registry."""

    def __init__(
        self,
        host_events: HostEventStoreService,
        effects: EffectHostService,
        registry: ProcessRegistryAPI,
        *,
        host_profile_id: str = "default",
    ) -> None:
        self.host_events = host_events
        self.effects = effects
        self.registry = registry
        self.host_profile_id = host_profile_id
        self._executor = RuntimeEffectLocalExecutor.process_control(registry)

    def route(self, request: HostEventOccurrenceRequest) -> list[ProcessRecord]:
        """Record ``request``, reserve its deliveries and start one process per delivery; returns them all.

        Safe to repeat (after a crash, or a host that emits the same occurrence again).
        """
        # Record, reserve and list in one transaction (record_occurrence, reserve_matching_deliveries, list_deliveries).
        return [self.start(delivery) for delivery in self.host_events.record_and_reserve(request)]

    def sweep(self) -> int:
        """Finish every delivery reserved but not started (a crashed router's); returns how many."""
        pending = self.host_events.pending_deliveries()
        for delivery in pending:
            self.start(delivery)
        return len(pending)

    def start(self, delivery: TriggerDeliveryReservation) -> ProcessRecord:
        """Start a delivery's process through the journal (once, whatever the retries) and close the delivery."""
        registration = delivery_registration(delivery, self.host_profile_id)
        grant = ProcessStartGrant(
            owner_scope=ProcessScope(session_id=delivery.subscription.session_id),
            descriptor=ProcessHandleDescriptor(kind="trigger", label=delivery.subscription.handle),
        )
        command = RuntimeEffectCommand.process_command(ProcessCommand.start(registration, grant))
        envelope = RuntimeEffectEnvelope.new(
            RuntimeScope(session_id=delivery.subscription.session_id),
            delivery.process_id,
            START_REPLAY_KEY,
            command,
            caused_by=registration.provenance.caused_by,
        )
        controller = self.effects.scoped(EffectScope.process(delivery.process_id))
        occurrence_id, subscription_id = delivery.occurrence.occurrence_id, delivery.subscription.subscription_id
        also = None
        if delivery.state == "reserved":  # closed with the start when one transaction can hold both
            also = (self.host_events.backend, self.host_events.mark_started_body(occurrence_id, subscription_id))
        outcome, closed = controller.execute_effect_with(envelope, self._executor, also)
        if also is not None and not closed:
            self.host_events.mark_delivery_started(occurrence_id, subscription_id)
        assert outcome.process is not None and outcome.process.record is not None
        return outcome.process.record

    def delete_session(
        self, session_id: str, *, sessions: SessionDeleter | None = None, reason: str = "session deleted"
    ) -> SessionDeletionReport:
        """Delete a session from the deployment: its triggers, its processes and (with ``sessions``) its store.

        In this order, each step idempotent, so a crash anywhere is finished by calling it again:

        1. cancel every subscription of the session (no occurrence matches it any more);
        2. start the session's deliveries that were reserved before (a crashed or concurrent route's): each
           starts once through the journal, which also waits out a start in flight elsewhere, so none can
           start after step 3;
        3. revoke the session's handles and request cancellation of every running process no other
           session holds (``delete_session_process_state``);
        4. delete the conversation store through ``sessions`` (a session factory), if given.
        """
        cancelled = self.host_events.cancel_session_subscriptions(session_id)
        pending = [d for d in self.host_events.pending_deliveries() if d.subscription.session_id == session_id]
        for delivery in pending:
            self.start(delivery)
        processes = self.registry.delete_session_process_state(session_id, reason=reason)
        if sessions is not None:
            sessions.delete_session(session_id)
        return SessionDeletionReport(
            session_id=session_id,
            subscriptions_cancelled=cancelled,
            deliveries_finished=len(pending),
            processes=processes,
            session_deleted=sessions is not None,
        )


def run_worker(
    registry: ProcessRegistryAPI,
    owner_id: str,
    handle: Callable[[ProcessRecord], ProcessAwaitOutput],
    *,
    lease_ttl_ms: int = 30_000,
) -> int:
    """Run every running process once it can be leased: claim, ``handle``, fenced completion, release.

    Processes another worker holds are skipped.  Returns how many processes this call completed.
    """
    completed = 0
    for record in registry.list_non_terminal():
        try:
            lease = registry.claim_process_lease(record.id, owner_id, lease_ttl_ms)
        except (ProcessAlreadyLeased, ProcessAlreadyTerminal, UnknownProcess):
            continue
        output = handle(record)
        registry.complete_process(record.id, output, lease=lease)
        registry.complete_process_lease(lease.completion())
        completed += 1
    return completed
