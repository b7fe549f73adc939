"""lash-store: a durable, crash-safe session store and process registry for LLM agent runtimes."""

from lash_store import errors, model, options, processes
from lash_store.aio import AsyncProcessRegistry, AsyncStore
from lash_store.options import (
    BlobProfile,
    Durability,
    GcPolicy,
    KeyRing,
    PoisonPolicy,
    RetentionPolicy,
    StoreOptions,
    TelemetryOptions,
)
from lash_store.sqlite import SqliteSessionStoreFactory, Store
from lash_store.sqlite.registry import ProcessRegistry

__all__ = [
    "AsyncProcessRegistry",
    "AsyncStore",
    "BlobProfile",
    "Durability",
    "GcPolicy",
    "KeyRing",
    "PoisonPolicy",
    "ProcessRegistry",
    "RetentionPolicy",
    "SqliteSessionStoreFactory",
    "Store",
    "StoreOptions",
    "TelemetryOptions",
    "errors",
    "model",
    "options",
    "processes",
]
__version__ = "0.1.0"
