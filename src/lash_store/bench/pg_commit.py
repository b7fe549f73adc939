"""Per-turn commit latency on PostgreSQL, against plain psycopg writing the same bytes (``commit --backend postgres``).

The workload is the SQLite commit benchmark's (:class:`~lash_store.bench.commit.Workload`):
per turn a ~500-byte user message and a ~1,500-byte assistant message
appended to the graph, a checkpoint whose ~8 KB tool state changes every turn,
and a usage delta, committed with ``PostgresStore.commit_runtime_state``.

The floor is the fastest plain psycopg code we could write that makes the same
bytes durable: the turn is first encoded by lash-store's own encoder
(``lash_store.core.commit.prepare_commit``, outside the floor's timed region),
so the floor stores byte for byte what lash-store stores -- the encoded node
bodies with their picker text, the compressed tool-state blob and the
checkpoint manifest blob, the encoded head and the encoded usage ledger --
in one transaction sent as a single pipeline (``BEGIN``, two
``executemany`` inserts, one ``UPDATE`` of the head row, ``COMMIT``): one
round trip and one WAL flush.  Its schema is the least a real session store
needs: a head row per session, nodes keyed by (session, node) with an
insertion order index for resume, blobs keyed by (session, hash).  The floor
therefore does none of lash-store's CPU work (validation, msgpack, zstd,
SHA-256) inside its timed region; that work is timed separately as
``encode_us`` so the gap can be read: lash-store's commit = its encoding +
its transaction.

Sides run interleaved, turn by turn in a rotating order, on one durable server
(``fsync=on``, ``synchronous_commit=on``); each side has a schema of its own,
fresh for every run.  Peers (``--peers``: LangGraph's ``PostgresSaver``, see
:mod:`lash_store.bench.pg_peers`) join the loop the way they do in the SQLite
benchmark; the full-state peer runs in a pass of its own.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from lash_store.bench import commit_report, progress, verdict
from lash_store.bench.commit import (
    PeerWriter,
    TurnContent,
    Workload,
    checked_checkpoints,
    interleave_turns,
    verify_session,
    warmup_content,
)
from lash_store.bench.commit_report import GROWTH_TARGET, RunSamples
from lash_store.bench.pg import PgTarget, dsn_with_search_path, pg_target, server_line
from lash_store.bench.pg_peers import PgPeerSpec
from lash_store.core.commit import prepare_commit
from lash_store.core.usage import Totals, add_usage, encode_totals
from lash_store.model import RuntimeCommit
from lash_store.options import BlobProfile, StoreOptions

__all__ = [
    "FLOOR_LABEL",
    "GROWTH_TARGET",
    "PEER_SPEEDUP_TARGET",
    "PEER_SPEEDUP_TURN",
    "RATIO_TARGET",
    "EncodedTurn",
    "PgFloor",
    "TurnEncoder",
    "format_report",
    "run",
]

RATIO_TARGET = 1.5
PEER_SPEEDUP_TARGET = 50.0
PEER_SPEEDUP_TURN = 1_000
FLOOR_LABEL = "psycopg floor"

_FLOOR_SCHEMA = """
CREATE TABLE IF NOT EXISTS {schema}.sessions (
    session_id text PRIMARY KEY, revision bigint NOT NULL, checkpoint_ref text, leaf_node_id text,
    body bytea, usage_ledger bytea, node_count bigint NOT NULL, user_message_count bigint NOT NULL);
CREATE TABLE IF NOT EXISTS {schema}.nodes (
    session_id text NOT NULL, node_id text NOT NULL, seq bigint GENERATED ALWAYS AS IDENTITY,
    parent_node_id text, user_text text, body bytea NOT NULL, PRIMARY KEY (session_id, node_id));
CREATE INDEX IF NOT EXISTS nodes_order ON {schema}.nodes (session_id, seq);
CREATE TABLE IF NOT EXISTS {schema}.blobs (
    session_id text NOT NULL, hash text NOT NULL, encoding text NOT NULL, kind text, raw_size bigint NOT NULL,
    created_at_ms bigint NOT NULL, content bytea NOT NULL, PRIMARY KEY (session_id, hash));
