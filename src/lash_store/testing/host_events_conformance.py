"""The backend-agnostic conformance suite of the host-event store (reference (b) §b.7, SPEC §9).

Every host-event backend -- SQLite file and memory, PostgreSQL, the pure-Python
:class:`~lash_store.testing.host_events_reference.ReferenceHostEventStore`,
third-party ones -- must pass these tests.  They hold every scenario H-1 ...
H-14 of the reference (``test_h<N>_...``), tests of the §7 fixes
(``test_fix_...``: idempotency per source, numeric handle order, the delivery
outbox, retention) and of bad input (``test_bad_...``: a typed error, nothing
written).

How a backend runs the suite -- in one of its test modules::

    import pytest

    pytest.register_assert_rewrite("lash_store.testing.host_events_conformance")

    from lash_store.testing.host_events_conformance import *  # noqa: E402, F403  (collects the suite)
    from lash_store.testing.host_events_conformance import HostEventsHarness  # noqa: E402


    class MyHarness(HostEventsHarness):
        name = "my-backend"
        durable = True

        def open(self, clock):
            ...  # a fresh, empty store reading time from ``clock`` (epoch ms)

        def reopen(self, store):
            ...  # a NEW handle on the same durable data (same clock)


    @pytest.fixture
    def host_events_harness():
        return MyHarness()
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lash_store.errors import (
    HostEventStoreError,
    InvalidHostEventInput,
    InvalidInput,
    OccurrenceConflict,
    UnknownDelivery,
    UnknownOccurrence,
)
from lash_store.host_events import (
    HostEventOccurrenceRequest,
    TriggerSubscriptionDraft,
    TriggerSubscriptionFilter,
    TriggerTarget,
    delivery_process_id,
    empty_source_key,
    source_key_for_subscription,
)
from lash_store.model import DurabilityTier
from lash_store.service.host_events.service import HostEventStoreService
from lash_store.testing.clock import ManualClock
from lash_store.testing.harness import Handles, Harness

Clock = Callable[[], int]
Store = HostEventStoreService

START_MS = 1_700_000_000_000
SOURCE_TYPE = "ui.button.pressed"
EVENT_TY = {"type": "object", "required": ["button"], "properties": {"button": {"type": "string"}}}
MODULE_REF = "sha256:" + "1" * 64
SURFACE_REF = "sha256:" + "2" * 64
PROCESS_REF = "sha256:" + "3" * 64


class HostEventsHarness(Harness[Store]):
    """How the suite obtains stores of one backend.  Subclass it and provide a ``host_events_harness`` fixture."""

    def open(self, clock: Clock) -> Store:
        raise NotImplementedError(f"{type(self).__name__} must implement open(clock)")


class Stores(Handles[Store]):
    harness: HostEventsHarness

    def __init__(self, harness: HostEventsHarness, clock: ManualClock) -> None:
        super().__init__(harness)
        self.clock = clock

    def open(self) -> Store:
        store: Store = self.track(self.harness.open(self.clock))
        return store


@pytest.fixture
def host_events_clock() -> ManualClock:
    return ManualClock(START_MS)


@pytest.fixture
def stores(host_events_harness: HostEventsHarness, host_events_clock: ManualClock) -> Iterator[Stores]:
    access = Stores(host_events_harness, host_events_clock)
    try:
        yield access
    finally:
        access.close_all()


@pytest.fixture
def store(stores: Stores) -> Store:
    return stores.open()


# ===========================================================================
# Builders (the reference's conventions)


def draft(session: str, key: str, name: str, *, process_name: str | None = None) -> TriggerSubscriptionDraft:
    return TriggerSubscriptionDraft(
        session_id=session,
        name=name,
        source_type=SOURCE_TYPE,
        source_key=key,
        source={},
        event_ty=EVENT_TY,
        module_ref=MODULE_REF,
        required_surface_ref=SURFACE_REF,
        process_ref=PROCESS_REF,
        process_name=process_name or name,
        input_template={"event": {"$bind": "event"}},
    )


def occ(key: str, idem: str, payload: Any = None, source: Any = None) -> HostEventOccurrenceRequest:
    return HostEventOccurrenceRequest(
        source_type=SOURCE_TYPE,
        source_key=key,
        payload={"button": "Blue"} if payload is None else payload,
        idempotency_key=idem,
        source={} if source is None else source,
    )


K = empty_source_key(SOURCE_TYPE)


def snapshot(store: Store) -> tuple[Any, ...]:
    """Everything a store lists, to prove that a refused call wrote nothing."""
    occurrences = store.list_occurrences()
    return (
        store.list_subscriptions(),
        occurrences,
        store.pending_deliveries(),
        [store.list_deliveries(o.occurrence_id) for o in occurrences],
    )


# ===========================================================================
# H-1 ... H-14


def test_h1_declared_tier(store: Store, host_events_harness: HostEventsHarness) -> None:
    expected = DurabilityTier.DURABLE if host_events_harness.durable else DurabilityTier.INLINE
    assert store.durability_tier == expected


def test_h2_stable_source_keys(store: Store) -> None:
    first = store.source_key_for_subscription(SOURCE_TYPE, {"button": "Blue"})
    second = store.source_key_for_subscription(SOURCE_TYPE, {"button": "Blue"})
    assert first == second and first
    assert first == source_key_for_subscription(SOURCE_TYPE, {"button": "Blue"})
    assert first.startswith(f"source:{SOURCE_TYPE}:sha256:")
    assert first != store.source_key_for_subscription(SOURCE_TYPE, {"button": "Red"})


def test_h3_register_list_cancel(store: Store) -> None:
    first = store.register_subscription(draft("session-a", K, "first"))
    second = store.register_subscription(draft("session-b", K, "second"))
    assert first.subscription_id and first.handle and second.handle
    assert first.handle != second.handle
    listed = store.list_subscriptions(TriggerSubscriptionFilter(session_id="session-a"))
    assert [s.handle for s in listed] == [first.handle]
    by_source = TriggerSubscriptionFilter(source_type=SOURCE_TYPE, source_key=K, enabled=True)
    assert len(store.list_subscriptions(by_source)) == 2
    assert store.cancel_subscription("session-b", first.handle) is False
    assert store.cancel_subscription("session-a", first.handle) is True
    (cancelled,) = store.list_subscriptions(TriggerSubscriptionFilter(session_id="session-a", handle=first.handle))
    assert cancelled.enabled is False


def test_h4_record_and_reserve_idempotently(store: Store) -> None:
    sub = store.register_subscription(draft("session-a", K, "on_button"))
    first = store.record_occurrence(occ(K, "button-blue-1"))
    assert first.occurrence_id
    assert (first.source_type, first.source_key) == (SOURCE_TYPE, K)
    (reserved,) = store.reserve_matching_deliveries(first.occurrence_id)
    assert reserved.subscription.handle == sub.handle
    assert reserved.occurrence.occurrence_id == first.occurrence_id
    assert reserved.process_id == delivery_process_id(first.occurrence_id, sub.subscription_id)
    assert store.reserve_matching_deliveries(first.occurrence_id) == []
    again = store.record_occurrence(occ(K, "button-blue-1"))
    assert again.occurrence_id == first.occurrence_id
    assert store.reserve_matching_deliveries(again.occurrence_id) == []
    assert store.cancel_subscription("session-a", sub.handle) is True
    later = store.record_occurrence(occ(K, "button-blue-2"))
    assert store.reserve_matching_deliveries(later.occurrence_id) == []


def test_h5_reopen(stores: Stores, store: Store) -> None:
    sub = store.register_subscription(draft("session-a", K, "on_button"))
    first = store.record_occurrence(occ(K, "button-blue-1"))
    assert len(store.reserve_matching_deliveries(first.occurrence_id)) == 1
    other = stores.reopen(store)
    assert [s.handle for s in other.list_subscriptions(TriggerSubscriptionFilter(session_id="session-a"))] == [
        sub.handle
    ]
    again = other.record_occurrence(occ(K, "button-blue-1"))
    assert again.occurrence_id == first.occurrence_id
    assert other.reserve_matching_deliveries(again.occurrence_id) == []
    second = other.record_occurrence(occ(K, "button-blue-2"))
    (reserved,) = other.reserve_matching_deliveries(second.occurrence_id)
    assert reserved.subscription.handle == sub.handle


def test_h6_first_handle_is_trigger_1_and_reopen_keeps_the_source_key(stores: Stores, store: Store) -> None:
    sub = store.register_subscription(draft("session-a", empty_source_key(SOURCE_TYPE), "on_button"))
    assert sub.handle == "trigger:1"
    other = stores.reopen(store)
    (listed,) = other.list_subscriptions(TriggerSubscriptionFilter(source_type=SOURCE_TYPE, enabled=True))
    assert listed.source_key == empty_source_key(SOURCE_TYPE)
    request = HostEventOccurrenceRequest(
        source_type=SOURCE_TYPE,
        source_key=listed.source_key,
        payload={"button": "Blue"},
        idempotency_key="button-blue-1",
    )
    recorded = other.record_occurrence(request)
    (reserved,) = other.reserve_matching_deliveries(recorded.occurrence_id)
    assert reserved.subscription.handle == "trigger:1"
    assert other.record_occurrence(request).occurrence_id == recorded.occurrence_id
    assert other.reserve_matching_deliveries(recorded.occurrence_id) == []


def test_h7_cancel_is_scoped_by_session_and_handle(store: Store) -> None:
    first = store.register_subscription(draft("session-a", K, "first"))
    second = store.register_subscription(draft("session-b", K, "second"))
    assert store.cancel_subscription("session-b", first.handle) is False
    assert store.cancel_subscription("session-b", second.handle) is True
    recorded = store.record_occurrence(occ(K, "button-red-1", payload={"button": "Red"}))
    (reserved,) = store.reserve_matching_deliveries(recorded.occurrence_id)
    assert reserved.subscription.handle == first.handle


@pytest.mark.parametrize("field", ["source_type", "source_key", "idempotency_key"])
@pytest.mark.parametrize("blank", ["", "   "])
def test_h8_validation(store: Store, field: str, blank: str) -> None:
    values: dict[str, Any] = {"source_type": SOURCE_TYPE, "source_key": K, "idempotency_key": "x", "payload": {}}
    values[field] = blank
    before = snapshot(store)
    with pytest.raises(InvalidHostEventInput) as caught:
        store.record_occurrence(HostEventOccurrenceRequest(**values))
    assert field in caught.value.what
    assert caught.value.code == "host_event_invalid_input"
    assert isinstance(caught.value, InvalidInput) and isinstance(caught.value, HostEventStoreError)
    assert snapshot(store) == before


def test_h9_idempotency_conflict(store: Store) -> None:
    stored = store.record_occurrence(occ(K, "x"))
    with pytest.raises(OccurrenceConflict) as caught:
        store.record_occurrence(occ(K, "x", payload={"button": "Red"}))
    assert "host event occurrence idempotency conflict for `x`" in str(caught.value)
    assert caught.value.code == "host_event_idempotency_conflict"
    assert store.list_occurrences() == [stored]


def test_h10_unknown_occurrence(store: Store) -> None:
    before = snapshot(store)
    with pytest.raises(UnknownOccurrence) as caught:
        store.reserve_matching_deliveries("host_event:doesnotexist")
    assert "unknown host event occurrence" in str(caught.value)
    assert caught.value.code == "host_event_unknown_occurrence"
    assert snapshot(store) == before


def test_h11_double_cancel(store: Store) -> None:
    sub = store.register_subscription(draft("session-a", K, "first"))
    assert store.cancel_subscription("session-a", sub.handle) is True
    assert store.cancel_subscription("session-a", sub.handle) is False


def test_h12_late_subscriber(store: Store) -> None:
    recorded = store.record_occurrence(occ(K, "early"))
    late = store.register_subscription(draft("session-a", K, "late"))
    (reserved,) = store.reserve_matching_deliveries(recorded.occurrence_id)
    assert reserved.subscription.subscription_id == late.subscription_id


def test_h13_name_and_target_filters(store: Store) -> None:
    one = store.register_subscription(draft("session-a", K, "one", process_name="proc_one"))
    two = store.register_subscription(draft("session-a", K, "two", process_name="proc_two"))
    assert [s.handle for s in store.list_subscriptions(TriggerSubscriptionFilter(name="one"))] == [one.handle]
    target = TriggerTarget(
        module_ref=MODULE_REF, required_surface_ref=SURFACE_REF, process_ref=PROCESS_REF, process_name="proc_two"
    )
    assert [s.handle for s in store.list_subscriptions(TriggerSubscriptionFilter(target=target))] == [two.handle]
    assert two.target == target


def test_h14_counter_is_monotonic_across_reopen(stores: Stores, store: Store) -> None:
    store.register_subscription(draft("session-a", K, "one"))
    store.register_subscription(draft("session-a", K, "two"))
    other = stores.reopen(store)
    assert other.register_subscription(draft("session-a", K, "three")).handle == "trigger:3"


# ===========================================================================
# The fixes of reference §7


def test_fix_idempotency_is_per_source(store: Store) -> None:
    """§7 item 12: two sources that both use key ``1`` record two occurrences, no conflict."""
    other_key = source_key_for_subscription(SOURCE_TYPE, {"button": "Red"})
    first = store.record_occurrence(occ(K, "1"))
    second = store.record_occurrence(occ(other_key, "1", payload={"button": "Red"}))
    third = store.record_occurrence(
        HostEventOccurrenceRequest(source_type="schedule.tick", source_key=K, idempotency_key="1")
    )
    assert len({first.occurrence_id, second.occurrence_id, third.occurrence_id}) == 3
    assert len(store.list_occurrences()) == 3


def test_fix_handles_order_numerically(store: Store) -> None:
    """§7 item 14: ``trigger:2`` lists before ``trigger:10``."""
    for index in range(11):
        store.register_subscription(draft("session-a", K, f"s{index}"))
    handles = [s.handle for s in store.list_subscriptions(TriggerSubscriptionFilter(session_id="session-a"))]
    assert handles == [f"trigger:{n}" for n in range(1, 12)]
    recorded = store.record_occurrence(occ(K, "ordered"))
    reserved = store.reserve_matching_deliveries(recorded.occurrence_id)
    assert [r.subscription.handle for r in reserved] == handles


def test_fix_delivery_outbox(stores: Stores, store: Store) -> None:
    """§7 item 13: reserved deliveries stay pending until marked started, across reopen."""
    first = store.register_subscription(draft("session-a", K, "a"))
    second = store.register_subscription(draft("session-b", K, "b"))
    recorded = store.record_occurrence(occ(K, "outbox"))
    reserved = store.reserve_matching_deliveries(recorded.occurrence_id)
    assert [r.state for r in reserved] == ["reserved", "reserved"]
    assert store.reserve_matching_deliveries(recorded.occurrence_id) == []  # a repeated reserve hands out nothing
    other = stores.reopen(store)  # "the router crashed after reserving"
    pending = other.pending_deliveries()
    assert [(p.subscription.subscription_id, p.process_id) for p in pending] == [
        (r.subscription.subscription_id, r.process_id) for r in reserved
    ]
    assert other.mark_delivery_started(recorded.occurrence_id, first.subscription_id) is True
    assert other.mark_delivery_started(recorded.occurrence_id, first.subscription_id) is False
    assert [p.subscription.subscription_id for p in other.pending_deliveries()] == [second.subscription_id]
    assert other.mark_delivery_started(recorded.occurrence_id, second.subscription_id) is True
    assert other.pending_deliveries() == []
    states = [(d.subscription.handle, d.state) for d in other.list_deliveries(recorded.occurrence_id)]
    assert states == [(first.handle, "started"), (second.handle, "started")]


def test_fix_retention_keeps_pending_deliveries(store: Store, host_events_clock: ManualClock) -> None:
    """§7 item 14: old occurrences go with their deliveries, but never while a delivery is pending."""
    sub = store.register_subscription(draft("session-a", K, "a"))
    old = store.record_occurrence(occ(K, "old"))
    pending = store.record_occurrence(occ(K, "pending"))
    store.reserve_matching_deliveries(old.occurrence_id)
    store.reserve_matching_deliveries(pending.occurrence_id)
    store.mark_delivery_started(old.occurrence_id, sub.subscription_id)
    host_events_clock.advance(10_000)
    fresh = store.record_occurrence(occ(K, "fresh"))
    horizon = START_MS + 5_000
    dry = store.prune(horizon, dry_run=True)
    assert (dry.occurrence_count, dry.delivery_count) == (1, 1)
    assert len(store.list_occurrences()) == 3
    done = store.prune(horizon)
    assert (done.occurrence_count, done.delivery_count) == (1, 1)
    assert {o.occurrence_id for o in store.list_occurrences()} == {pending.occurrence_id, fresh.occurrence_id}
    assert len(store.pending_deliveries()) == 1


# ===========================================================================
# Bad input


def test_session_subscriptions_are_cancelled_together(stores: Stores, store: Store) -> None:
    """A deleted session's triggers stop matching, all in one call; other sessions' stay; reserved ones stay."""
    a1 = store.register_subscription(draft("session-a", K, "first"))
    a2 = store.register_subscription(draft("session-a", K, "second"))
    b1 = store.register_subscription(draft("session-b", K, "other"))
    first = store.record_occurrence(occ(K, "before"))
    assert len(store.reserve_matching_deliveries(first.occurrence_id)) == 3
    assert store.cancel_subscription("session-a", a2.handle) is True  # already off: not counted again
    assert store.cancel_session_subscriptions("session-a") == 1
    assert store.cancel_session_subscriptions("session-a") == 0
    assert store.cancel_session_subscriptions("session-unknown") == 0
    store = stores.reopen(store)
    enabled = store.list_subscriptions(TriggerSubscriptionFilter(enabled=True))
    assert [(sub.session_id, sub.handle) for sub in enabled] == [("session-b", b1.handle)]
    assert {sub.handle for sub in store.list_subscriptions(TriggerSubscriptionFilter(session_id="session-a"))} == {
        a1.handle,
        a2.handle,
    }
    later = store.record_occurrence(occ(K, "after"))
    (only,) = store.reserve_matching_deliveries(later.occurrence_id)
    assert only.subscription.session_id == "session-b"
    assert len(store.pending_deliveries()) == 4  # the three reserved before the cancel are still to start
    with pytest.raises(InvalidHostEventInput):
        store.cancel_session_subscriptions(" ")


@pytest.mark.parametrize("field", ["session_id", "source_type", "source_key"])
def test_bad_blank_draft_fields(store: Store, field: str) -> None:
    values = {"session_id": "s", "source_type": SOURCE_TYPE, "source_key": K}
    values[field] = " "
    before = snapshot(store)
    with pytest.raises(InvalidHostEventInput) as caught:
        store.register_subscription(TriggerSubscriptionDraft(**values))
    assert field in caught.value.what
    assert snapshot(store) == before
    assert store.register_subscription(draft("s", K, "n")).handle == "trigger:1"  # no number was used up


def test_bad_opaque_values_are_refused(store: Store) -> None:
    before = snapshot(store)
    with pytest.raises(InvalidHostEventInput):
        store.record_occurrence(occ(K, "nan", payload={"x": float("nan")}))
    with pytest.raises(InvalidHostEventInput):
        store.register_subscription(
            TriggerSubscriptionDraft(session_id="s", source_type=SOURCE_TYPE, source_key=K, source={1: "x"})
        )
    assert snapshot(store) == before


def test_bad_unknown_delivery(store: Store) -> None:
    recorded = store.record_occurrence(occ(K, "x"))
    before = snapshot(store)
    with pytest.raises(UnknownDelivery) as caught:
        store.mark_delivery_started(recorded.occurrence_id, "subscription:99")
    assert caught.value.code == "host_event_unknown_delivery"
    with pytest.raises(InvalidHostEventInput):
        store.mark_delivery_started("", "subscription:1")
    assert snapshot(store) == before
