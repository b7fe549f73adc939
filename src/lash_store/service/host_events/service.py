"""The host-event store's behaviour, once: every public method of every backend's store.

Reference §b.4 with the fixes of §7:

* occurrences are idempotent per (source type, source key, idempotency key) -- the occurrence id is
  derived from that triple and is the table's primary key, the arbiter of concurrent records (item 12);
* handles carry a number from a counter that is never reused, and listings order by it, so
  ``trigger:2`` comes before ``trigger:10`` (item 14);
* deliveries are a transactional outbox (item 13): ``reserve_matching_deliveries`` inserts them as
  ``reserved`` (the (occurrence, subscription) primary key hands each out once);
  ``mark_delivery_started`` moves one to ``started`` once its process exists; ``pending_deliveries``
  lists the reserved ones a crash left behind, for a sweeper;
* ``prune`` removes occurrences older than a horizon, with their deliveries, once every delivery
  has started (item 14).

Matching happens at reservation time (as in the original): a subscription registered after the
occurrence but before the reservation matches; one cancelled before it does not.
Arguments are checked before any transaction, so bad input writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from lash_store.core.canonical import json_value, json_value_text
from lash_store.core.validate import MAX_MS, check_id, check_text
from lash_store.errors import (
    CorruptData,
    InvalidHostEventInput,
    InvalidInput,
    OccurrenceConflict,
    UnknownDelivery,
    UnknownOccurrence,
)
from lash_store.host_events import (
    HostEventOccurrenceRecord,
    HostEventOccurrenceRequest,
    HostEventPruneReport,
    TriggerDeliveryReservation,
    TriggerSubscriptionDraft,
    TriggerSubscriptionFilter,
    TriggerSubscriptionRecord,
    TriggerTarget,
    delivery_process_id,
    occurrence_id,
    request_hash_of_texts,
    source_key_for_subscription,
)
from lash_store.options import StoreOptions, check_options
from lash_store.service.lifecycle import BackendService
from lash_store.service.ports import Backend, Row, Tx

T = TypeVar("T")

SUBSCRIPTION_COLUMNS = (
    "subscription_id",
    "handle",
    "seq",
    "session_id",
    "name",
    "source_type",
    "source_key",
    "enabled",
    "source",
    "event_ty",
    "module_ref",
    "required_surface_ref",
    "process_ref",
    "process_name",
    "input_template",
    "created_at_ms",
    "updated_at_ms",
)
OCCURRENCE_COLUMNS = (
    "occurrence_id",
    "source_type",
    "source_key",
    "idempotency_key",
    "request_hash",
    "payload",
    "source",
    "occurred_at_ms",
)
DELIVERY_COLUMNS = ("occurrence_id", "subscription_id", "process_id", "state", "created_at_ms", "started_at_ms")
_OPAQUE = ("source", "event_ty", "module_ref", "required_surface_ref", "process_ref", "process_name", "input_template")
_TARGET = ("module_ref", "required_surface_ref", "process_ref", "process_name")
_NO_LIMIT = 2**62


def _text(what: str, value: Any) -> str:
    """An id (session, source type and key, idempotency key, handle, occurrence, subscription): non-blank, and
    one every backend stores and indexes (no NUL, valid UTF-8, at most 768 bytes: SPEC section 4)."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidHostEventInput(what, "must be a non-blank string")
    try:
        return check_id(what, value)
    except InvalidInput as exc:
        raise InvalidHostEventInput(what, exc.detail) from None


def _name(what: str, value: Any) -> str:
    """Free text (a subscription's name, a filter's field): a string without NUL, valid UTF-8."""
    try:
        return check_text(what, value)
    except InvalidInput as exc:
        raise InvalidHostEventInput(what, exc.detail) from None


def _opaque(what: str, value: Any) -> str:
    try:
        return json_value_text(what, value)[1]
    except InvalidInput as exc:
        raise InvalidHostEventInput(what, exc.detail) from exc


_DECODE = msgspec.json.Decoder().decode


