"""``PostgresEffectHost``: the effect journal on PostgreSQL, shared by every worker of a deployment.

The journal's table (schema version 6) is deployment-wide, keyed by (scope
identity, replay key).  A first claim is arbitrated by the primary key
(``INSERT ... ON CONFLICT DO NOTHING``; the loser locks and reads the
winner's row); every other write locks the row first (``FOR UPDATE``) and
reads the database clock after the lock, so leases are measured on one clock
whatever the workers' wall clocks say.  A finalisation or release sends
``NOTIFY lash_effects`` at commit; busy waiters in other processes ``LISTEN``
and read again, with a polling backstop.
"""

from __future__ import annotations

from psycopg_pool import ConnectionPool

from lash_store.effects import EffectReplayOptions
from lash_store.options import StoreOptions
from lash_store.postgres import schema as schemas
from lash_store.postgres.deployment import ComponentBackend, listen_signals, open_component
from lash_store.service.effects.service import EffectHostService, check_replay_options
from lash_store.service.registry.signals import Signals

__all__ = ["EFFECTS_CHANNEL", "PostgresEffectHost"]

#: The notification channel; a payload is the schema name.
EFFECTS_CHANNEL = "lash_effects"


class PostgresEffectBackend(ComponentBackend):
    """The journal's named queries, without a session partition."""

    query_file = "effects_queries.sql"
    unprepared = frozenset({"list_effects"})


class PostgresEffectHost(EffectHostService):
    """The effect journal on PostgreSQL (see the module docstring)."""

    def __init__(
        self,
        backend: PostgresEffectBackend,
        options: StoreOptions,
        signals: Signals,
        replay_options: EffectReplayOptions | None = None,
    ) -> None:
        super().__init__(backend, options, signals, replay_options)
        self._postgres = backend

    @classmethod
    def open(
        cls,
        dsn_or_pool: str | ConnectionPool,
        options: StoreOptions | None = None,
        *,
        replay_options: EffectReplayOptions | None = None,
        schema: str = schemas.DEFAULT_SCHEMA,
        auto_setup: bool = True,
    ) -> PostgresEffectHost:
        """Open the journal of ``schema`` (created when absent with ``auto_setup``); leases use the database clock."""
        replay_options = check_replay_options(replay_options)  # before the schema is created
        opened = open_component(dsn_or_pool, options, schema, auto_setup=auto_setup)
        backend = PostgresEffectBackend(opened.target, opened.schema, opened.options)
        return cls(backend, opened.options, listen_signals(opened, EFFECTS_CHANNEL, "effects"), replay_options)

    @property
    def schema(self) -> str:
        return self._postgres.schema