ALTER TABLE {schema}.blobs ALTER COLUMN content SET STORAGE EXTERNAL;
"""


@dataclass(frozen=True, slots=True)
class EncodedTurn:
    """The rows lash-store writes for one turn, as parameters of the floor's statements."""

    blobs: list[tuple[Any, ...]]
    nodes: list[tuple[Any, ...]]
    head: tuple[Any, ...]


class TurnEncoder:
    """Encodes a session's turns with lash-store's encoder and keeps the head it would write (counters, ledger)."""

    def __init__(self, session_id: str, profile: BlobProfile) -> None:
        self.session_id = session_id
        self.profile = profile
        self.revision = 0
        self.node_count = 0
        self.user_count = 0
        self.totals: Totals = {}

    def encode(self, commit: RuntimeCommit) -> EncodedTurn:
        plan = prepare_commit(commit, self.profile)
        add_usage(self.totals, plan.usage)
        now_ms = time.time_ns() // 1_000_000
        sid = self.session_id
        self.revision += 1
        self.node_count += len(plan.nodes)
        self.user_count += sum(node.user_text is not None for node in plan.nodes)
        return EncodedTurn(
            blobs=[(sid, b.hash, b.encoding, b.kind, b.raw_size, now_ms, b.content) for b in plan.blobs],
            nodes=[(sid, n.node_id, n.parent_node_id, n.user_text, n.body) for n in plan.nodes],
            head=(
                self.revision,
                plan.checkpoint_ref,
                plan.leaf_node_id,
                plan.head_body,
                encode_totals(self.totals),
                self.node_count,
                self.user_count,
                sid,
            ),
        )


class PgFloor:
    """The baseline: one pipelined transaction of plain psycopg per turn, on an autocommit connection."""

    def __init__(self, dsn: str, schema: str, session_id: str) -> None:
        import psycopg

        self.schema = schema
        self.session_id = session_id
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(_FLOOR_SCHEMA.format(schema=schema))
        self.conn.execute(
            f"INSERT INTO {schema}.sessions (session_id, revision, node_count, user_message_count) "
            "VALUES (%s, 0, 0, 0) ON CONFLICT DO NOTHING",
            (session_id,),
        )
        self._cursor = self.conn.cursor()
        self._blob_sql = (
            f"INSERT INTO {schema}.blobs (session_id, hash, encoding, kind, raw_size, created_at_ms, content) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
        )
        self._node_sql = (
            f"INSERT INTO {schema}.nodes (session_id, node_id, parent_node_id, user_text, body) "
            "VALUES (%s, %s, %s, %s, %s)"
        )
        self._head_sql = (
            f"UPDATE {schema}.sessions SET revision = %s, checkpoint_ref = %s, leaf_node_id = %s, body = %s, "
            "usage_ledger = %s, node_count = %s, user_message_count = %s WHERE session_id = %s"
        )

    def commit(self, turn: EncodedTurn) -> None:
        """Write one encoded turn: BEGIN, the inserts, the head update and COMMIT go out as one pipeline.

        ``BEGIN`` and ``COMMIT`` are plain statements of the pipeline rather than
        ``conn.transaction()``, which waits for the server at ``BEGIN``: this way
        the whole turn is one round trip.  A failing statement makes the server
        skip the rest of the pipeline, ``COMMIT`` included, so nothing of the
        turn is committed, and leaving the pipeline raises the error (the
        benchmark then stops).
        """
        conn, cursor = self.conn, self._cursor
        with conn.pipeline():
            cursor.execute("BEGIN")
            cursor.executemany(self._blob_sql, turn.blobs)
            cursor.executemany(self._node_sql, turn.nodes)
            cursor.execute(self._head_sql, turn.head)
            cursor.execute("COMMIT")

    def verify(self) -> tuple[int, int]:
        """(head revision, node count) as stored."""
        revision = self.conn.execute(
            f"SELECT revision FROM {self.schema}.sessions WHERE session_id = %s",
            (self.session_id,),
        ).fetchone()
        nodes = self.conn.execute(
            f"SELECT count(*) FROM {self.schema}.nodes WHERE session_id = %s",
            (self.session_id,),
        ).fetchone()
        return (int(revision[0]) if revision else 0), (int(nodes[0]) if nodes else 0)

    def close(self) -> None:
        self.conn.close()


