"""The testing kit: reference store and registry, conformance suites, the crash harness and a manual clock."""

from lash_store.testing.clock import ManualClock
from lash_store.testing.reference import ReferenceStore
from lash_store.testing.registry_reference import ReferenceProcessRegistry

__all__ = ["ManualClock", "ReferenceProcessRegistry", "ReferenceStore"]
