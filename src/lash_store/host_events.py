"""The host-event store's public types (reference §b.2, names of SPEC §9) and its derived ids.

The host-event store is a deployment's durable router state for *triggers*:
a session subscribes a process to an outside event source (a button press, a
schedule, a webhook); when the host emits an occurrence, every matching
enabled subscription must start exactly one process.  The store records
subscriptions (addressed per session by handles ``trigger:N``, numbered in
order), records occurrences idempotently per (source type, source key,
idempotency key), and hands out each (occurrence, subscription) delivery once
through a transactional outbox: a delivery is ``reserved`` first and
``started`` once its process exists, and :meth:`HostEventStore.pending_deliveries`
lists the reserved ones a crash left behind.  :mod:`lash_store.host_event_router`
drives it end to end.

Every type is a keyword-constructed, frozen ``msgspec.Struct``; opaque values
(``source``, ``event_ty``, the target refs, ``input_template``, payloads) are
plain JSON.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Literal

from msgspec import Struct

from lash_store.core.canonical import canonical_text, stable_hash

if TYPE_CHECKING:
    from lash_store.sqlite.host_events import HostEventStore

__all__ = [
    "HostEventOccurrenceRecord",
    "HostEventOccurrenceRequest",
    "HostEventPruneReport",
    "HostEventStore",
    "TriggerDeliveryReservation",
    "TriggerSubscriptionDraft",
    "TriggerSubscriptionFilter",
    "TriggerSubscriptionRecord",
    "TriggerTarget",
    "delivery_process_id",
    "empty_source_key",
    "occurrence_id",
    "request_hash",
    "source_key_for_subscription",
]


class TriggerTarget(Struct, kw_only=True, frozen=True):
    """What a subscription starts (compared by equality of the JSON values in filters)."""

    module_ref: Any
    required_surface_ref: Any
    process_ref: Any
    process_name: Any


class TriggerSubscriptionDraft(Struct, kw_only=True, frozen=True):
    """A subscription to register: ``session_id``, ``source_type`` and ``source_key`` are non-blank text."""

    session_id: str
    source_type: str
    source_key: str
    name: str | None = None
    source: Any = None
    event_ty: Any = None
    module_ref: Any = None
    required_surface_ref: Any = None
    process_ref: Any = None
    process_name: Any = None
    input_template: Any = None

    @property
    def target(self) -> TriggerTarget:
        return TriggerTarget(
            module_ref=self.module_ref,
            required_surface_ref=self.required_surface_ref,
            process_ref=self.process_ref,
            process_name=self.process_name,
        )


class TriggerSubscriptionRecord(Struct, kw_only=True, frozen=True):
    """A registered subscription: the draft's fields, its id and handle (``trigger:N``), and whether it is enabled."""

    subscription_id: str
    handle: str
    sequence: int
    session_id: str
    source_type: str
    source_key: str
    enabled: bool
    created_at_ms: int
    updated_at_ms: int
    name: str | None = None
    source: Any = None
    event_ty: Any = None
    module_ref: Any = None
    required_surface_ref: Any = None
    process_ref: Any = None
    process_name: Any = None
    input_template: Any = None

    @property
    def target(self) -> TriggerTarget:
        return TriggerTarget(
            module_ref=self.module_ref,
            required_surface_ref=self.required_surface_ref,
            process_ref=self.process_ref,
            process_name=self.process_name,
        )


class TriggerSubscriptionFilter(Struct, kw_only=True, frozen=True):
    """Which subscriptions to list: every field set must match (``None``: any)."""

    session_id: str | None = None
    handle: str | None = None
    name: str | None = None
    source_type: str | None = None
    source_key: str | None = None
    enabled: bool | None = None
    target: TriggerTarget | None = None


class HostEventOccurrenceRequest(Struct, kw_only=True, frozen=True):
    """One occurrence the host emits; recording it twice with the same idempotency key records it once."""

    source_type: str
    source_key: str
    idempotency_key: str
    payload: Any = None
    source: Any = None


class HostEventOccurrenceRecord(Struct, kw_only=True, frozen=True):
    occurrence_id: str
    source_type: str
    source_key: str
    idempotency_key: str
    occurred_at_ms: int
    payload: Any = None
    source: Any = None


DeliveryState = Literal["reserved", "started"]


class TriggerDeliveryReservation(Struct, kw_only=True, frozen=True):
    """One (occurrence, subscription) delivery and the deterministic id of the process it starts."""

    occurrence: HostEventOccurrenceRecord
    subscription: TriggerSubscriptionRecord
    process_id: str
    state: DeliveryState = "reserved"
    reserved_at_ms: int = 0
    started_at_ms: int | None = None


class HostEventPruneReport(Struct, kw_only=True, frozen=True):
    """What ``prune`` removed (or, in a dry run, would remove): old occurrences whose deliveries all started."""

    older_than_epoch_ms: int
    dry_run: bool
    occurrence_count: int
    delivery_count: int


# --------------------------------------------------------------------------
# Derived ids (reference §0.2)


def source_key_for_subscription(source_type: str, source: Any) -> str:
    """``"source:{source_type}:sha256:" + H([source_type, source])``: stable across processes and restarts."""
    return f"source:{source_type}:sha256:{stable_hash([source_type, source])}"


def empty_source_key(source_type: str) -> str:
    """The source key of a source with no parameters (``{}``)."""
    return source_key_for_subscription(source_type, {})


def occurrence_id(source_type: str, source_key: str, idempotency_key: str) -> str:
    """``"host_event:" + H([source_type, source_key, idempotency_key])``: one id per idempotency triple."""
    return f"host_event:{stable_hash([source_type, source_key, idempotency_key])}"


def request_hash(request: HostEventOccurrenceRequest) -> str:
    """``H([source_type, source_key, payload, source])``: a reused idempotency key must carry the same content."""
    payload_json, source_json = canonical_text(request.payload), canonical_text(request.source)
    return request_hash_of_texts(request.source_type, request.source_key, payload_json, source_json)


def request_hash_of_texts(source_type: str, source_key: str, payload_json: str, source_json: str) -> str:
    """:func:`request_hash` from the payload's and the source's canonical texts (a store encodes them anyway):
    the canonical text of a list is its items' texts, comma-separated, in brackets."""
    parts = (canonical_text(source_type), canonical_text(source_key), payload_json, source_json)
    return hashlib.sha256(("[" + ",".join(parts) + "]").encode("utf-8")).hexdigest()


def delivery_process_id(occurrence: str, subscription_id: str) -> str:
    """``"process:host-event:" + H([occurrence_id, subscription_id])``: the process a delivery starts."""
    return f"process:host-event:{stable_hash([occurrence, subscription_id])}"


def __getattr__(name: str) -> Any:
    if name == "HostEventStore":
        from lash_store.sqlite.host_events import HostEventStore

        return HostEventStore
    if name == "AsyncHostEventStore":
        from lash_store.aio import AsyncHostEventStore

        return AsyncHostEventStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
