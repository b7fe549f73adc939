"""The testing kit: the in-memory reference store, the conformance suite, the crash harness and a manual clock."""

from lash_store.testing.clock import ManualClock
from lash_store.testing.reference import ReferenceStore

__all__ = ["ManualClock", "ReferenceStore"]