def _decode(what: str, text: str) -> Any:
    try:
        return _DECODE(text)
    except msgspec.DecodeError as exc:
        raise CorruptData(what, str(exc)) from exc


def subscription(row: Row) -> TriggerSubscriptionRecord:
    found = dict(zip(SUBSCRIPTION_COLUMNS, row, strict=True))
    try:
        opaque = {name: _DECODE(found[name]) for name in _OPAQUE}
    except msgspec.DecodeError:  # again, naming the damaged column
        opaque = {name: _decode(f"subscription {found['subscription_id']} {name}", found[name]) for name in _OPAQUE}
    return TriggerSubscriptionRecord(
        subscription_id=found["subscription_id"],
        handle=found["handle"],
        sequence=int(found["seq"]),
        session_id=found["session_id"],
        name=found["name"],
        source_type=found["source_type"],
        source_key=found["source_key"],
        enabled=bool(found["enabled"]),
        created_at_ms=int(found["created_at_ms"]),
        updated_at_ms=int(found["updated_at_ms"]),
        **opaque,
    )


def occurrence(row: Row) -> HostEventOccurrenceRecord:
    found = dict(zip(OCCURRENCE_COLUMNS, row, strict=True))
    what = f"occurrence {found['occurrence_id']}"
    return HostEventOccurrenceRecord(
        occurrence_id=found["occurrence_id"],
        source_type=found["source_type"],
        source_key=found["source_key"],
        idempotency_key=found["idempotency_key"],
        occurred_at_ms=int(found["occurred_at_ms"]),
        payload=_decode(f"{what} payload", found["payload"]),
        source=_decode(f"{what} source", found["source"]),
    )


def check_draft(draft: Any) -> dict[str, Any]:
    if not isinstance(draft, TriggerSubscriptionDraft):
        raise InvalidHostEventInput("draft", f"must be a TriggerSubscriptionDraft, got {type(draft).__name__}")
    params: dict[str, Any] = {
        "session_id": _text("draft.session_id", draft.session_id),
        "source_type": _text("draft.source_type", draft.source_type),
        "source_key": _text("draft.source_key", draft.source_key),
        "name": None if draft.name is None else _name("draft.name", _text("draft.name", draft.name)),
    }
    for name in _OPAQUE:
        params[name] = _opaque(f"draft.{name}", getattr(draft, name))
    return params


def check_request(request: Any) -> dict[str, Any]:
    if not isinstance(request, HostEventOccurrenceRequest):
        raise InvalidHostEventInput("request", f"must be a HostEventOccurrenceRequest, got {type(request).__name__}")
    source_type = _text("request.source_type", request.source_type)
    source_key = _text("request.source_key", request.source_key)
    key = _text("request.idempotency_key", request.idempotency_key)
    payload, source = _opaque("request.payload", request.payload), _opaque("request.source", request.source)
    return {
        "occurrence_id": occurrence_id(source_type, source_key, key),
        "source_type": source_type,
        "source_key": source_key,
        "idempotency_key": key,
        "request_hash": request_hash_of_texts(source_type, source_key, payload, source),  # encoded once, for both
        "payload": payload,
        "source": source,
    }


def _filter_params(selection: TriggerSubscriptionFilter | None) -> dict[str, Any]:
    if selection is None:
        selection = TriggerSubscriptionFilter()
    if not isinstance(selection, TriggerSubscriptionFilter):
        raise InvalidHostEventInput("filter", f"must be a TriggerSubscriptionFilter, got {type(selection).__name__}")
    params: dict[str, Any] = {}
    for name in ("session_id", "handle", "name", "source_type", "source_key"):
        value = getattr(selection, name)
        params[name] = None if value is None else _name(f"filter.{name}", value)
    if selection.enabled is not None and not isinstance(selection.enabled, bool):
        raise InvalidHostEventInput("filter.enabled", "must be a bool or None")
    params["enabled"] = None if selection.enabled is None else int(selection.enabled)
    target = selection.target
    if target is not None and not isinstance(target, TriggerTarget):
        raise InvalidHostEventInput("filter.target", f"must be a TriggerTarget or None, got {type(target).__name__}")
    params["has_target"] = 0 if target is None else 1
    for name in _TARGET:
        params[name] = None if target is None else _opaque(f"filter.target.{name}", getattr(target, name))
    return params


