"""lash-store: a durable, crash-safe session store for LLM agent runtimes."""

from lash_store import errors, model, options
from lash_store.aio import AsyncStore
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

__all__ = [
    "AsyncStore",
    "BlobProfile",
    "Durability",
    "GcPolicy",
    "KeyRing",
    "PoisonPolicy",
    "RetentionPolicy",
    "SqliteSessionStoreFactory",
    "Store",
    "StoreOptions",
    "TelemetryOptions",
    "errors",
    "model",
    "options",
]
__version__ = "0.1.0"
