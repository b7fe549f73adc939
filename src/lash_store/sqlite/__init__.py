"""The SQLite backend: one database file per session (or a private in-memory database)."""

from lash_store.sqlite.factory import SqliteSessionStoreFactory
from lash_store.sqlite.file_names import safe_file_name
from lash_store.sqlite.store import Store

__all__ = ["SqliteSessionStoreFactory", "Store", "safe_file_name"]
