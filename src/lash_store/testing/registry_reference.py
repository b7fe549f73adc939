"""The pure-Python, in-memory reference process registry: the registry service over plain dicts.

:class:`ReferenceProcessRegistry` is the oracle of the registry's
property-based tests and an in-memory registry for users' tests.  It is
:class:`~lash_store.service.registry.service.ProcessRegistryService` over the
in-memory backend of :mod:`lash_store.testing.reference`, with each named query
of ``registry_queries.sql`` written out in Python below: what the reference
checks when it is compared with SQLite or PostgreSQL is exactly the SQL.
Durability tier INLINE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lash_store.core.registry.rows import EVENT_COLUMNS, LEASE_COLUMNS, PROCESS_COLUMNS
from lash_store.options import StoreOptions, check_options
from lash_store.service.ports import Params, Row
from lash_store.service.registry.service import ProcessRegistryService
from lash_store.service.registry.signals import Signals
from lash_store.testing.reference import MemoryBackend

__all__ = ["ReferenceProcessRegistry", "RegistryState"]


@dataclass
class RegistryState:
    """Everything a registry holds, keyed as the SQL tables are."""

    processes: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    acks: dict[tuple[str, int], int] = field(default_factory=dict)
    grants: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (scope_id, process_id) -> row
    leases: dict[str, dict[str, Any]] = field(default_factory=dict)


def _process(row: dict[str, Any]) -> Row:
    return tuple(row[name] for name in PROCESS_COLUMNS)


def _event(row: dict[str, Any]) -> Row:
    return tuple(row[name] for name in EVENT_COLUMNS)


class RegistryQueries:
    """Every named query of ``registry_queries.sql``, in Python.  Each returns rows (a list) or a row count."""

    def __init__(self, state: RegistryState) -> None:
        self.s = state

    # -- locks and notifications: one registry, one lock (the backend's) --

    def lock_process(self, p: Params) -> int:
        return 0

    def lock_process_shared(self, p: Params) -> int:
        return 0

    def notify_process(self, p: Params) -> int:
        return 0

    # -- processes --------------------------------------------------------

    def process_row(self, p: Params) -> list[Row]:
        row = self.s.processes.get(p["process_id"])
        return [] if row is None else [_process(row)]

    def insert_process(self, p: Params) -> int:
        if p["process_id"] in self.s.processes:
            return 0
        row = {name: p.get(name) for name in PROCESS_COLUMNS}
        row.update(status="running", await_output=None, external_ref=None, last_sequence=0)
        row.update(created_at_ms=p["now_ms"], updated_at_ms=p["now_ms"])
        self.s.processes[p["process_id"]] = row
        return 1

    def _update(self, p: Params, **values: Any) -> int:
        row = self.s.processes.get(p["process_id"])
        if row is None:
            return 0
        row.update(values)
        return 1

    def set_external_ref(self, p: Params) -> int:
        return self._update(p, external_ref=p["external_ref"], updated_at_ms=p["now_ms"])

    def set_status(self, p: Params) -> int:
        return self._update(p, status=p["status"], await_output=p["await_output"], updated_at_ms=p["now_ms"])

    def advance_process(self, p: Params) -> int:
        return self._update(
            p,
            last_sequence=p["last_sequence"],
            status=p["status"],
            await_output=p["await_output"],
            updated_at_ms=p["now_ms"],
        )

    def list_processes(self, p: Params) -> list[Row]:
        state, after = p["state"], p["after"]

        def wanted(row: dict[str, Any]) -> bool:
            status = row["status"]
            in_state = state is None or status == state or (state == "terminal" and status != "running")
            return in_state and (after is None or row["process_id"] > after)

        found = sorted((row for row in self.s.processes.values() if wanted(row)), key=lambda r: r["process_id"])
        return [_process(row) for row in found[: p["limit"]]]

    # -- events -----------------------------------------------------------

    def _events_of(self, process_id: str) -> list[dict[str, Any]]:
        return sorted((e for (pid, _), e in self.s.events.items() if pid == process_id), key=lambda e: e["sequence"])

    def event_by_replay_key(self, p: Params) -> list[Row]:
        return [_event(e) for e in self._events_of(p["process_id"]) if e["idempotency_key"] == p["replay_key"]]

    def insert_event(self, p: Params) -> int:
        primary = (p["process_id"], p["sequence"])
        replayed = p["replay_key"] is not None and self.event_by_replay_key(p)
        if primary in self.s.events or replayed:
            raise AssertionError(f"event {primary} inserted twice")  # a primary key / unique index in SQL
        row = {name: p[name] for name in ("process_id", "sequence", "event_type", "payload", "payload_hash")}
        row.update(
            idempotency_key=p["replay_key"],
            occurred_at_ms=p["occurred_at_ms"],
            semantics=p["semantics"],
            is_wake=p["is_wake"],
        )
        self.s.events[primary] = row
        return 1

    def events_after(self, p: Params) -> list[Row]:
        found = [e for e in self._events_of(p["process_id"]) if e["sequence"] > p["after_sequence"]]
        return [_event(e) for e in found[: p["limit"]]]

    def wake_events_after(self, p: Params) -> list[Row]:
        process_id = p["process_id"]
        return [
            _event(e)
            for e in self._events_of(process_id)
            if e["sequence"] > p["after_sequence"] and e["is_wake"] and (process_id, e["sequence"]) not in self.s.acks
        ]

    def first_event_of_type(self, p: Params) -> list[Row]:
        for e in self._events_of(p["process_id"]):
            if e["sequence"] > p["after_sequence"] and e["event_type"] == p["event_type"]:
                return [_event(e)]
        return []

    def event_is_wake(self, p: Params) -> list[Row]:
        found = self.s.events.get((p["process_id"], p["sequence"]))
        return [] if found is None else [(found["is_wake"],)]

    def ack_wake(self, p: Params) -> int:
        primary = (p["process_id"], p["sequence"])
        if primary in self.s.acks:
            return 0
        self.s.acks[primary] = p["now_ms"]
        return 1

    # -- handle grants ----------------------------------------------------

    def upsert_grant(self, p: Params) -> int:
        self.s.grants[(p["scope_id"], p["process_id"])] = {
            "scope_id": p["scope_id"],
            "process_id": p["process_id"],
            "session_id": p["session_id"],
            "descriptor": p["descriptor"],
        }
        return 1

    def delete_grant(self, p: Params) -> int:
        return int(self.s.grants.pop((p["scope_id"], p["process_id"]), None) is not None)

    def grant_descriptor(self, p: Params) -> list[Row]:
        found = self.s.grants.get((p["scope_id"], p["process_id"]))
        return [] if found is None else [(found["descriptor"],)]

    def grants_of_scope(self, p: Params) -> list[Row]:
        rows = []
        for (scope_id, process_id), grant in sorted(self.s.grants.items(), key=lambda item: item[0][1]):
            process = self.s.processes.get(process_id)
            if scope_id != p["scope_id"] or process is None:
                continue
            if p["running_only"] and process["status"] != "running":
                continue
            rows.append((grant["session_id"], grant["descriptor"], *_process(process)))
        return rows

    def grants_of_process(self, p: Params) -> list[Row]:
        found = [g for g in self.s.grants.values() if g["process_id"] == p["process_id"]]
        found.sort(key=lambda g: (g["session_id"], g["scope_id"]))
        return [(g["session_id"], g["scope_id"], g["descriptor"]) for g in found]

    def delete_session_grants(self, p: Params) -> list[Row]:
        doomed = [key for key, g in self.s.grants.items() if g["session_id"] == p["session_id"]]
        for key in doomed:
            del self.s.grants[key]
        return doomed

    def grant_counts(self, p: Params) -> list[Row]:
        wanted = set(p["process_ids"])
        counts: dict[str, int] = {}
        for g in self.s.grants.values():
            if g["process_id"] in wanted:
                counts[g["process_id"]] = counts.get(g["process_id"], 0) + 1
        return sorted(counts.items())

    # -- leases -----------------------------------------------------------

    def lease_row(self, p: Params) -> list[Row]:
        found = self.s.leases.get(p["process_id"])
        return [] if found is None else [tuple(found[name] for name in LEASE_COLUMNS)]

    def put_lease(self, p: Params) -> int:
        self.s.leases[p["process_id"]] = {
            "lease_owner_id": p["owner_id"],
            "lease_token": p["lease_token"],
            "fencing_token": p["fencing_token"],
            "claimed_at_ms": p["claimed_at_ms"],
            "expires_at_ms": p["expires_at_ms"],
        }
        return 1

    def _held(self, p: Params) -> dict[str, Any] | None:
        found = self.s.leases.get(p["process_id"])
        return found if found is not None and found["lease_token"] == p["lease_token"] else None

    def extend_lease(self, p: Params) -> int:
        found = self._held(p)
        if found is None:
            return 0
        found["expires_at_ms"] = p["expires_at_ms"]
        return 1

    def release_lease(self, p: Params) -> int:
        found = self._held(p)
        if found is None:
            return 0
        found.update(lease_owner_id=None, lease_token=None, claimed_at_ms=0, expires_at_ms=0)
        return 1

    # -- retention --------------------------------------------------------

    def prunable_processes(self, p: Params) -> list[Row]:
        found = [
            row
            for row in self.s.processes.values()
            if row["status"] != "running" and row["updated_at_ms"] <= p["older_than_ms"]
        ]
        found.sort(key=lambda row: (row["updated_at_ms"], row["process_id"]))
        return [(row["process_id"],) for row in found[: p["limit"]]]

    def prune_counts(self, p: Params) -> list[Row]:
        wanted = set(p["process_ids"])
        events = sum(1 for (pid, _) in self.s.events if pid in wanted)
        grants = sum(1 for g in self.s.grants.values() if g["process_id"] in wanted)
        return [(events, grants)]

    def delete_processes(self, p: Params) -> int:
        wanted = set(p["process_ids"])
        s = self.s
        s.events = {key: e for key, e in s.events.items() if key[0] not in wanted}
        s.acks = {key: at for key, at in s.acks.items() if key[0] not in wanted}
        s.grants = {key: g for key, g in s.grants.items() if g["process_id"] not in wanted}
        s.leases = {pid: lease for pid, lease in s.leases.items() if pid not in wanted}
        doomed = [pid for pid in wanted if pid in s.processes and s.processes[pid]["status"] != "running"]
        for pid in doomed:
            del s.processes[pid]
        return len(doomed)

    # -- every row --------------------------------------------------------

    def all_process_rows(self, p: Params) -> list[Row]:
        return [_process(row) for _, row in sorted(self.s.processes.items())]

    def all_event_rows(self, p: Params) -> list[Row]:
        return [(*_event(e), e["is_wake"]) for _, e in sorted(self.s.events.items())]

    def all_ack_rows(self, p: Params) -> list[Row]:
        return [(*key, at) for key, at in sorted(self.s.acks.items())]

    def all_grant_rows(self, p: Params) -> list[Row]:
        return [
            tuple(g[name] for name in ("scope_id", "process_id", "session_id", "descriptor"))
            for _, g in sorted(self.s.grants.items())
        ]

    def all_lease_rows(self, p: Params) -> list[Row]:
        return [(pid, *(lease[name] for name in LEASE_COLUMNS)) for pid, lease in sorted(self.s.leases.items())]


class ReferenceProcessRegistry(ProcessRegistryService):
    """The whole registry contract over plain Python data, as a test oracle and for users' tests."""

    def __init__(self, options: StoreOptions | None = None) -> None:
        options = check_options(StoreOptions() if options is None else options)
        backend = MemoryBackend(options, RegistryState(), RegistryQueries)
        super().__init__(backend, options, Signals(None))

    @classmethod
    def memory(cls, options: StoreOptions | None = None) -> ReferenceProcessRegistry:
        """Same as the constructor; mirrors ``ProcessRegistry.memory``."""
        return cls(options)