@dataclass(frozen=True, slots=True)
class _Schemas:
    store: str
    floor: str
    peers: str | None


def _new_schemas(target: PgTarget, with_peers: bool) -> _Schemas:
    return _Schemas(
        target.new_schema("store"), target.new_schema("floor"), target.new_schema("peer") if with_peers else None
    )


def _drop(target: PgTarget, schemas: _Schemas) -> None:
    from lash_store.postgres import close_shared_pools

    close_shared_pools()  # the store's pooled connections would keep prepared statements on dropped tables
    for name in (schemas.store, schemas.floor, schemas.peers):
        if name is not None:
            target.drop_schema(name)


class _EncodingFloor:
    """The floor's side of a pass: lash-store's encoding of each turn, then :class:`PgFloor` writing it.

    The encoding is done before any side of the turn runs, outside the
    floor's timed region; with ``encode_ns`` its time is recorded apart.
    """

    def __init__(self, floor: PgFloor, encoder: TurnEncoder, encode_ns: list[int] | None) -> None:
        self.floor = floor
        self.encoder = encoder
        self.encode_ns = encode_ns

    def prepare(self, content: TurnContent, commit: RuntimeCommit) -> EncodedTurn:
        started = time.perf_counter_ns()
        encoded = self.encoder.encode(commit)
        if self.encode_ns is not None:
            self.encode_ns.append(time.perf_counter_ns() - started)
        return encoded

    def commit(self, content: EncodedTurn) -> None:
        self.floor.commit(content)


def _run_pass(
    target: PgTarget,
    schemas: _Schemas,
    name: str,
    turns: int,
    workload: Workload,
    options: StoreOptions,
    peers: Sequence[PgPeerSpec],
    *,
    warmup: bool,
    encode_ns: list[int] | None = None,
) -> tuple[RunSamples, dict[str, Any]]:
    """Commit ``turns`` turns to a fresh session of each side (:func:`~lash_store.bench.commit.interleave_turns`).

    Returns the samples and (for a measured pass) the verification of the
    store and the floor.
    """
    from lash_store.postgres import PostgresStore

    with ExitStack() as stack:
        store = PostgresStore.open(target.dsn, name, options, schema=schemas.store)
        stack.callback(store.close)
        floor = PgFloor(target.dsn, schemas.floor, name)
        stack.callback(floor.close)
        writers: list[tuple[PgPeerSpec, PeerWriter]] = []
        for spec in peers:
            assert schemas.peers is not None
            writer = spec.open(dsn_with_search_path(target.dsn, schemas.peers), name)
            stack.callback(writer.close)
            writers.append((spec, writer))
        encoding_floor = _EncodingFloor(floor, TurnEncoder(name, options.blob_profile), encode_ns)
        samples = interleave_turns(turns, workload, store, encoding_floor, writers, warmup=warmup)
        verification = {} if warmup else _verify(target, schemas, name, turns, options, floor)
    return samples, verification


def _verify(
    target: PgTarget, schemas: _Schemas, name: str, turns: int, options: StoreOptions, floor: PgFloor
) -> dict[str, Any]:
    """Re-open the measured session read-only (head revision, node count, resume latency); and the floor's rows."""
    from lash_store.postgres import PostgresStore

    with PostgresStore.open(target.dsn, name, options, schema=schemas.store, create=False) as store:
        check = verify_session(store, turns)
    floor_revision, floor_nodes = floor.verify()
    return {
        **check,
        "ok": check["ok"] and floor_revision == turns and floor_nodes == 2 * turns,
        "floor_head_revision": floor_revision,
        "floor_node_count": floor_nodes,
    }


