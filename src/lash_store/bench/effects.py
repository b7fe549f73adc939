"""``bench effects``: journaled effects per second and occurrences routed per second, against plain SQL.

Three workloads, on SQLite (a deployment file) or PostgreSQL:

* **first execution** -- ``execute_effect`` of N distinct tool-call envelopes (a runner that returns at
  once), spread over 1 and 4 worker processes; the floor does the same rows with plain SQL in two
  transactions per effect (claim: insert the in-progress row; finish: update it to completed with the
  outcome).  Both floors hash the envelope (SHA-256 of its canonical JSON) as lash-store does: a journal
  must notice a replay key reused with another envelope;
* **replay** -- the same N envelopes again on strict-replay controllers (nothing runs); the floor reads
  the row, compares the envelope hash and decodes the outcome.  On SQLite the single-process replay
  latency is reported too (target: p50 below 1 ms);
* **routing** -- ``HostEventRouter.route`` of M occurrences matching 2 subscriptions each (record,
  reserve, a journaled process start per delivery, mark started), one process, the three components on
  one database; the floor inserts the occurrence, the deliveries, the process rows, grants and finished
  journal rows, and updates the delivery rows in the transactions the router uses there: one to record,
  reserve and list, one per delivery for its process, grant, closing and journal row.  It
  writes the very values lash-store stored (read back after lash-store's run: ids, hashes, the
  registration, the journaled outcome, the grant).

Every floor table has lash-store's primary key and the secondary indexes of its SQLite layout (retention
and listing by age, pending deliveries, a process's handle grants, matching subscriptions): those entries
are part of storing the same rows.  Routing is also measured against tables with primary keys only, and
that ratio is reported beside the target's.

Each ratio is lash-store's time over the floor's in the same run (target: at most 2x).  Every workload is
cut into segments, and lash-store and its floors take turns segment by segment, so that a machine whose
speed drifts during a run slows both sides alike; worker processes start the clock once all of them are
open and warm.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any, NamedTuple

from lash_store.bench import format_us, progress, render_table, summarise_ns, verdict, workdir

__all__ = ["format_report", "run"]

RATIO_TARGET = 2.0
REPLAY_P50_TARGET_US = 1000.0
_FORK = multiprocessing.get_context("fork")
_SUBSCRIPTIONS = 2
#: How many segments each workload is cut into: lash-store and its floors take turns, segment by segment,
#: so that a machine whose speed drifts during the run (a shared VM) slows them alike.
_SEGMENTS = 8


@dataclass(frozen=True)
class Where:
    """One side's data: a SQLite file, or a PostgreSQL DSN and schema."""

    backend: str
    target: str
    schema: str = ""


def _envelope(key: str) -> Any:
    from lash_store.effects import RuntimeEffectCommand, RuntimeEffectEnvelope, RuntimeScope

    command = RuntimeEffectCommand.tool_call({"name": "charge_card", "arguments": {"amount": 42, "id": key}})
    return RuntimeEffectEnvelope.new(RuntimeScope(session_id="bench", turn_id="turn-1"), key, key, command)


def _outcome(key: str) -> Any:
    from lash_store.effects import RuntimeEffectOutcome

    return RuntimeEffectOutcome.tool_call({"status": "charged", "receipt": f"receipt-{key}", "amount": 42})


def _open_host(where: Where) -> Any:
    from lash_store.effects import EffectReplayOptions

    replay = EffectReplayOptions(lease_ttl_ms=30_000)
    if where.backend == "sqlite":
        from lash_store.sqlite.effects import EffectHost

        return EffectHost.open(where.target, replay_options=replay)
    from lash_store.postgres.effects import PostgresEffectHost

    return PostgresEffectHost.open(where.target, replay_options=replay, schema=where.schema)


# ---------------------------------------------------------------------------
# The plain-SQL floor


