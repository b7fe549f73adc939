"""The testing kit: reference store and registry, conformance suites, the crash harness and a manual clock."""

from lash_store.testing.clock import ManualClock
from lash_store.testing.effects_reference import ReferenceEffectHost
from lash_store.testing.host_events_reference import ReferenceHostEventStore
from lash_store.testing.reference import ReferenceStore
from lash_store.testing.registry_reference import ReferenceProcessRegistry

__all__ = [
    "ManualClock",
    "ReferenceEffectHost",
    "ReferenceHostEventStore",
    "ReferenceProcessRegistry",
    "ReferenceStore",
]