def _check_ms(what: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_MS:
        raise InvalidHostEventInput(what, f"must be an integer in 0..{MAX_MS}")
    return value


class HostEventStoreService(BackendService):
    """A host-event store over any backend (see the module docstring); safe to share between threads."""

    def __init__(self, backend: Backend, options: StoreOptions) -> None:
        self._backend = backend
        self.options = check_options(options)

    def source_key_for_subscription(self, source_type: str, source: Any) -> str:
        """The stable source key of ``(source_type, source)`` (pure: the same for every process and restart)."""
        try:
            plain_source = json_value("source", source)
        except InvalidInput as exc:
            raise InvalidHostEventInput(exc.what, exc.detail) from None
        return source_key_for_subscription(_text("source_type", source_type), plain_source)

    # -- subscriptions ---------------------------------------------------

    def register_subscription(self, draft: TriggerSubscriptionDraft) -> TriggerSubscriptionRecord:
        """Register a subscription (enabled) with the next handle ``trigger:N``; not idempotent."""
        params = check_draft(draft)

        def body(tx: Tx) -> TriggerSubscriptionRecord:
            row = tx.one("next_subscription_number")
            assert row is not None
            number = int(row[0])
            now = tx.now_ms()
            values = {
                **params,
                "subscription_id": f"subscription:{number}",
                "handle": f"trigger:{number}",
                "seq": number,
                "now_ms": now,
            }
            tx.send("insert_subscription", values)
            stored = {**values, "enabled": 1, "created_at_ms": now, "updated_at_ms": now}
            return subscription(tuple(stored[name] for name in SUBSCRIPTION_COLUMNS))

        return self._backend.write(body)

    def list_subscriptions(self, filter: TriggerSubscriptionFilter | None = None) -> list[TriggerSubscriptionRecord]:
        """Subscriptions matching ``filter`` (every set field), by session then handle number."""
        params = _filter_params(filter)
        return [subscription(row) for row in self._backend.read(lambda tx: tx.all("list_subscriptions", params))]

    def cancel_subscription(self, session_id: str, handle: str) -> bool:
        """Disable the session's subscription ``handle``; returns whether it was enabled (another session's: False)."""
        params = {"session_id": _text("session_id", session_id), "handle": _text("handle", handle)}

        def body(tx: Tx) -> bool:
            tx.send("lock_subscription", params)
            return tx.run("disable_subscription", {**params, "now_ms": tx.now_ms()}) == 1

        return self._backend.write(body)

    def cancel_session_subscriptions(self, session_id: str) -> int:
        """Disable every enabled subscription of ``session_id`` in one statement (a deleted session's triggers
        must not start anything more); returns how many were enabled.  Deliveries already reserved stay."""
        params = {"session_id": _text("session_id", session_id)}
        return self._backend.write(
            lambda tx: tx.run("disable_session_subscriptions", {**params, "now_ms": tx.now_ms()})
        )

    # -- occurrences and deliveries --------------------------------------

    def record_occurrence(self, request: HostEventOccurrenceRequest) -> HostEventOccurrenceRecord:
        """Record an occurrence once per (source type, source key, idempotency key).

        The same request again returns the stored record (its original
        time); the same key with other content raises :class:`OccurrenceConflict`.
        """
        params = check_request(request)
        return self._backend.write(lambda tx: _record(tx, params)[0])

    def record_and_reserve(self, request: HostEventOccurrenceRequest) -> list[TriggerDeliveryReservation]:
        """:meth:`record_occurrence`, :meth:`reserve_matching_deliveries` and :meth:`list_deliveries` of it,
        in one transaction: every delivery of the occurrence, reserved or started (what the router starts).
        """
        params = check_request(request)

        def body(tx: Tx) -> list[TriggerDeliveryReservation]:
            found, inserted = _record(tx, params)
            tx.send("lock_occurrence", {"occurrence_id": found.occurrence_id})
            matched: list[Row] = []
            reserved = _reserve(tx, found, matched)
            if inserted and len(reserved) == len(matched):
                # A new occurrence: its deliveries are exactly those just reserved (what the listing would read).
                return sorted(reserved, key=lambda delivery: delivery.subscription.sequence)
            return _deliveries(tx, "deliveries_of_occurrence", {"occurrence_id": found.occurrence_id})

        return self._backend.write(body)

    def get_occurrence(self, occurrence_id: str) -> HostEventOccurrenceRecord | None:
        """The occurrence, or ``None``."""
        params = {"occurrence_id": _text("occurrence_id", occurrence_id)}
        row = self._backend.read(lambda tx: tx.one("occurrence_row", params))
        return None if row is None else occurrence(row)

    def list_occurrences(self, *, limit: int | None = None) -> list[HostEventOccurrenceRecord]:
        """Occurrences, oldest first."""
        params = {"limit": _NO_LIMIT if limit is None else _check_ms("limit", limit)}
        return [occurrence(row) for row in self._backend.read(lambda tx: tx.all("list_occurrences", params))]

    def reserve_matching_deliveries(self, occurrence_id: str) -> list[TriggerDeliveryReservation]:
        """Reserve a delivery for every enabled subscription matching the occurrence now; returns only the new ones.

        A repeated call returns ``[]``; reserved deliveries not yet started
        are listed by :meth:`pending_deliveries`.  Unknown id -> :class:`UnknownOccurrence`.
        """
        key = {"occurrence_id": _text("occurrence_id", occurrence_id)}

        def body(tx: Tx) -> list[TriggerDeliveryReservation]:
            tx.send("lock_occurrence", key)
            row = tx.one("occurrence_row", key)
            if row is None:
                raise UnknownOccurrence(key["occurrence_id"])
            return _reserve(tx, occurrence(row))

        return self._backend.write(body)

    def pending_deliveries(self, *, limit: int | None = None) -> list[TriggerDeliveryReservation]:
        """Deliveries reserved but not started (what a crash left behind), oldest first."""
        params = {"limit": _NO_LIMIT if limit is None else _check_ms("limit", limit)}
        return self._backend.read(lambda tx: _deliveries(tx, "pending_deliveries", params))

    def list_deliveries(self, occurrence_id: str) -> list[TriggerDeliveryReservation]:
        """Every delivery of one occurrence (reserved or started), by subscription number."""
        params = {"occurrence_id": _text("occurrence_id", occurrence_id)}
        return self._backend.read(lambda tx: _deliveries(tx, "deliveries_of_occurrence", params))

    def mark_delivery_started(self, occurrence_id: str, subscription_id: str) -> bool:
        """Close a delivery: ``reserved`` -> ``started``.  Returns ``False`` when it had already started.

        A delivery that was never reserved raises :class:`UnknownDelivery`.
        """
        return self._backend.write(self.mark_started_body(occurrence_id, subscription_id))

    def mark_started_body(self, occurrence_id: str, subscription_id: str) -> Callable[[Tx], bool]:
        """:meth:`mark_delivery_started`'s transaction body, its arguments checked now.

        A caller whose transaction is on this store's database (see :attr:`backend`) runs it inside its own:
        the router closes a delivery in the transaction that journals its process start.
        """
        key = {
            "occurrence_id": _text("occurrence_id", occurrence_id),
            "subscription_id": _text("subscription_id", subscription_id),
        }

        def body(tx: Tx) -> bool:
            tx.send("lock_delivery", key)
            if tx.run("start_delivery", {**key, "now_ms": tx.now_ms()}):
                return True
            if tx.one("delivery_row", key) is None:
                raise UnknownDelivery(occurrence_id, subscription_id)
            return False

        return body

    @property
    def backend(self) -> Backend:
        """The backend this store's transactions run on."""
        return self._backend

    # -- retention -------------------------------------------------------

    def prune(self, older_than_epoch_ms: int, *, dry_run: bool = False) -> HostEventPruneReport:
        """Delete occurrences recorded before the horizon, with their deliveries, once all of them started.

        An occurrence with a pending delivery is kept until the delivery is
        started.  After pruning, re-recording the same idempotency key records
        a new occurrence: keep the horizon longer than any retry of the host.
        """
        params = {"before_ms": _check_ms("older_than_epoch_ms", older_than_epoch_ms)}
        if not isinstance(dry_run, bool):
            raise InvalidHostEventInput("dry_run", f"must be a bool, got {type(dry_run).__name__}")

        def count(tx: Tx) -> tuple[int, int]:
            row = tx.one("count_prunable", params)
            assert row is not None
            return int(row[0]), int(row[1] or 0)

        if dry_run:
            occurrences, deliveries = self._backend.read(count)
        else:

            def body(tx: Tx) -> tuple[int, int]:
                deliveries = tx.run("prune_deliveries", params)
                return tx.run("prune_occurrences", params), deliveries

            occurrences, deliveries = self._backend.write(body)
        return HostEventPruneReport(
            older_than_epoch_ms=params["before_ms"],
            dry_run=dry_run,
            occurrence_count=occurrences,
            delivery_count=deliveries,
        )


def _record(tx: Tx, params: dict[str, Any]) -> tuple[HostEventOccurrenceRecord, bool]:
    """The occurrence, and whether this transaction inserted it."""
    now = tx.now_ms()
    if tx.run("insert_occurrence", {**params, "now_ms": now}):
        values = {**params, "occurred_at_ms": now}
        return occurrence(tuple(values[name] for name in OCCURRENCE_COLUMNS)), True
    row = tx.one("occurrence_row", {"occurrence_id": params["occurrence_id"]})
    assert row is not None  # the primary key held it: it is committed and never updated
    stored = dict(zip(OCCURRENCE_COLUMNS, row, strict=True))
    if stored["request_hash"] != params["request_hash"]:
        raise OccurrenceConflict(params["idempotency_key"], stored["request_hash"], params["request_hash"])
    return occurrence(row), False


def _reserve(
    tx: Tx, found: HostEventOccurrenceRecord, matched: list[Row] | None = None
) -> list[TriggerDeliveryReservation]:
    """Reserve a delivery of the occurrence ``found`` (whose lock ``tx`` holds) for every enabled subscription
    matching it now (the new ones are returned); ``matched`` receives the subscriptions that matched."""
    now = tx.now_ms()
    subscriptions = tx.all("matching_subscriptions", {"source_type": found.source_type, "source_key": found.source_key})
    if matched is not None:
        matched.extend(subscriptions)
    reserved = []
    for sub_row in subscriptions:
        sub = subscription(sub_row)
        process_id = delivery_process_id(found.occurrence_id, sub.subscription_id)
        values = {
            "occurrence_id": found.occurrence_id,
            "subscription_id": sub.subscription_id,
            "process_id": process_id,
            "now_ms": now,
        }
        if tx.run("insert_delivery", values):
            reserved.append(
                TriggerDeliveryReservation(
                    occurrence=found, subscription=sub, process_id=process_id, reserved_at_ms=now
                )
            )
    return reserved


def _deliveries(tx: Tx, query: str, params: dict[str, Any]) -> list[TriggerDeliveryReservation]:
    found = []
    width_d, width_o = len(DELIVERY_COLUMNS), len(OCCURRENCE_COLUMNS)
    for row in tx.all(query, params):
        delivery = dict(zip(DELIVERY_COLUMNS, row[:width_d], strict=True))
        found.append(
            TriggerDeliveryReservation(
                occurrence=occurrence(row[width_d : width_d + width_o]),
                subscription=subscription(row[width_d + width_o :]),
                process_id=delivery["process_id"],
                state=delivery["state"],
                reserved_at_ms=int(delivery["created_at_ms"]),
                started_at_ms=delivery["started_at_ms"],
            )
        )
    return found