_FLOOR_DDL = [
    "CREATE TABLE IF NOT EXISTS {s}floor_journal (scope text NOT NULL, key text NOT NULL, hash text NOT NULL, "
    "status text NOT NULL, outcome text, owner text, token text, expires bigint NOT NULL, attempts int NOT NULL, "
    "at bigint NOT NULL, PRIMARY KEY (scope, key))",
    "CREATE TABLE IF NOT EXISTS {s}floor_occurrences (id text PRIMARY KEY, source_type text NOT NULL, "
    "source_key text NOT NULL, idem text NOT NULL, hash text NOT NULL, payload text NOT NULL, at bigint NOT NULL)"
    "{without_rowid}",
    "CREATE TABLE IF NOT EXISTS {s}floor_subscriptions (id text PRIMARY KEY, session_id text NOT NULL, "
    "source_key text NOT NULL, seq bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {s}floor_deliveries (occurrence_id text NOT NULL, subscription_id text NOT NULL, "
    "process_id text NOT NULL, state text NOT NULL, at bigint NOT NULL, PRIMARY KEY (occurrence_id, subscription_id))"
    "{without_rowid}",
    "CREATE TABLE IF NOT EXISTS {s}floor_processes (id text PRIMARY KEY, registration text NOT NULL, "
    "status text NOT NULL, at bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {s}floor_grants (scope_id text NOT NULL, process_id text NOT NULL, "
    "descriptor text NOT NULL, PRIMARY KEY (scope_id, process_id)){without_rowid}",
]

# The secondary indexes of lash-store's SQLite deployment layout, on the floor's tables: the entries its
# documented features read (retention and listing by age, pending deliveries, a process's handle grants,
# matching subscriptions) are durable work of the same rows, so the floor writes them too.  Without them
# (``indexed=False``) the floor's tables have their primary keys only: a floor that could not answer
# ``pending_deliveries`` or prune without a full scan; the routing figure against it is reported as well.
_FLOOR_INDEXES = [
    "CREATE INDEX IF NOT EXISTS floor_journal_finished ON {s}floor_journal (at) "
    "WHERE status IN ('completed', 'failed')",
    "CREATE INDEX IF NOT EXISTS floor_occurrences_age ON {s}floor_occurrences (at)",
    "CREATE INDEX IF NOT EXISTS floor_subscriptions_source ON {s}floor_subscriptions (source_key, seq)",
    "CREATE INDEX IF NOT EXISTS floor_deliveries_reserved ON {s}floor_deliveries (at) WHERE state = 'reserved'",
    "CREATE INDEX IF NOT EXISTS floor_processes_finished ON {s}floor_processes (at) WHERE status <> 'running'",
    "CREATE INDEX IF NOT EXISTS floor_grants_process ON {s}floor_grants (process_id)",
]


