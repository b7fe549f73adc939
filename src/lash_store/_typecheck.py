"""Static proof (for mypy) that every store satisfies the public protocols; never imported at run time."""

from __future__ import annotations

from lash_store.aio import AsyncEffectHost, AsyncHostEventStore, AsyncProcessRegistry, AsyncStore
from lash_store.api import (
    AsyncEffectHostAPI,
    AsyncHostEventStoreAPI,
    AsyncProcessRegistryAPI,
    AsyncSessionStoreAPI,
    EffectHostAPI,
    HostEventStoreAPI,
    ProcessRegistryAPI,
    SessionStoreAPI,
)
from lash_store.postgres import PostgresEffectHost, PostgresHostEventStore, PostgresProcessRegistry, PostgresStore
from lash_store.sqlite.effects import EffectHost
from lash_store.sqlite.host_events import HostEventStore
from lash_store.sqlite.registry import ProcessRegistry
from lash_store.sqlite.store import Store
from lash_store.testing.effects_reference import ReferenceEffectHost
from lash_store.testing.host_events_reference import ReferenceHostEventStore
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


def _effect_hosts(
    sqlite: EffectHost, postgres: PostgresEffectHost, reference: ReferenceEffectHost
) -> tuple[EffectHostAPI, EffectHostAPI, EffectHostAPI]:
    return sqlite, postgres, reference


def _async_effect_host(host: AsyncEffectHost) -> AsyncEffectHostAPI:
    return host


def _host_event_stores(
    sqlite: HostEventStore, postgres: PostgresHostEventStore, reference: ReferenceHostEventStore
) -> tuple[HostEventStoreAPI, HostEventStoreAPI, HostEventStoreAPI]:
    return sqlite, postgres, reference


def _async_host_event_store(store: AsyncHostEventStore) -> AsyncHostEventStoreAPI:
    return store
