"""Process commands executed against a process-control executor's registry (reference §c.5 step 4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lash_store.effects import (
    ProcessCommand,
    ProcessEffectOutcome,
    RuntimeEffectEnvelope,
    RuntimeEffectLocalExecutor,
    RuntimeEffectOutcome,
)
from lash_store.errors import (
    BackendError,
    EffectPluginError,
    InvalidEffectInput,
    ProcessRegistryError,
    RuntimeEffectControllerError,
    StoreError,
)
from lash_store.processes import ProcessEventAppendRequest
from lash_store.service.registry.service import ProcessRegistryService

if TYPE_CHECKING:
    from lash_store.api import ProcessRegistryAPI

#: The reason cancel requests carry when a session is deleted.
SESSION_DELETED = "session deleted"


def run_process_command(envelope: RuntimeEffectEnvelope, executor: RuntimeEffectLocalExecutor) -> RuntimeEffectOutcome:
    command = envelope.command.process
    if command is None:
        raise InvalidEffectInput("a process effect needs command.process")
    registry = executor.into_process()
    try:
        return RuntimeEffectOutcome.process_outcome(_dispatch(registry, command))
    except (InvalidEffectInput, EffectPluginError):
        raise
    except BackendError as exc:  # the registry's database failed: a later attempt may succeed
        raise RuntimeEffectControllerError("plugin", f"process {command.type} failed: {exc}", retryable=True) from exc
    except (ProcessRegistryError, StoreError) as exc:
        raise EffectPluginError(f"process {command.type} failed: {exc}") from exc


def _dispatch(reg: ProcessRegistryAPI, command: ProcessCommand) -> ProcessEffectOutcome:
    kind = command.type
    if kind == "start":
        if command.registration is None:
            raise InvalidEffectInput("process start needs a registration")
        grant = command.grant
        if grant is not None and isinstance(reg, ProcessRegistryService):  # one transaction instead of two
            record = reg.register_and_grant(command.registration, grant.owner_scope, grant.descriptor)
            return ProcessEffectOutcome(type="start", record=record)
        record = reg.register_process(command.registration)
        if grant is not None:
            reg.grant_handle(grant.owner_scope, command.registration.id, grant.descriptor)
        return ProcessEffectOutcome(type="start", record=record)
    if kind == "list":
        if command.owner_scope is None:
            raise InvalidEffectInput("process list needs an owner scope")
        if command.mode == "all":
            entries = reg.list_handle_grants(command.owner_scope)
        else:
            entries = reg.list_live_handle_grants(command.owner_scope)
        return ProcessEffectOutcome(type="list", entries=list(entries))
    if kind == "transfer":
        if command.from_scope is None or command.to_scope is None:
            raise InvalidEffectInput("process transfer needs both scopes")
        reg.transfer_handle_grants(command.from_scope, command.to_scope, list(command.process_ids or []))
        return ProcessEffectOutcome(type="transfer")
    if kind == "delete_session":
        if not command.session_id:
            raise InvalidEffectInput("process delete_session needs a session id")
        # The registry appends the cancel requests in the deletion's own transaction (reference §7 item 9).
        report = reg.delete_session_process_state(command.session_id, reason=SESSION_DELETED)
        return ProcessEffectOutcome(type="delete_session", report=report)
    if kind == "await":
        if not command.process_id:
            raise InvalidEffectInput("process await needs a process id")
        return ProcessEffectOutcome(type="await", output=reg.await_process(command.process_id))
    if kind == "cancel":
        if not command.process_id:
            raise InvalidEffectInput("process cancel needs a process id")
        pid = command.process_id
        reg.append_event(pid, ProcessEventAppendRequest.cancel_requested(pid, command.reason))
        cancelled = reg.get_process(pid)
        if cancelled is None:
            raise EffectPluginError(f"process {pid!r} does not exist after its cancel request")
        return ProcessEffectOutcome(type="cancel", record=cancelled)
    if kind == "signal":
        if not command.process_id or command.request is None:
            raise InvalidEffectInput("process signal needs a process id and a request")
        result = reg.append_event(command.process_id, command.request)
        return ProcessEffectOutcome(type="signal", event=result.event)
    raise InvalidEffectInput(f"unknown process command {kind!r}")