def run(
    *,
    checkpoints: Sequence[int],
    repeat: int,
    window: int = 50,
    warmup_turns: int = 30,
    dsn: str | None = None,
    verbose: bool = True,
    seed: int = 1,
    blob_profile: BlobProfile = BlobProfile.BALANCED,
    peers: Sequence[PgPeerSpec] = (),
) -> dict[str, Any]:
    """Run the PostgreSQL commit benchmark and return its JSON-ready report."""
    checkpoints = checked_checkpoints(checkpoints, repeat, window)
    turns = checkpoints[-1]
    workload = Workload(seed)
    options = StoreOptions(blob_profile=blob_profile)
    shared = [spec for spec in peers if not spec.isolated]
    runs: list[RunSamples] = []
    encode_runs: list[list[int]] = []
    own_pass: dict[str, list[RunSamples]] = {spec.key: [] for spec in peers if spec.isolated}
    verification: dict[str, Any] = {}
    started = time.perf_counter()
    with pg_target(dsn, verbose=verbose) as target:
        server = target.describe()
        for number in range(1, repeat + 1):
            schemas = _new_schemas(target, bool(shared))
            try:
                progress(verbose, f"commit (postgres): run {number}/{repeat}: warm-up {warmup_turns}, {turns:,} turns")
                warm = warmup_content(seed, number)
                if warmup_turns:
                    _run_pass(target, schemas, f"warmup-{number}", warmup_turns, warm, options, shared, warmup=True)
                encode_ns: list[int] = []
                samples, check = _run_pass(
                    target,
                    schemas,
                    f"session-{number}",
                    turns,
                    workload,
                    options,
                    shared,
                    warmup=False,
                    encode_ns=encode_ns,
                )
                runs.append(samples)
                encode_runs.append(encode_ns)
                if verification.get("ok", True):  # keep the first failure, else the latest run
                    verification = check
            finally:
                _drop(target, schemas)
            for spec in peers:
                if not spec.isolated:
                    continue
                limit = commit_report.peer_turns(spec, turns)
                progress(verbose, f"commit (postgres): run {number}/{repeat}: {spec.label} in its own pass, {limit:,}")
                schemas = _new_schemas(target, True)
                try:
                    if warmup_turns:
                        _run_pass(target, schemas, f"warmup-{number}", warmup_turns, warm, options, [spec], warmup=True)
                    samples, _ = _run_pass(
                        target, schemas, f"session-{number}", limit, workload, options, [spec], warmup=False
                    )
                    own_pass[spec.key].append(samples)
                finally:
                    _drop(target, schemas)
    elapsed = time.perf_counter() - started
    return _report(
        runs,
        encode_runs,
        own_pass,
        peers,
        checkpoints,
        window,
        repeat,
        warmup_turns,
        options,
        server,
        verification,
        elapsed,
    )


def _report(
    runs: Sequence[RunSamples],
    encode_runs: Sequence[Sequence[int]],
    own_pass: dict[str, list[RunSamples]],
    peers: Sequence[PgPeerSpec],
    checkpoints: Sequence[int],
    window: int,
    repeat: int,
    warmup_turns: int,
    options: StoreOptions,
    server: dict[str, Any],
    verification: dict[str, Any],
    elapsed: float,
) -> dict[str, Any]:
    rows = [
        commit_report.checkpoint_row(
            turn,
            window,
            runs,
            RATIO_TARGET,
            spread=True,
            extra={"encode_us": statistics.median(commit_report.window_median(e, turn, window) for e in encode_runs)},
        )
        for turn in checkpoints
    ]
    growth = commit_report.growth_figures(rows, to_last_turn=True)
    totals = {
        **commit_report.all_turns_totals(runs),
        "encode_mean_us": statistics.median(statistics.fmean(e) for e in encode_runs) / 1000,
    }
    peer_report = _peer_report(runs, own_pass, peers, checkpoints, window) if peers else None
    peer_ok = all(side["speedup_pass"] is not False for side in peer_report["sides"]) if peer_report else True
    return {
        "benchmark": "commit",
        "backend": "postgres",
        "config": {
            "turns": checkpoints[-1],
            "checkpoints": list(checkpoints),
            "window": window,
            "repeat": repeat,
            "warmup_turns": warmup_turns,
            "blob_profile": options.blob_profile.value,
            "floor": "plain psycopg: one pipelined transaction per turn of the bytes lash-store encoded",
        },
        "server": server,
        "checkpoints": rows,
        "growth": growth,
        "all_turns": totals,
        "targets_met": all(row["pass"] for row in rows) and growth["pass"] and peer_ok,
        "verification": verification,
        "peers": peer_report,
        "elapsed_s": elapsed,
    }


