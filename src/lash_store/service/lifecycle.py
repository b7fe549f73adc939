"""What every store service shares: it owns one backend, closes it, works as a context manager, tells its tier."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from lash_store.model import DurabilityTier
from lash_store.service.ports import Backend

__all__ = ["BackendService"]


class BackendService:
    """The lifecycle of a service over one :class:`~lash_store.service.ports.Backend` (set ``_backend``)."""

    _backend: Backend

    def close(self) -> None:
        """Close it; later calls raise :class:`~lash_store.errors.StoreClosed`.  Closing twice is harmless."""
        self._backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def durability_tier(self) -> DurabilityTier:
        """INLINE for an in-memory backend (gone with the process), DURABLE otherwise."""
        return DurabilityTier.INLINE if self._backend.in_memory else DurabilityTier.DURABLE