class Floor:
    """Plain ``sqlite3`` or ``psycopg`` with the same statements (``%s`` placeholders)."""

    def __init__(self, where: Where, *, indexed: bool = True) -> None:
        self.where = where
        self.indexed = indexed
        self.prefix = f"{where.schema}." if where.backend == "postgres" else ""
        self.conn: Any
        if where.backend == "sqlite":
            self.conn = sqlite3.connect(where.target, isolation_level=None, timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        else:
            import psycopg

            self.conn = psycopg.connect(where.target, autocommit=True)

    def sql(self, text: str) -> str:
        text = text.replace("{s}", self.prefix)
        if self.where.backend == "sqlite":
            return text.replace("%s", "?").replace("{without_rowid}", " WITHOUT ROWID")
        return text.replace("{without_rowid}", "")

    def setup(self) -> None:
        for statement in _FLOOR_DDL + (_FLOOR_INDEXES if self.indexed else []):
            self.conn.execute(self.sql(statement))

    @contextmanager
    def write(self) -> Iterator[Any]:
        self.conn.execute("BEGIN IMMEDIATE" if self.where.backend == "sqlite" else "BEGIN")
        try:
            yield self
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[Any]:
        self.conn.execute("BEGIN" if self.where.backend == "sqlite" else "BEGIN ISOLATION LEVEL REPEATABLE READ")
        try:
            yield self
        finally:
            self.conn.execute("COMMIT")

    def run(self, text: str, *params: Any) -> Any:
        return self.conn.execute(self.sql(text), params)

    def close(self) -> None:
        self.conn.close()


def _floor_execute(floor: Floor, key: str) -> None:
    envelope = _envelope(key)
    from lash_store.effects import envelope_hash

    digest = envelope_hash(envelope)
    token = os.urandom(8).hex()
    now = int(time.time() * 1000)
    with floor.write():
        found = floor.run("SELECT status, outcome FROM {s}floor_journal WHERE scope = %s AND key = %s", "bench", key)
        assert found.fetchone() is None
        floor.run(
            "INSERT INTO {s}floor_journal VALUES (%s, %s, %s, 'in_progress', NULL, %s, %s, %s, 1, %s)",
            "bench",
            key,
            digest,
            "owner",
            token,
            now + 30_000,
            now,
        )
    outcome = json.dumps({"type": "tool_call", "value": {"status": "charged", "receipt": f"receipt-{key}"}})
    with floor.write():
        floor.run(
            "UPDATE {s}floor_journal SET status = 'completed', outcome = %s, owner = NULL, token = NULL, expires = 0, "
            "at = %s WHERE scope = %s AND key = %s AND token = %s",
            outcome,
            int(time.time() * 1000),
            "bench",
            key,
            token,
        )


def _floor_replay(floor: Floor, key: str) -> None:
    from lash_store.effects import envelope_hash

    digest = envelope_hash(_envelope(key))  # a journal must notice a replay key reused with another envelope
    with floor.read():
        row = floor.run(
            "SELECT status, outcome, hash FROM {s}floor_journal WHERE scope = %s AND key = %s", "bench", key
        )
        status, outcome, stored = row.fetchone()
    assert status == "completed" and stored == digest
    json.loads(outcome)


# ---------------------------------------------------------------------------
# Workers (forked: module-level functions)


def _worker(queue: Any, start: Any, where: Where, side: str, mode: str, keys: list[str], latencies: bool) -> None:
    try:
        from lash_store.effects import EffectScope, RuntimeEffectLocalExecutor

        if side == "lash":
            host = _open_host(where)
            scope = EffectScope.turn("bench", "turn-1")
            controller = host.scoped(scope, replay=(mode == "replay"))
            executor = RuntimeEffectLocalExecutor.runner(lambda env: _outcome(env.replay_key))

            def one(key: str) -> None:
                controller.execute_effect(_envelope(key), executor)

            close: Callable[[], None] = host.close
        else:
            floor = Floor(where)

            def one(key: str) -> None:
                (_floor_execute if mode == "first" else _floor_replay)(floor, key)

            close = floor.close
        one_key = keys[0]
        envelopes = keys[1:]
        one(one_key)  # warm: connections, prepared statements, caches
        queue.put(("ready", None))
        start.wait()
        samples: list[int] = []
        for key in envelopes:
            begun = time.perf_counter_ns()
            one(key)
            if latencies:
                samples.append(time.perf_counter_ns() - begun)
        close()
        queue.put(("ok", samples))
    except BaseException as exc:
        queue.put(("error", repr(exc)))


def _parallel(where: Where, side: str, mode: str, keys: list[str], workers: int, latencies: bool) -> dict[str, Any]:
    """Effects per second of ``workers`` processes over disjoint shares of ``keys`` (each warms on one key)."""
    queue, start = _FORK.Queue(), _FORK.Event()
    shares = [keys[index::workers] for index in range(workers)]
    processes = [
        _FORK.Process(target=_worker, args=(queue, start, where, side, mode, share, latencies), daemon=True)
        for share in shares
    ]
    for process in processes:
        process.start()
    try:
        for _ in range(workers):  # every worker is open and warm before the clock starts
            _report(queue, side, mode, "ready")
        began = time.perf_counter()
        start.set()
        results = [_report(queue, side, mode, "ok") for _ in range(workers)]
        elapsed = time.perf_counter() - began
    finally:
        start.set()  # a worker still waiting is let go (to report or exit)
        for process in processes:
            process.join(30)
    measured = sum(len(share) - 1 for share in shares)
    samples = [sample for result in results for sample in result[1]]
    return {"effects": measured, "seconds": elapsed, "samples": samples}


def _segments(effects: int, workers: int) -> list[list[str]]:
    """Each segment's keys: its share of ``effects``, and one more per worker (each warms up on one)."""
    segments: list[list[str]] = []
    first = 0
    for index in range(_SEGMENTS):
        size = effects // _SEGMENTS + (index < effects % _SEGMENTS)
        if size:
            segments.append([f"effect-{key}" for key in range(first, first + size + workers)])
            first += size + workers
    return segments


def _report(queue: Any, side: str, mode: str, expected: str) -> Any:
    """A worker's next message, which must be ``expected`` ("ready" or "ok"); a failure raises."""
    try:
        message = queue.get(timeout=300)
    except Empty as exc:
        raise RuntimeError(f"bench effects: {side} {mode} workers did not report") from exc
    if message[0] != expected:
        raise RuntimeError(f"bench effects: a worker failed: {message[1]}")
    return message


def _alternating(
    lash: Where, floor: Where, mode: str, segments: list[list[str]], workers: int, latencies: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """lash-store and its floor take turns, segment by segment (see :data:`_SEGMENTS`); both totals."""
    results: dict[str, list[dict[str, Any]]] = {"lash": [], "floor": []}
    for keys in segments:
        for side, where in (("lash", lash), ("floor", floor)):
            results[side].append(_parallel(where, side, mode, keys, workers, latencies and side == "lash"))

    def total(parts: list[dict[str, Any]]) -> dict[str, Any]:
        effects = sum(part["effects"] for part in parts)
        seconds = sum(part["seconds"] for part in parts)
        samples = [sample for part in parts for sample in part["samples"]]
        return {
            "effects": effects,
            "seconds": seconds,
            "per_second": effects / seconds,
            "latency": summarise_ns(samples),
        }

    return total(results["lash"]), total(results["floor"])


# ---------------------------------------------------------------------------
# Routing


class _LashRouting:
    """lash-store's side of the routing workload: the three components on one database, two subscriptions."""

    def __init__(self, where: Where) -> None:
        from lash_store.host_event_router import HostEventRouter
        from lash_store.host_events import TriggerSubscriptionDraft, empty_source_key

        self.key = empty_source_key("webhook.received")
        if where.backend == "sqlite":
            from lash_store.sqlite.host_events import HostEventStore
            from lash_store.sqlite.registry import ProcessRegistry

            store: Any = HostEventStore.open(where.target)
            registry: Any = ProcessRegistry.open(where.target)
        else:
            from lash_store.postgres import PostgresHostEventStore, PostgresProcessRegistry

            store = PostgresHostEventStore.open(where.target, schema=where.schema)
            registry = PostgresProcessRegistry.open(where.target, schema=where.schema)
        self.components = (store, registry, _open_host(where))
        for index in range(_SUBSCRIPTIONS):
            store.register_subscription(
                TriggerSubscriptionDraft(
                    session_id=f"session-{index}",
                    source_type="webhook.received",
                    source_key=self.key,
                    process_name="on_hook",
                )
            )
        self.router = HostEventRouter(store, self.components[2], registry)
        self.route(range(-1, 0))  # warm

    def route(self, indexes: range) -> float:
        """Route occurrence ``hook-<i>`` for each index; returns the seconds it took."""
        from lash_store.host_events import HostEventOccurrenceRequest

        requests = [
            HostEventOccurrenceRequest(
                source_type="webhook.received",
                source_key=self.key,
                idempotency_key=f"hook-{index}",
                payload={"n": index},
            )
            for index in indexes
        ]
        began = time.perf_counter()
        for request in requests:
            assert len(self.router.route(request)) == _SUBSCRIPTIONS
        return time.perf_counter() - began

    def close(self) -> None:
        for component in self.components:
            component.close()


class Delivery(NamedTuple):
    """What lash-store stored for one delivery, as text (the floor writes the very same values)."""

    subscription_id: str
    session_id: str
    process_id: str
    scope: str
    envelope_hash: str
    outcome: str
    registration: str
    descriptor: str


class Occurrence(NamedTuple):
    occurrence_id: str
    request_hash: str
    payload: str
    deliveries: list[Delivery]


def _stored_routes(where: Where, indexes: range) -> list[Occurrence]:
    """The rows lash-store's routing stored, read back with plain SQL, one entry per routed occurrence."""
    floor = Floor(where)
    prefix = floor.prefix

    def rows(sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return list(floor.run(sql.replace("{p}", prefix), *params).fetchall())

    found = []
    for index in indexes:
        ((occurrence_id, request_hash, payload),) = rows(
            "SELECT occurrence_id, request_hash, payload FROM {p}host_event_occurrences WHERE idempotency_key = %s",
            f"hook-{index}",
        )
        deliveries = []
        for subscription_id, process_id in rows(
            "SELECT subscription_id, process_id FROM {p}host_event_deliveries WHERE occurrence_id = %s "
            "ORDER BY subscription_id",
            occurrence_id,
        ):
            ((scope, envelope_hash, outcome),) = rows(
                "SELECT scope_identity, envelope_hash, outcome FROM {p}effect_journal WHERE scope_id = %s", process_id
            )
            ((registration, session_id),) = rows(
                "SELECT registration_hash || input || event_types || coalesce(caused_by, ''), owner_session_id "
                "FROM {p}processes WHERE process_id = %s",
                process_id,
            )
            ((descriptor,),) = rows("SELECT descriptor FROM {p}process_handle_grants WHERE process_id = %s", process_id)
            deliveries.append(
                Delivery(
                    subscription_id,
                    session_id,
                    process_id,
                    scope,
                    envelope_hash,
                    outcome,
                    registration,
                    descriptor,
                )
            )
        found.append(Occurrence(occurrence_id, request_hash, payload, deliveries))
    floor.close()
    return found


class _FloorRouting:
    """The routing floor: lash-store's routes again, the same rows (the very values it stored) in the same
    transactions, with plain SQL into tables that have lash-store's indexes (``indexed``) or their primary
    keys only."""

    def __init__(self, where: Where, warm: Occurrence, *, indexed: bool = True) -> None:
        self.floor = Floor(where, indexed=indexed)
        self.floor.setup()
        with self.floor.write():
            for seq, delivery in enumerate(warm.deliveries):
                self.floor.run(
                    "INSERT INTO {s}floor_subscriptions VALUES (%s, %s, %s, %s)",
                    delivery.subscription_id,
                    delivery.session_id,
                    "k",
                    seq,
                )
        self._route(-1, warm)  # warm (the warm-up occurrence's rows, so the measured ones are all new)

    def route(self, stored: list[Occurrence], first_index: int) -> float:
        """Write each stored occurrence's rows; returns the seconds it took."""
        began = time.perf_counter()
        for index, occurrence in enumerate(stored, first_index):
            self._route(index, occurrence)
        return time.perf_counter() - began

    def close(self) -> None:
        self.floor.close()

    def _route(self, index: int, occurrence: Occurrence) -> None:
        floor = self.floor
        now = int(time.time() * 1000)
        with floor.write():  # record, reserve and list: one transaction
            floor.run(
                "INSERT INTO {s}floor_occurrences VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                occurrence.occurrence_id,
                "webhook.received",
                "k",
                f"hook-{index}",
                occurrence.request_hash,
                occurrence.payload,
                now,
            )
            subscriptions = floor.run(
                "SELECT id, session_id FROM {s}floor_subscriptions WHERE source_key = %s ORDER BY seq", "k"
            ).fetchall()
            assert len(subscriptions) == len(occurrence.deliveries)
            for delivery in occurrence.deliveries:
                floor.run(
                    "INSERT INTO {s}floor_deliveries VALUES (%s, %s, %s, 'reserved', %s) ON CONFLICT DO NOTHING",
                    occurrence.occurrence_id,
                    delivery.subscription_id,
                    delivery.process_id,
                    now,
                )
        for delivery in occurrence.deliveries:
            with floor.write():  # process, grant, the closed delivery and the finished journal row: one transaction
                floor.run(
                    "INSERT INTO {s}floor_processes VALUES (%s, %s, 'running', %s) ON CONFLICT DO NOTHING",
                    delivery.process_id,
                    delivery.registration,
                    now,
                )
                floor.run(
                    "INSERT INTO {s}floor_grants VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    delivery.session_id,
                    delivery.process_id,
                    delivery.descriptor,
                )
                floor.run(
                    "UPDATE {s}floor_deliveries SET state = 'started' "
                    "WHERE occurrence_id = %s AND subscription_id = %s",
                    occurrence.occurrence_id,
                    delivery.subscription_id,
                )
                journaled = floor.run(  # the primary key arbitrates, as lash-store's insert does
                    "INSERT INTO {s}floor_journal VALUES (%s, 'start', %s, 'completed', %s, NULL, NULL, 0, 1, %s) "
                    "ON CONFLICT DO NOTHING",
                    delivery.scope,
                    delivery.envelope_hash,
                    delivery.outcome,
                    now,
                )
                assert journaled.rowcount == 1


# ---------------------------------------------------------------------------


def _where(backend: str, root: Path | None, pg: Any, name: str) -> Where:
    """One side's fresh database: a file under ``root``, or a new schema of the PostgreSQL target."""
    if backend == "sqlite":
        assert root is not None
        return Where("sqlite", str(root / f"{name}.db"))
    return Where("postgres", pg.dsn, pg.new_schema(name))


def _sides(backend: str, root: Path | None, pg: Any, name: str) -> tuple[Where, Where]:
    return _where(backend, root, pg, f"{name}_lash"), _where(backend, root, pg, f"{name}_floor")


def run(
    *,
    backend: str = "sqlite",
    effects: int = 2_000,
    workers: tuple[int, ...] = (1, 4),
    occurrences: int = 200,
    dsn: str | None = None,
    base_dir: str | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run every workload once per worker count; returns the report."""
    report: dict[str, Any] = {
        "config": {"backend": backend, "effects": effects, "workers": list(workers), "occurrences": occurrences},
        "effects": [],
    }
    with _place(backend, dsn, base_dir, verbose) as (root, pg):
        if pg is not None:
            report["server"] = pg.describe()
        for count in workers:
            lash, floor = _sides(backend, root, pg, f"w{count}")
            _open_host(lash).close()  # schema created before the clock starts
            Floor(floor).setup()
            segments = _segments(effects, count)
            entry: dict[str, Any] = {"workers": count}
            for mode in ("first", "replay"):
                progress(verbose, f"effects: {backend}, {count} worker(s), {mode}")
                latencies = count == 1 and mode == "replay"
                mine, theirs = _alternating(lash, floor, mode, segments, count, latencies)
                entry[mode] = {
                    "lash_per_second": mine["per_second"],
                    "floor_per_second": theirs["per_second"],
                    "ratio": theirs["per_second"] / mine["per_second"],
                }
                if latencies:
                    entry[mode]["latency_us"] = mine["latency"]
            report["effects"].append(entry)
        progress(verbose, f"routing: {backend}, {occurrences} occurrences x {_SUBSCRIPTIONS} subscriptions")
        report["routing"] = _routing(backend, root, pg, occurrences)
    return report


def _routing(backend: str, root: Path | None, pg: Any, occurrences: int) -> dict[str, float]:
    lash_where, floor_where = _sides(backend, root, pg, "route")
    bare_where = _where(backend, root, pg, "route_pk_only_floor")
    lash = _LashRouting(lash_where)
    (warm,) = _stored_routes(lash_where, range(-1, 0))
    floors = [_FloorRouting(floor_where, warm), _FloorRouting(bare_where, warm, indexed=False)]
    seconds = [0.0, 0.0, 0.0]
    size = max(1, -(-occurrences // _SEGMENTS))
    for first in range(0, occurrences, size):
        segment = range(first, min(first + size, occurrences))
        seconds[0] += lash.route(segment)
        # The floors write the rows lash-store stored for this segment.
        stored = _stored_routes(lash_where, segment)
        for index, floor in enumerate(floors, 1):
            seconds[index] += floor.route(stored, first)
    lash.close()
    for floor in floors:
        floor.close()
    mine_s, floor_s, bare_s = seconds
    return {
        "lash_per_second": occurrences / mine_s,
        "floor_per_second": occurrences / floor_s,
        "ratio": mine_s / floor_s,
        "pk_only_floor_per_second": occurrences / bare_s,
        "pk_only_ratio": mine_s / bare_s,
    }


@contextmanager
def _place(backend: str, dsn: str | None, base_dir: str | None, verbose: bool) -> Iterator[tuple[Path | None, Any]]:
    if backend == "sqlite":
        with workdir(base_dir, "effects") as root:
            yield root, None
        return
    from lash_store.bench.pg import pg_target

    with pg_target(dsn, verbose=verbose) as target:
        try:
            yield None, target
        finally:
            from lash_store.postgres import close_shared_pools

            close_shared_pools()


def format_report(report: dict[str, Any]) -> str:
    config = report["config"]
    rows = []
    for entry in report["effects"]:
        for mode in ("first", "replay"):
            figures = entry[mode]
            rows.append(
                [
                    f"{mode} execution" if mode == "first" else "replay",
                    str(entry["workers"]),
                    f"{figures['lash_per_second']:,.0f}",
                    f"{figures['floor_per_second']:,.0f}",
                    f"{figures['ratio']:.2f}x",
                    verdict(figures["ratio"] <= RATIO_TARGET),
                ]
            )
    routing = report["routing"]
    rows.append(
        [
            f"routing ({_SUBSCRIPTIONS} deliveries)",
            "1",
            f"{routing['lash_per_second']:,.0f}",
            f"{routing['floor_per_second']:,.0f}",
            f"{routing['ratio']:.2f}x",
            verdict(routing["ratio"] <= RATIO_TARGET),
        ]
    )
    lines = [
        f"bench effects on {config['backend']}: {config['effects']:,} effects, {config['occurrences']} occurrences "
        f"(per second; ratio = lash-store time / plain-SQL floor time, target <= {RATIO_TARGET:.0f}x)",
        render_table(["workload", "procs", "lash-store/s", "floor/s", "ratio", "target"], rows),
    ]
    if "pk_only_ratio" in routing:
        lines.append(
            f"routing against a floor without lash-store's secondary indexes (primary keys only): "
            f"{routing['pk_only_floor_per_second']:,.0f}/s, ratio {routing['pk_only_ratio']:.2f}x"
        )
    replay = next((e["replay"] for e in report["effects"] if e["workers"] == 1), None)
    if replay is not None and "latency_us" in replay:
        p50 = replay["latency_us"]["p50"]
        ok = p50 < REPLAY_P50_TARGET_US or config["backend"] != "sqlite"
        lines.append(
            f"replay latency (1 process): p50 {format_us(p50)}, p99 {format_us(replay['latency_us']['p99'])}"
            + (f"  [target p50 < 1 ms: {verdict(ok)}]" if config["backend"] == "sqlite" else "")
        )
    if "server" in report:
        server = report["server"]
        lines.append(
            f"server: PostgreSQL {server.get('server_version')}, fsync={server.get('fsync')}, "
            f"synchronous_commit={server.get('synchronous_commit')}, {server.get('transport')}"
        )
    return "\n".join(lines)
