"""Naming a store or a registry on any backend with one string: a SQLite file (or factory root) or a DSN.

The command line, the chaos demo, the crash harness and the benchmarks all
accept either, so everything they do runs on both backends:

* a path: a session file (or, where a factory is meant, a factory root directory);
* a PostgreSQL DSN, as a URI (``postgresql://...``) or a libpq ``key=value``
  string; a store on PostgreSQL also needs the session id (the partition);
* for the process registry: a deployment file, or a DSN (and a schema).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from lash_store.errors import InvalidInput
from lash_store.options import StoreOptions
from lash_store.service.registry.service import ProcessRegistryService
from lash_store.service.session import SessionService

_KEY_VALUE = re.compile(r"^\s*[a-z_]+\s*=")


def is_dsn(target: str) -> bool:
    """Whether ``target`` names a PostgreSQL database rather than a path."""
    return target.startswith(("postgresql://", "postgres://")) or bool(_KEY_VALUE.match(target))


def open_store(
    target: str | os.PathLike[str],
    session_id: str | None = None,
    *,
    options: StoreOptions | None = None,
    readonly: bool = False,
    migrate: bool = False,
) -> SessionService:
    """Open the store ``target`` names.  ``readonly`` never creates or writes anything."""
    text = os.fspath(target)
    if not isinstance(text, str):
        raise InvalidInput("target", "must be a text path or DSN")
    if is_dsn(text):
        from lash_store.postgres import PostgresStore  # the postgres extra is needed only for a DSN

        if session_id is None:
            raise InvalidInput("session_id", "a PostgreSQL store needs the session id (--session)")
        return PostgresStore.open(text, session_id, options, create=not readonly)
    from lash_store.sqlite import Store

    if readonly:
        return Store.open_readonly(text, encryption=None if options is None else options.encryption)
    return Store.open(text, options, migrate=migrate)


def open_factory(target: str | os.PathLike[str], options: StoreOptions | None = None) -> Any:
    """The session factory of a factory root directory or a PostgreSQL database (its listings write nothing)."""
    text = os.fspath(target)
    if isinstance(text, str) and is_dsn(text):
        from lash_store.postgres import PostgresSessionStoreFactory

        return PostgresSessionStoreFactory(text, options)
    from lash_store.sqlite import SqliteSessionStoreFactory

    return SqliteSessionStoreFactory(Path(text), options)


def open_registry(
    target: str | os.PathLike[str],
    *,
    options: StoreOptions | None = None,
    readonly: bool = False,
    schema: str = "lash",
) -> ProcessRegistryService:
    """Open the process registry ``target`` names: a deployment file, or a PostgreSQL DSN (``schema``).

    ``readonly`` never creates or writes anything (a missing file raises, a PostgreSQL schema is not set up).
    """
    text = os.fspath(target)
    if not isinstance(text, str):
        raise InvalidInput("target", "must be a text path or DSN")
    if is_dsn(text):
        from lash_store.postgres.registry import PostgresProcessRegistry  # the postgres extra only for a DSN

        return PostgresProcessRegistry.open(text, options, schema=schema, auto_setup=not readonly)
    from lash_store.sqlite.registry import ProcessRegistry

    if readonly:
        return ProcessRegistry.open_readonly(text)
    return ProcessRegistry.open(text, options)