def _peer_report(
    runs: Sequence[RunSamples],
    own_pass: dict[str, list[RunSamples]],
    peers: Sequence[PgPeerSpec],
    checkpoints: Sequence[int],
    window: int,
) -> dict[str, Any]:
    """Per peer and checkpoint: window median, p90/p99, and its ratio to the floor and lash-store of the same pass.

    ``speedup_pass`` says whether lash-store is at least
    :data:`PEER_SPEEDUP_TARGET` times faster than the full-state peer at
    :data:`PEER_SPEEDUP_TURN` (``None`` when not measured there or not that peer).
    """
    sides = []
    for spec in peers:
        source = commit_report.peer_source(spec, runs, own_pass)
        points = [commit_report.peer_point(spec, source, turn, window, spread=True) for turn in checkpoints]
        speedup: bool | None = None
        if spec.key.endswith("full"):
            at = next((p for p in points if p["turn"] == PEER_SPEEDUP_TURN and p["us"] is not None), None)
            speedup = None if at is None else at["ratio_vs_store"] >= PEER_SPEEDUP_TARGET
        sides.append(
            {
                **commit_report.peer_heading(spec, own_pass),
                "checkpoints": points,
                "speedup_target": PEER_SPEEDUP_TARGET if spec.key.endswith("full") else None,
                "speedup_turn": PEER_SPEEDUP_TURN,
                "speedup_pass": speedup,
                "verification": commit_report.peer_verification(spec, source),
            }
        )
    return {"sides": sides}


def format_report(report: dict[str, Any]) -> str:
    """The plain-text rendering of :func:`run`'s report."""
    config, server = report["config"], report["server"]
    lines = [
        f"lash-store commit benchmark on PostgreSQL {server['server_version']}: {config['turns']:,} turns, "
        f"one session, {config['blob_profile']} blobs",
        server_line(server, ("fsync", "synchronous_commit", "wal_sync_method")),
        f"floor: {config['floor']}",
        f"window: the {config['window']} turns ending at each checkpoint; p50 = median of {config['repeat']} run "
        f"median(s), p90/p99 pooled over runs; warm-up {config['warmup_turns']} turns per run",
        "",
    ]
    check = report["verification"]
    floor_rows = f"; floor revision {check['floor_head_revision']:,}, {check['floor_node_count']:,} nodes"
    lines += [
        commit_report.checkpoint_table(report["checkpoints"], FLOOR_LABEL, spread=True, extra={"encode": "encode_us"}),
        "encode = lash-store's own validation + encoding of the turn (inside its commit, outside the floor's)",
        "",
        commit_report.growth_line(report["growth"]),
        commit_report.all_turns_line(report["all_turns"], "all turns"),
        commit_report.verification_line(check, read="active path", floor=floor_rows),
    ]
    if report.get("peers"):
        lines += ["", *_format_peers(report)]
    lines.append(commit_report.targets_line(report))
    return "\n".join(lines)


def _format_peers(report: dict[str, Any]) -> list[str]:
    """The peers table (ratios to lash-store), then what each peer writes and read back."""
    lines = [
        "peers on the same workload and server, interleaved turn by turn: per-turn latency (x lash-store of its pass)",
        *commit_report.peer_table(report, FLOOR_LABEL, versus="store"),
    ]
    for side in report["peers"]["sides"]:
        check = side["verification"]
        limit = f"; stops after {side['max_turns']:,} turns" if side["max_turns"] is not None else ""
        lines.append(
            f"{side['label']}: {side['library']} {side['version']}{limit}; read back: {check.get('detail', '?')}  "
            f"{'ok' if check['ok'] else 'FAILED'}"
        )
        lines.append(f"  per turn: {side['per_turn']}")
        if side["speedup_pass"] is not None:
            lines.append(
                f"  lash-store faster by >= {side['speedup_target']:.0f}x at turn {side['speedup_turn']:,}: "
                f"{verdict(side['speedup_pass'])}"
            )
    return lines
