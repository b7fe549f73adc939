"""Checking every registry argument once, at the boundary, and normalising registrations (reference §a.5.1).

Each ``check_*`` returns the value the service works with (opaque JSON turned
into plain data) or raises :class:`InvalidProcessInput` naming the field; the
service calls them before it opens a transaction, so bad input writes nothing.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

from msgspec import Struct

from lash_store.core.canonical import (
    MAX_JSON_DEPTH,
    canonical_text,
    json_value,
    json_value_text,
    register_constant,
)
from lash_store.core.registry import payload_schema
from lash_store.core.registry.semantics import await_output_of, pointer_tokens
from lash_store.core.validate import check_id, check_instance, check_list, check_ms, check_text
from lash_store.errors import InvalidInput, InvalidProcessInput
from lash_store.processes import (
    CORE_EVENT_TYPES,
    DedupeKey,
    ProcessAwaitOutput,
    ProcessEventAppendRequest,
    ProcessEventSemantics,
    ProcessEventType,
    ProcessExternalRef,
    ProcessHandleDescriptor,
    ProcessLease,
    ProcessLeaseCompletion,
    ProcessProvenance,
    ProcessRegistration,
    ProcessScope,
    Selector,
    TerminalSpec,
    WakeSpec,
)

F = TypeVar("F", bound=Callable[..., Any])

_SELECTOR_KINDS = ("payload", "pointer", "const", "template", "present")
_STATES = ("completed", "failed", "cancelled")


def registry_input(check: F) -> F:
    """The shared validators raise :class:`InvalidInput`; the registry's callers get :class:`InvalidProcessInput`."""

    @functools.wraps(check)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return check(*args, **kwargs)
        except InvalidProcessInput:
            raise
        except InvalidInput as exc:
            raise InvalidProcessInput(exc.what, exc.detail) from None

    return wrapper  # type: ignore[return-value]


def _not_blank(what: str, value: Any) -> str:
    check_id(what, value)
    if not value.strip():
        raise InvalidProcessInput(what, "must not be blank")
    return str(value)


# ---------------------------------------------------------------------------
# Registrations


class NormalisedRegistration(Struct, frozen=True):
    """A registration with the core event types added, every opaque value plain, and its hash.

    ``text`` is the normal registration's canonical text (what ``hash`` is taken over); ``as_given`` says
    that it is also the canonical text of the registration as the caller gave it -- nothing was added or
    rebuilt in another shape -- so an envelope holding that registration can be encoded around ``text``.
    """

    registration: ProcessRegistration
    hash: str
    input_json: str
    event_types_json: str
    caused_by_json: str | None
    text: str
    as_given: bool


@registry_input
def normalise_registration(registration: Any) -> NormalisedRegistration:
    """Validate, add the missing core event types (in order, after the caller's), hash."""
    check_instance("registration", registration, ProcessRegistration)
    process_id = _not_blank("registration.id", registration.id)
    provenance, provenance_json, caused_by_json = _provenance_texts("registration.provenance", registration.provenance)
    declared = [
        # The library's own core event types are valid as they are (frozen module constants).
        event_type
        if id(event_type) in _CORE_TEXT
        else check_event_type(f"registration.event_types[{index}]", event_type)
        for index, event_type in enumerate(check_list("registration.event_types", registration.event_types))
    ]
    names = [event_type.name for event_type in declared]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise InvalidProcessInput(f"registration.event_types[{index}].name", f"{name!r} is declared twice")
    declared += [core for core in CORE_EVENT_TYPES if core.name not in names]
    process_input, input_json = json_value_text("registration.input", registration.input)
    normal = ProcessRegistration(id=process_id, input=process_input, event_types=declared, provenance=provenance)
    # registration_hash(normal) is H of {event_types, id, input, provenance}: its canonical text is built from
    # the texts stored anyway, each part walked once (json_value_text checked and encoded input and caused_by).
    event_types_json = "[" + ",".join(_CORE_TEXT.get(id(t)) or canonical_text(t) for t in declared) + "]"
    parts = [f'"event_types":{event_types_json}', f'"id":{canonical_text(process_id)}']
    if normal.input is not None:  # plain() leaves out fields that are None
        parts.append(f'"input":{input_json}')
    parts.append(f'"provenance":{provenance_json}')
    text = "{" + ",".join(parts) + "}"
    return NormalisedRegistration(
        registration=normal,
        hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        input_json=input_json,
        event_types_json=event_types_json,
        caused_by_json=caused_by_json,
        text=text,
        as_given=_as_given(registration, len(declared)),
    )


def _as_given(registration: ProcessRegistration, normal_count: int) -> bool:
    """Whether ``registration``'s own canonical text is its normal form's: exact types throughout (a subclass
    could carry fields of its own) and every event type one of the core constants, none of them added."""
    provenance = registration.provenance
    scope = provenance.owner_scope
    given = registration.event_types
    return (
        type(registration) is ProcessRegistration
        and type(registration.id) is str
        and type(provenance) is ProcessProvenance
        and type(provenance.host_profile_id) is str
        and type(scope) is ProcessScope
        and type(scope.session_id) is str
        and (scope.agent_frame_id is None or type(scope.agent_frame_id) is str)
        and type(given) in (list, tuple)
        and len(given) == normal_count
        and all(id(event_type) in _CORE_TEXT for event_type in given)
    )


