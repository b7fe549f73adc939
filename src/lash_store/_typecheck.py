"""Static proof (for mypy) that every store satisfies the public protocols; never imported at run time."""

from __future__ import annotations

from lash_store.aio import AsyncProcessRegistry, AsyncStore
from lash_store.api import AsyncProcessRegistryAPI, AsyncSessionStoreAPI, ProcessRegistryAPI, SessionStoreAPI
from lash_store.postgres import PostgresProcessRegistry, PostgresStore
from lash_store.sqlite.registry import ProcessRegistry
from lash_store.sqlite.store import Store
from lash_store.testing.reference import ReferenceStore
from lash_store.testing.registry_reference import ReferenceProcessRegistry


def _sqlite(store: Store) -> SessionStoreAPI:
    return store


def _reference(store: ReferenceStore) -> SessionStoreAPI:
    return store


def _async(store: AsyncStore) -> AsyncSessionStoreAPI:
    return store


def _postgres(store: PostgresStore) -> SessionStoreAPI:
    return store


def _registry(registry: ProcessRegistry) -> ProcessRegistryAPI:
    return registry


def _reference_registry(registry: ReferenceProcessRegistry) -> ProcessRegistryAPI:
    return registry


def _async_registry(registry: AsyncProcessRegistry) -> AsyncProcessRegistryAPI:
    return registry


def _postgres_registry(registry: PostgresProcessRegistry) -> ProcessRegistryAPI:
    return registry
