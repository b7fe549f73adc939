"""The pure-Python, in-memory reference effect journal: the journal service over plain dicts.

:class:`ReferenceEffectHost` is the oracle of the journal's property-based
tests and an in-memory host for users' tests.  It is
:class:`~lash_store.service.effects.service.EffectHostService` over the
in-memory backend of :mod:`lash_store.testing.reference`, with each named
query of ``effects_queries.sql`` written out in Python below.  Durability tier INLINE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lash_store.effects import EffectReplayOptions
from lash_store.options import StoreOptions, check_options
from lash_store.service.effects.journal import EFFECT_COLUMNS
from lash_store.service.effects.service import EffectHostService
from lash_store.service.ports import Params, Row
from lash_store.service.registry.signals import Signals
from lash_store.testing.reference import MemoryBackend

__all__ = ["EffectJournalState", "ReferenceEffectHost"]

Key = tuple[str, str]


@dataclass
class EffectJournalState:
    """The journal's rows keyed as the SQL table is: (scope identity, replay key)."""

    rows: dict[Key, dict[str, Any]] = field(default_factory=dict)


def _row(row: dict[str, Any]) -> Row:
    return tuple(row[name] for name in EFFECT_COLUMNS)


def _key(p: Params) -> Key:
    return (p["scope_identity"], p["replay_key"])


def _finished(p: Params) -> dict[str, Any]:
    """A finished row's result columns: its status, outcome or error, and no lease."""
    return {
        "status": p["status"],
        "outcome": p["outcome"],
        "error": p["error"],
        "lease_owner_id": None,
        "lease_token": None,
        "lease_expires_at_ms": 0,
    }


class EffectQueries:
    """Every named query of ``effects_queries.sql``, in Python."""

    def __init__(self, state: EffectJournalState) -> None:
        self.s = state

    def lock_effect(self, p: Params) -> int:
        return 0

    def notify_effect(self, p: Params) -> int:
        return 0

    def effect_row(self, p: Params) -> list[Row]:
        row = self.s.rows.get(_key(p))
        return [] if row is None else [_row(row)]

    def insert_effect(self, p: Params) -> int:
        return self._insert(
            p,
            status="in_progress",
            outcome=None,
            error=None,
            lease_owner_id=p["owner_id"],
            lease_token=p["lease_token"],
            lease_expires_at_ms=p["expires_at_ms"],
            due_at_ms=p["due_at_ms"],
        )

    def insert_finished_effect(self, p: Params) -> int:
        return self._insert(p, **_finished(p), due_at_ms=None)

    def _insert(self, p: Params, **columns: Any) -> int:
        """A new row (its first attempt) with ``columns``; 0 when the key's row exists (ON CONFLICT DO NOTHING)."""
        if _key(p) in self.s.rows:
            return 0
        self.s.rows[_key(p)] = {
            "scope_identity": p["scope_identity"],
            "replay_key": p["replay_key"],
            "scope_kind": p["scope_kind"],
            "scope_id": p["scope_id"],
            "envelope_hash": p["envelope_hash"],
            **columns,
            "attempts": 1,
            "created_at_ms": p["now_ms"],
            "updated_at_ms": p["now_ms"],
        }
        return 1

    def take_over_effect(self, p: Params) -> int:
        row = self.s.rows.get(_key(p))
        if row is None:
            return 0
        claimable = row["status"] == "released" or (
            row["status"] == "in_progress" and row["lease_expires_at_ms"] <= p["now_ms"]
        )
        if not claimable:
            return 0
        row.update(
            status="in_progress",
            lease_owner_id=p["owner_id"],
            lease_token=p["lease_token"],
            lease_expires_at_ms=p["expires_at_ms"],
            due_at_ms=p["due_at_ms"],
            attempts=row["attempts"] + 1,
            updated_at_ms=p["now_ms"],
        )
        return 1

    def _owned(self, p: Params) -> dict[str, Any] | None:
        row = self.s.rows.get(_key(p))
        if row is None or row["status"] != "in_progress" or row["lease_token"] != p["lease_token"]:
            return None
        return row

    def finalize_effect(self, p: Params) -> int:
        row = self._owned(p)
        if row is None or row["envelope_hash"] != p["envelope_hash"]:
            return 0
        row.update(**_finished(p), updated_at_ms=p["now_ms"])
        return 1

    def renew_effect(self, p: Params) -> int:
        row = self._owned(p)
        if row is None:
            return 0
        row["lease_expires_at_ms"] = p["expires_at_ms"]
        return 1

    def release_effect(self, p: Params) -> int:
        row = self._owned(p)
        if row is None:
            return 0
        row.update(
            status="released", lease_owner_id=None, lease_token=None, lease_expires_at_ms=0, updated_at_ms=p["now_ms"]
        )
        return 1

    def list_effects(self, p: Params) -> list[Row]:
        found = [
            row
            for row in self.s.rows.values()
            if (p["status"] is None or row["status"] == p["status"])
            and (p["scope_identity"] is None or row["scope_identity"] == p["scope_identity"])
        ]
        found.sort(key=lambda r: (r["updated_at_ms"], r["scope_identity"], r["replay_key"]))
        return [_row(row) for row in found[: p["limit"]]]

    def _prunable(self, p: Params) -> list[Key]:
        return [
            key
            for key, row in self.s.rows.items()
            if row["status"] in ("completed", "failed") and row["updated_at_ms"] < p["before_ms"]
        ]

    def count_prunable_effects(self, p: Params) -> list[Row]:
        return [(len(self._prunable(p)),)]

    def prune_effects(self, p: Params) -> int:
        keys = self._prunable(p)
        for key in keys:
            del self.s.rows[key]
        return len(keys)


class ReferenceEffectHost(EffectHostService):
    """The whole effect-journal contract over plain Python data, as a test oracle and for users' tests."""

    def __init__(
        self, options: StoreOptions | None = None, *, replay_options: EffectReplayOptions | None = None
    ) -> None:
        options = check_options(StoreOptions() if options is None else options)
        backend = MemoryBackend(options, EffectJournalState(), EffectQueries)
        super().__init__(backend, options, Signals(None), replay_options)

    @classmethod
    def memory(
        cls, options: StoreOptions | None = None, *, replay_options: EffectReplayOptions | None = None
    ) -> ReferenceEffectHost:
        return cls(options, replay_options=replay_options)