#: The canonical text of each core event type, by identity (see normalise_registration).
_CORE_TEXT: dict[int, str] = {id(core): canonical_text(core) for core in CORE_EVENT_TYPES}
for _core in CORE_EVENT_TYPES:  # every registration holds them: json_value copies their conversion
    register_constant(_core)


def _provenance_texts(what: str, provenance: Any) -> tuple[ProcessProvenance, str, str | None]:
    """``provenance`` checked, its canonical text and that of ``caused_by`` (``None`` when absent)."""
    check_instance(what, provenance, ProcessProvenance)
    owner_scope = check_scope(f"{what}.owner_scope", provenance.owner_scope)
    host_profile_id = _not_blank(f"{what}.host_profile_id", provenance.host_profile_id)
    caused_by, caused_by_json = json_value_text(f"{what}.caused_by", provenance.caused_by)
    checked = ProcessProvenance(owner_scope=owner_scope, host_profile_id=host_profile_id, caused_by=caused_by)
    # canonical_text(checked), from the parts (keys in sorted order; plain() leaves out fields that are None).
    fields = [] if caused_by is None else [f'"caused_by":{caused_by_json}']
    fields.append(f'"host_profile_id":{canonical_text(host_profile_id)}')
    fields.append(f'"owner_scope":{canonical_text(owner_scope)}')
    return checked, "{" + ",".join(fields) + "}", None if caused_by is None else caused_by_json


@registry_input
def check_scope(what: str, scope: Any) -> ProcessScope:
    """A scope names a session (non-empty) and optionally one of its agent frames."""
    check_instance(what, scope, ProcessScope)
    session_id = _not_blank(f"{what}.session_id", scope.session_id)
    frame = scope.agent_frame_id
    if frame is not None:
        check_text(f"{what}.agent_frame_id", frame)
        if frame:  # "" is no frame; any other is part of the scope id, an index key: an id's rules
            check_id(f"{what}.agent_frame_id", frame)
    return ProcessScope(session_id=session_id, agent_frame_id=frame)


def check_event_type(what: str, event_type: Any) -> ProcessEventType:
    check_instance(what, event_type, ProcessEventType)
    name = _not_blank(f"{what}.name", event_type.name)
    schema = json_value(f"{what}.payload_schema", event_type.payload_schema)
    try:
        payload_schema.check_schema(schema)
    except payload_schema.SchemaError as exc:
        raise InvalidProcessInput(f"{what}.payload_schema", str(exc)) from None
    semantics = _check_semantics(f"{what}.semantics", event_type.semantics)
    return ProcessEventType(name=name, payload_schema=schema, semantics=semantics)


def _check_semantics(what: str, semantics: Any) -> ProcessEventSemantics:
    check_instance(what, semantics, ProcessEventSemantics)
    terminal = None if semantics.terminal is None else _check_terminal(f"{what}.terminal", semantics.terminal)
    wake = None if semantics.wake is None else _check_wake(f"{what}.wake", semantics.wake)
    return ProcessEventSemantics(terminal=terminal, wake=wake)


def _check_terminal(what: str, terminal: Any) -> TerminalSpec:
    check_instance(what, terminal, TerminalSpec)
    if terminal.state not in _STATES:
        raise InvalidProcessInput(f"{what}.state", f"must be one of {', '.join(_STATES)}, got {terminal.state!r}")
    selector = None if terminal.await_output is None else check_selector(f"{what}.await_output", terminal.await_output)
    if selector is None and terminal.state != "completed":
        raise InvalidProcessInput(f"{what}.await_output", f"a {terminal.state} terminal type needs an await selector")
    return TerminalSpec(state=terminal.state, await_output=selector)


def _check_wake(what: str, wake: Any) -> WakeSpec:
    check_instance(what, wake, WakeSpec)
    when = None if wake.when is None else check_selector(f"{what}.when", wake.when)
    return WakeSpec(
        input=check_selector(f"{what}.input", wake.input),
        when=when,
        dedupe_key=_check_dedupe(f"{what}.dedupe_key", wake.dedupe_key),
    )


def _check_dedupe(what: str, dedupe: Any) -> DedupeKey:
    check_instance(what, dedupe, DedupeKey)
    if dedupe.kind == "event_identity":
        return DedupeKey.event_identity()
    if dedupe.kind == "selector":
        return DedupeKey.selector(check_selector(f"{what}.select", dedupe.select))
    if dedupe.kind == "const":
        return DedupeKey.const(check_text(f"{what}.value", dedupe.value))
    raise InvalidProcessInput(f"{what}.kind", f"unknown dedupe key kind {dedupe.kind!r}")


