"""The PostgreSQL backend: many processes and machines share sessions in one database.

Install with ``pip install 'lash-store[postgres]'`` (psycopg 3 and psycopg_pool).
"""

from lash_store.postgres.effects import PostgresEffectHost
from lash_store.postgres.factory import PostgresSessionStoreFactory
from lash_store.postgres.host_events import PostgresHostEventStore
from lash_store.postgres.pool import close_shared_pools, shared_pool
from lash_store.postgres.registry import PostgresProcessRegistry
from lash_store.postgres.schema import SCHEMA_VERSION, migrate, setup
from lash_store.postgres.store import PostgresStore

__all__ = [
    "SCHEMA_VERSION",
    "PostgresEffectHost",
    "PostgresHostEventStore",
    "PostgresProcessRegistry",
    "PostgresSessionStoreFactory",
    "PostgresStore",
    "close_shared_pools",
    "migrate",
    "setup",
    "shared_pool",
]
