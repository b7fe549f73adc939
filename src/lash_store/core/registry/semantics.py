"""Selectors, truthiness and the materialisation of an event's semantics (reference §a.5.3, §0.3).

Everything here is a function of a declared event type and a payload, so the
same event materialises identically on every backend and on a replay.
"""

from __future__ import annotations

import re
from typing import Any

from lash_store.core.canonical import canonical_text
from lash_store.errors import InvalidProcessInput, SelectorMismatch
from lash_store.processes import (
    MaterializedSemantics,
    MaterializedTerminal,
    MaterializedWake,
    ProcessAwaitOutput,
    ProcessEvent,
    ProcessEventCause,
    ProcessEventInvocation,
    ProcessEventSubject,
    ProcessEventType,
    ProcessReplay,
    ProcessScope,
    ProcessWakeDelivery,
    Selector,
    TerminalSpec,
    WakeSpec,
    wake_id,
)

_MISSING = object()
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")


def string_form(value: Any) -> str:
    """A JSON string's raw text, anything else its compact JSON text (``7``, ``true``, ``{"a":1}``)."""
    return value if isinstance(value, str) else canonical_text(value)


def truthy(value: Any) -> bool:
    """``when`` truthiness: null is false, a boolean itself, strings/arrays/objects when non-empty, numbers true."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (str, list, dict)):
        return bool(value)
    return True  # numbers, 0 included


def pointer_tokens(path: str) -> list[str] | None:
    """The reference tokens of a JSON Pointer (RFC 6901), or ``None`` when ``path`` is not one."""
    if path == "":
        return []
    if not path.startswith("/"):
        return None
    tokens = path[1:].split("/")
    if any(re.search(r"~(?![01])", token) for token in tokens):
        return None
    return [token.replace("~1", "/").replace("~0", "~") for token in tokens]


def resolve(document: Any, path: str) -> Any:
    """The value at ``path`` in ``document``, or the module's missing marker."""
    tokens = pointer_tokens(path)
    if tokens is None:
        return _MISSING
    current = document
    for token in tokens:
        if isinstance(current, dict):
            if token not in current:
                return _MISSING
            current = current[token]
        elif isinstance(current, list):
            if not _ARRAY_INDEX.fullmatch(token) or int(token) >= len(current):
                return _MISSING
            current = current[int(token)]
        else:
            return _MISSING
    return current


def select(selector: Selector, payload: Any) -> Any:
    """Apply a selector to a payload; a pointer that does not resolve raises :class:`SelectorMismatch`."""
    kind = selector.kind
    if kind == "payload":
        return payload
    if kind == "const":
        return selector.value
    if kind == "present":
        return resolve(payload, selector.path or "") is not _MISSING
    if kind == "pointer":
        path = selector.path or ""
        found = resolve(payload, path)
        if found is _MISSING:
            raise SelectorMismatch(path)
        return found
    fields = selector.fields or {}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return string_form(select(fields[name], payload)) if name in fields else match.group(0)

    return _PLACEHOLDER.sub(fill, selector.text or "")


def await_output_of(value: Any) -> ProcessAwaitOutput | None:
    """``value`` as an await output when it has one's shape (a known ``type`` and its required fields)."""
    if not isinstance(value, dict):
        return None
    kind, control = value.get("type"), value.get("control")
    if kind == "success" and "value" in value:
        return ProcessAwaitOutput.success(value["value"], control)
    if kind == "failure" and all(isinstance(value.get(key), str) for key in ("class", "code", "message")):
        return ProcessAwaitOutput.failure(value["class"], value["code"], value["message"], value.get("raw"), control)
    if kind == "cancelled" and isinstance(value.get("message"), str):
        return ProcessAwaitOutput.cancelled(value["message"], value.get("raw"), control)
    return None


def _terminal(spec: TerminalSpec, payload: Any) -> MaterializedTerminal:
    if spec.await_output is None:
        if spec.state != "completed":  # refused at registration; kept as a guard for damaged rows
            raise InvalidProcessInput("event_type.semantics.terminal.await_output", "failed/cancelled need a selector")
        return MaterializedTerminal(state="completed", await_output=ProcessAwaitOutput.success(payload))
    value = select(spec.await_output, payload)
    output = await_output_of(value)
    if output is None:
        if spec.state == "completed":
            output = ProcessAwaitOutput.success(value)
        elif spec.state == "failed":
            output = ProcessAwaitOutput.failure("execution", "process_failed", string_form(value), value)
        else:
            output = ProcessAwaitOutput.cancelled(string_form(value), value)
    return MaterializedTerminal(state=spec.state, await_output=output)


def _wake(spec: WakeSpec, payload: Any, process_id: str, sequence: int) -> MaterializedWake | None:
    if spec.when is not None and not truthy(select(spec.when, payload)):
        return None
    wake_input = string_form(select(spec.input, payload))
    dedupe = spec.dedupe_key
    if dedupe.kind == "selector" and dedupe.select is not None:
        key = string_form(select(dedupe.select, payload))
    elif dedupe.kind == "const" and dedupe.value is not None:
        key = dedupe.value
    else:
        key = f"{process_id}:{sequence}"
    return MaterializedWake(input=wake_input, dedupe_key=key)


def materialize(event_type: ProcessEventType, payload: Any, process_id: str, sequence: int) -> MaterializedSemantics:
    """An event's semantics evaluated on its payload (selector failures raise)."""
    spec = event_type.semantics
    terminal = None if spec.terminal is None else _terminal(spec.terminal, payload)
    wake = None if spec.wake is None else _wake(spec.wake, payload, process_id, sequence)
    return MaterializedSemantics(terminal=terminal, wake=wake)


def invocation(
    owner_session_id: str, process_id: str, sequence: int, event_type: str, replay_key: str | None
) -> ProcessEventInvocation:
    """The envelope of an event: built from the event's identity, never stored separately."""
    return ProcessEventInvocation(
        scope=ProcessScope(session_id=owner_session_id),
        subject=ProcessEventSubject(process_id=process_id, sequence=sequence, event_type=event_type),
        caused_by=ProcessEventCause(process_id=process_id),
        replay=None if replay_key is None else ProcessReplay(key=replay_key),
    )


def wake_delivery(event: ProcessEvent, target: ProcessScope, process_caused_by: Any) -> ProcessWakeDelivery:
    """The wake of an event for ``target`` (the event must have materialised wake semantics)."""
    wake = event.semantics.wake
    assert wake is not None
    return ProcessWakeDelivery(
        wake_id=wake_id(target.scope_id, wake.dedupe_key),
        target_session_id=target.session_id,
        target_scope_id=target.scope_id,
        process_id=event.process_id,
        sequence=event.sequence,
        event_type=event.event_type,
        event_invocation=event.invocation,
        process_caused_by=process_caused_by,
        dedupe_key=wake.dedupe_key,
        input=wake.input,
        created_at_ms=event.occurred_at_ms,
    )