def check_selector(what: str, selector: Any, depth: int = 0) -> Selector:
    check_instance(what, selector, Selector)
    if depth > MAX_JSON_DEPTH:  # templates nest selectors: refused before the walk exhausts the recursion limit
        raise InvalidProcessInput(what, f"selectors nest deeper than {MAX_JSON_DEPTH} levels")
    kind = selector.kind
    if kind == "payload":
        return Selector.payload()
    if kind == "const":
        return Selector.const(json_value(f"{what}.value", selector.value))
    if kind in ("pointer", "present"):
        path = check_text(f"{what}.path", selector.path)
        if pointer_tokens(path) is None:
            raise InvalidProcessInput(f"{what}.path", f"{path!r} is not a JSON Pointer ('' or starting with '/')")
        return Selector.pointer(path) if kind == "pointer" else Selector.present(path)
    if kind == "template":
        text = check_text(f"{what}.text", selector.text)
        fields = selector.fields
        if not isinstance(fields, dict):
            raise InvalidProcessInput(f"{what}.fields", f"must be a dict of selectors, got {type(fields).__name__}")
        checked = {
            check_text(f"{what}.fields", name): check_selector(f"{what}.fields.{name}", sub, depth + 1)
            for name, sub in fields.items()
        }
        return Selector.template(text, checked)
    raise InvalidProcessInput(f"{what}.kind", f"unknown selector kind {kind!r} (one of {', '.join(_SELECTOR_KINDS)})")


# ---------------------------------------------------------------------------
# Other arguments


class PreparedAppend(Struct, frozen=True):
    """An append request checked and encoded before any lock is taken."""

    event_type: str
    payload: Any
    payload_json: str
    payload_hash: str
    replay_key: str | None
    target: ProcessScope | None


@registry_input
def prepare_append(request: Any) -> PreparedAppend:
    check_instance("request", request, ProcessEventAppendRequest)
    event_type = check_id("request.event_type", request.event_type)
    payload, payload_json = json_value_text("request.payload", request.payload)
    replay_key = None
    if request.replay is not None:
        replay_key = _not_blank("request.replay.key", getattr(request.replay, "key", None))
    target = (
        None
        if request.wake_target_scope is None
        else check_scope("request.wake_target_scope", request.wake_target_scope)
    )
    # The text of ``[event_type, payload]`` that payload_hash takes is the payload's text in a list: one
    # encoding for both.
    hashed = "[" + canonical_text(event_type) + "," + payload_json + "]"
    return PreparedAppend(
        event_type=event_type,
        payload=payload,
        payload_json=payload_json,
        payload_hash=hashlib.sha256(hashed.encode("utf-8")).hexdigest(),
        replay_key=replay_key,
        target=target,
    )


@registry_input
def check_await_output(what: str, output: Any) -> ProcessAwaitOutput:
    check_instance(what, output, ProcessAwaitOutput)
    checked = await_output_of(json_value(what, output))
    if checked is None:
        raise InvalidProcessInput(
            what, "success needs a value; failure needs class, code and message; cancelled a message"
        )
    return checked


@registry_input
def check_external_ref(what: str, ref: Any) -> ProcessExternalRef:
    check_instance(what, ref, ProcessExternalRef)
    return ProcessExternalRef(
        backend=_not_blank(f"{what}.backend", ref.backend),
        id=_not_blank(f"{what}.id", ref.id),
        metadata=json_value(f"{what}.metadata", ref.metadata),
    )


@registry_input
def check_descriptor(what: str, descriptor: Any) -> ProcessHandleDescriptor:
    check_instance(what, descriptor, ProcessHandleDescriptor)
    for name in ("kind", "label"):
        value = getattr(descriptor, name)
        if value is not None:
            check_text(f"{what}.{name}", value)
    return ProcessHandleDescriptor(kind=descriptor.kind, label=descriptor.label)


@registry_input
def check_process_id(what: str, process_id: Any) -> str:
    """Process ids (and lease owners) are non-empty, not blank, without NUL: a blank one can never exist."""
    return _not_blank(what, process_id)


@registry_input
def check_process_ids(what: str, process_ids: Any) -> list[str]:
    return [_not_blank(f"{what}[{index}]", value) for index, value in enumerate(check_list(what, process_ids))]


@registry_input
def check_duration(what: str, value: Any) -> int:
    """TTLs, sequences, instants: integers in ``0..2**63-1``."""
    return check_ms(what, value)


@registry_input
def check_timeout(what: str, value: Any) -> int | None:
    return None if value is None else check_ms(what, value)


@registry_input
def check_lease(what: str, lease: Any) -> ProcessLease:
    check_instance(what, lease, ProcessLease)
    _not_blank(f"{what}.process_id", lease.process_id)
    _not_blank(f"{what}.owner_id", lease.owner_id)
    _not_blank(f"{what}.lease_token", lease.lease_token)
    for name in ("fencing_token", "claimed_at_epoch_ms", "expires_at_epoch_ms"):
        check_ms(f"{what}.{name}", getattr(lease, name))
    return lease  # type: ignore[no-any-return]


@registry_input
def check_completion(what: str, completion: Any) -> ProcessLeaseCompletion:
    check_instance(what, completion, ProcessLeaseCompletion)
    _not_blank(f"{what}.process_id", completion.process_id)
    _not_blank(f"{what}.lease_token", completion.lease_token)
    return completion  # type: ignore[no-any-return]
