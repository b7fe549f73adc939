"""The pure-Python, in-memory reference host-event store: the store service over plain dicts.

:class:`ReferenceHostEventStore` is the oracle of the store's property-based
tests and an in-memory store for users' tests: the service of
:mod:`lash_store.service.host_events.service` over the in-memory backend,
with each named query of ``host_events_queries.sql`` written out in Python
below.  Durability tier INLINE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lash_store.options import StoreOptions, check_options
from lash_store.service.host_events.service import (
    DELIVERY_COLUMNS,
    OCCURRENCE_COLUMNS,
    SUBSCRIPTION_COLUMNS,
    HostEventStoreService,
)
from lash_store.service.ports import Params, Row
from lash_store.testing.reference import MemoryBackend

__all__ = ["HostEventState", "ReferenceHostEventStore"]


@dataclass
class HostEventState:
    """Everything the store holds, keyed as the SQL tables are."""

    counter: int = 0
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    occurrences: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def _sub(row: dict[str, Any]) -> Row:
    return tuple(row[name] for name in SUBSCRIPTION_COLUMNS)


def _occ(row: dict[str, Any]) -> Row:
    return tuple(row[name] for name in OCCURRENCE_COLUMNS)


class HostEventQueries:
    """Every named query of ``host_events_queries.sql``, in Python."""

    def __init__(self, state: HostEventState) -> None:
        self.s = state

    def lock_subscription(self, p: Params) -> int:
        return 0

    def lock_occurrence(self, p: Params) -> int:
        return 0

    def lock_delivery(self, p: Params) -> int:
        return 0

    def next_subscription_number(self, p: Params) -> list[Row]:
        self.s.counter += 1
        return [(self.s.counter,)]

    def insert_subscription(self, p: Params) -> int:
        row = {name: p.get(name) for name in SUBSCRIPTION_COLUMNS}
        row.update(enabled=1, created_at_ms=p["now_ms"], updated_at_ms=p["now_ms"])
        self.s.subscriptions[p["subscription_id"]] = row
        return 1

    def _ordered(self, rows: list[dict[str, Any]]) -> list[Row]:
        return [_sub(row) for row in sorted(rows, key=lambda r: (r["session_id"], r["seq"]))]

    def list_subscriptions(self, p: Params) -> list[Row]:
        def wanted(row: dict[str, Any]) -> bool:
            for name in ("session_id", "handle", "name", "source_type", "source_key", "enabled"):
                if p[name] is not None and row[name] != p[name]:
                    return False
            if p["has_target"]:
                return all(
                    row[name] == p[name]
                    for name in ("module_ref", "required_surface_ref", "process_ref", "process_name")
                )
            return True

        return self._ordered([row for row in self.s.subscriptions.values() if wanted(row)])

    def disable_subscription(self, p: Params) -> int:
        for row in self.s.subscriptions.values():
            if row["session_id"] == p["session_id"] and row["handle"] == p["handle"] and row["enabled"]:
                row.update(enabled=0, updated_at_ms=p["now_ms"])
                return 1
        return 0

    def disable_session_subscriptions(self, p: Params) -> int:
        found = [r for r in self.s.subscriptions.values() if r["session_id"] == p["session_id"] and r["enabled"]]
        for row in found:
            row.update(enabled=0, updated_at_ms=p["now_ms"])
        return len(found)

    def matching_subscriptions(self, p: Params) -> list[Row]:
        return self._ordered(
            [
                row
                for row in self.s.subscriptions.values()
                if row["source_type"] == p["source_type"] and row["source_key"] == p["source_key"] and row["enabled"]
            ]
        )

    def insert_occurrence(self, p: Params) -> int:
        if p["occurrence_id"] in self.s.occurrences:
            return 0
        row = {name: p.get(name) for name in OCCURRENCE_COLUMNS}
        row["occurred_at_ms"] = p["now_ms"]
        self.s.occurrences[p["occurrence_id"]] = row
        return 1

    def occurrence_row(self, p: Params) -> list[Row]:
        row = self.s.occurrences.get(p["occurrence_id"])
        return [] if row is None else [_occ(row)]

    def list_occurrences(self, p: Params) -> list[Row]:
        rows = sorted(self.s.occurrences.values(), key=lambda r: (r["occurred_at_ms"], r["occurrence_id"]))
        return [_occ(row) for row in rows[: p["limit"]]]

    def insert_delivery(self, p: Params) -> int:
        key = (p["occurrence_id"], p["subscription_id"])
        if key in self.s.deliveries:
            return 0
        self.s.deliveries[key] = {
            "occurrence_id": p["occurrence_id"],
            "subscription_id": p["subscription_id"],
            "process_id": p["process_id"],
            "state": "reserved",
            "created_at_ms": p["now_ms"],
            "started_at_ms": None,
        }
        return 1

    def delivery_row(self, p: Params) -> list[Row]:
        row = self.s.deliveries.get((p["occurrence_id"], p["subscription_id"]))
        return [] if row is None else [tuple(row[name] for name in DELIVERY_COLUMNS)]

    def start_delivery(self, p: Params) -> int:
        row = self.s.deliveries.get((p["occurrence_id"], p["subscription_id"]))
        if row is None or row["state"] != "reserved":
            return 0
        row.update(state="started", started_at_ms=p["now_ms"])
        return 1

    def _joined(self, rows: list[dict[str, Any]]) -> list[tuple[Row, int]]:
        out = []
        for row in rows:
            sub = self.s.subscriptions[row["subscription_id"]]
            joined = (
                tuple(row[name] for name in DELIVERY_COLUMNS)
                + _occ(self.s.occurrences[row["occurrence_id"]])
                + _sub(sub)
            )
            out.append((joined, sub["seq"]))
        return out

    def pending_deliveries(self, p: Params) -> list[Row]:
        pending = [row for row in self.s.deliveries.values() if row["state"] == "reserved"]
        joined = self._joined(pending)
        joined.sort(key=lambda item: (item[0][4], item[0][0], item[1]))
        return [row for row, _ in joined[: p["limit"]]]

    def deliveries_of_occurrence(self, p: Params) -> list[Row]:
        found = [row for row in self.s.deliveries.values() if row["occurrence_id"] == p["occurrence_id"]]
        return [row for row, _ in sorted(self._joined(found), key=lambda item: item[1])]

    def _prunable(self, p: Params) -> list[str]:
        pending = {key[0] for key, row in self.s.deliveries.items() if row["state"] == "reserved"}
        return [
            oid
            for oid, row in self.s.occurrences.items()
            if row["occurred_at_ms"] < p["before_ms"] and oid not in pending
        ]

    def count_prunable(self, p: Params) -> list[Row]:
        ids = set(self._prunable(p))
        deliveries = sum(1 for key in self.s.deliveries if key[0] in ids)
        return [(len(ids), deliveries if ids else None)]

    def prune_deliveries(self, p: Params) -> int:
        ids = set(self._prunable(p))
        doomed = [key for key in self.s.deliveries if key[0] in ids]
        for key in doomed:
            del self.s.deliveries[key]
        return len(doomed)

    def prune_occurrences(self, p: Params) -> int:
        with_deliveries = {key[0] for key in self.s.deliveries}
        doomed = [
            oid
            for oid, row in self.s.occurrences.items()
            if row["occurred_at_ms"] < p["before_ms"] and oid not in with_deliveries
        ]
        for oid in doomed:
            del self.s.occurrences[oid]
        return len(doomed)


class ReferenceHostEventStore(HostEventStoreService):
    """The whole host-event store contract over plain Python data, as a test oracle and for users' tests."""

    def __init__(self, options: StoreOptions | None = None) -> None:
        options = check_options(StoreOptions() if options is None else options)
        super().__init__(MemoryBackend(options, HostEventState(), HostEventQueries), options)

    @classmethod
    def memory(cls, options: StoreOptions | None = None) -> ReferenceHostEventStore:
        return cls(options)
