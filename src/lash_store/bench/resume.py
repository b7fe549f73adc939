"""Resume latency: ``load_session`` of a growing session, against a plain ``sqlite3`` read of the same rows.

One session grows through the commit workload (:class:`~lash_store.bench.commit.Workload`:
two message nodes and an ~8 KB tool state per turn) in lash-store and, turn
for turn, in the floor database of :class:`~lash_store.bench.commit.FloorStore`.
At each size (10 / 100 / 1,000 / 10,000 turns) both are read back repeatedly,
interleaved and in rotating order, on warm connections (the floor's with the
8 MB page cache lash-store's connection uses):

- lash-store ``load_session(SessionReadScope.full_graph())`` -- head, every
  node decoded to a ``SessionNode``, the hydrated checkpoint (tool state
  decompressed and decoded) and the usage ledger, in one read transaction;
- lash-store ``load_session(SessionReadScope.active_path())`` -- the same with
  the graph walked up from the leaf (a recursive query on the parent column);
- the floor: one read transaction selecting every node body in order, the
  head row and the latest tool state, decoding the node bodies to
  ``SessionNode`` and the head and tool state to Python values with msgspec;
- for scale only, "floor walk": the floor's nodes read by the same kind of
  recursive parent walk lash-store uses for the active path.

The session is linear, so the active path is the whole graph: both scopes
return every node and are compared with the same floor.  Figures are the
median over repetitions; the ratio is lash-store over the floor.
"""

from __future__ import annotations

import gc
import sqlite3
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, cast

import msgspec

from lash_store.bench import FLOOR_CACHE_SIZE_KIB, format_us, progress, render_table, workdir
from lash_store.bench.commit import FloorStore, Workload
from lash_store.model import PersistedSessionRead, SessionNode, SessionReadScope
from lash_store.options import BlobProfile, StoreOptions
from lash_store.sqlite import Store

__all__ = ["FULL_SIZES", "QUICK_SIZES", "floor_load", "floor_walk", "format_report", "run"]

FULL_SIZES = (10, 100, 1_000, 10_000)
QUICK_SIZES = (10, 100, 1_000)

_NODE_DECODER = msgspec.msgpack.Decoder(SessionNode)
_VALUE_DECODER = msgspec.msgpack.Decoder()

_FLOOR_WALK = """
WITH RECURSIVE path(node_id, parent_id, body, depth) AS (
    SELECT node_id, parent_id, body, 0 FROM nodes WHERE node_id = ?
    UNION ALL
    SELECT n.node_id, n.parent_id, n.body, p.depth + 1 FROM path p JOIN nodes n ON n.node_id = p.parent_id
    WHERE p.depth < ?
)
SELECT body FROM path ORDER BY depth
"""

FloorRead = tuple[int, dict[str, Any], list[SessionNode], dict[str, Any]]


def floor_load(conn: sqlite3.Connection) -> FloorRead:
    """The floor's resume: head, every node (decoded) and the latest tool state, in one read transaction."""
    conn.execute("BEGIN")
    try:
        revision, _leaf, head_body = conn.execute("SELECT revision, leaf_node_id, body FROM head").fetchone()
        nodes = [_NODE_DECODER.decode(body) for (body,) in conn.execute("SELECT body FROM nodes ORDER BY seq")]
        (tool_state,) = conn.execute("SELECT body FROM tool_states ORDER BY turn DESC LIMIT 1").fetchone()
    finally:
        conn.execute("COMMIT")
    return int(revision), _VALUE_DECODER.decode(head_body), nodes, _VALUE_DECODER.decode(tool_state)


def floor_walk(conn: sqlite3.Connection) -> FloorRead:
    """Like :func:`floor_load`, the nodes read by a recursive walk from the leaf up the ``parent_id`` column."""
    conn.execute("BEGIN")
    try:
        revision, leaf, head_body = conn.execute("SELECT revision, leaf_node_id, body FROM head").fetchone()
        count = conn.execute("SELECT count(*) FROM nodes").fetchone()[0]
        nodes = [_NODE_DECODER.decode(body) for (body,) in conn.execute(_FLOOR_WALK, (leaf, count))]
        nodes.reverse()
        (tool_state,) = conn.execute("SELECT body FROM tool_states ORDER BY turn DESC LIMIT 1").fetchone()
    finally:
        conn.execute("COMMIT")
    return int(revision), _VALUE_DECODER.decode(head_body), nodes, _VALUE_DECODER.decode(tool_state)


def _grow(store: Store, floor: FloorStore, workload: Workload, start: int, stop: int, revision: int) -> int:
    """Commit turns ``start..stop`` to both sides (not timed); returns the store's head revision."""
    for index in range(start, stop + 1):
        content = workload.turn(index)
        revision = store.commit_runtime_state(workload.commit(content, revision)).head_revision
        floor.commit(content)
    return revision


def _measure(
    readers: Sequence[tuple[str, Callable[[], object]]], repeat: int
) -> tuple[dict[str, list[int]], dict[str, object]]:
    """Time every reader ``repeat`` times, interleaved in rotating order; the last result of each is kept."""
    samples: dict[str, list[int]] = {name: [] for name, _ in readers}
    results: dict[str, object] = {}
    clock = time.perf_counter_ns
    for number in range(repeat):
        shift = number % len(readers)
        for name, read in (*readers[shift:], *readers[:shift]):
            results.pop(name, None)  # free the previous result outside the timed region
            gc.collect()
            started = clock()
            value = read()
            samples[name].append(clock() - started)
            results[name] = value
    return samples, results


def _verify(turns: int, results: dict[str, object], workload: Workload) -> dict[str, Any]:
    """Both scopes and both floor reads returned the whole session, with the latest tool state."""
    expected_nodes = 2 * turns
    expected_leaf = f"t{turns:06d}-assistant"
    tool_state = workload.tool_state(turns)
    problems = []
    for name in ("full_graph", "active_path"):
        read = results[name]
        if not isinstance(read, PersistedSessionRead):
            problems.append(f"{name}: no session")
            continue
        nodes = read.graph.nodes
        if len(nodes) != expected_nodes or nodes[-1].node_id != expected_leaf or read.head_revision != turns:
            problems.append(f"{name}: revision {read.head_revision}, {len(nodes)} nodes")
        if read.checkpoint is None or read.checkpoint.tool_state != tool_state:
            problems.append(f"{name}: tool state differs")
    for name in ("floor", "floor_walk"):
        revision, _head, floor_nodes, floor_tool_state = cast(FloorRead, results[name])
        if revision != turns or len(floor_nodes) != expected_nodes or floor_nodes[-1].node_id != expected_leaf:
            problems.append(f"{name}: revision {revision}, {len(floor_nodes)} nodes")
        if floor_tool_state != tool_state:
            problems.append(f"{name}: tool state differs")
    return {"ok": not problems, "problems": problems, "nodes": expected_nodes}


def run(
    *,
    sizes: Sequence[int],
    repeat: int,
    base_dir: str | None = None,
    verbose: bool = True,
    seed: int = 1,
    blob_profile: BlobProfile = BlobProfile.BALANCED,
) -> dict[str, Any]:
    """Run the resume benchmark and return its JSON-ready report (``verification.ok`` is the verdict)."""
    sizes = sorted(set(sizes))
    if not sizes or sizes[0] < 1 or repeat < 1:
        raise ValueError("sizes must be positive and repeat at least 1")
    workload = Workload(seed)
    options = StoreOptions(blob_profile=blob_profile)
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    started = time.perf_counter()
    with workdir(base_dir, "resume") as directory:
        store = Store.open(directory / "resume-store.db", options)
        floor = FloorStore(directory / "resume-floor.db")
        floor.conn.execute(f"PRAGMA cache_size = -{FLOOR_CACHE_SIZE_KIB}")  # the page cache lash-store uses
        try:
            readers: list[tuple[str, Callable[[], object]]] = [
                ("full_graph", partial(store.load_session, SessionReadScope.full_graph())),
                ("active_path", partial(store.load_session, SessionReadScope.active_path())),
                ("floor", partial(floor_load, floor.conn)),
                ("floor_walk", partial(floor_walk, floor.conn)),
            ]
            revision, built = 0, 0
            for size in sizes:
                progress(verbose, f"resume: growing the session to {size:,} turns, then {repeat} loads per reader")
                revision = _grow(store, floor, workload, built + 1, size, revision)
                built = size
                samples, results = _measure(readers, repeat)
                check = _verify(size, results, workload)
                problems += [f"{size} turns: {problem}" for problem in check["problems"]]
                us = {name: statistics.median(values) / 1000 for name, values in samples.items()}
                rows.append(
                    {
                        "turns": size,
                        "nodes": check["nodes"],
                        "full_graph_us": us["full_graph"],
                        "active_path_us": us["active_path"],
                        "floor_us": us["floor"],
                        "floor_walk_us": us["floor_walk"],
                        "full_graph_ratio": us["full_graph"] / us["floor"],
                        "active_path_ratio": us["active_path"] / us["floor"],
                        "full_graph_us_per_node": us["full_graph"] / check["nodes"],
                        "samples": repeat,
                    }
                )
        finally:
            store.close()
            floor.close()
        directory_used = str(directory)
    return {
        "benchmark": "resume",
        "config": {
            "sizes": sizes,
            "repeat": repeat,
            "blob_profile": options.blob_profile.value,
            "dir": directory_used if base_dir is not None else None,
        },
        "sizes": rows,
        "verification": {"ok": not problems, "problems": problems},
        "elapsed_s": time.perf_counter() - started,
    }


def format_report(report: dict[str, Any]) -> str:
    """The plain-text rendering of :func:`run`'s report."""
    config = report["config"]
    lines = [
        f"lash-store resume benchmark: load_session of one session of {', '.join(f'{s:,}' for s in config['sizes'])} "
        f"turns (2 nodes + ~8 KB tool state per turn, {config['blob_profile']} blobs)",
        f"median of {config['repeat']} warm loads per reader, interleaved; floor = one sqlite3 read transaction "
        "selecting every node body + head + latest tool state, msgpack-decoded",
        "",
    ]
    table = [
        [
            f"{row['turns']:,}",
            f"{row['nodes']:,}",
            format_us(row["full_graph_us"]),
            format_us(row["active_path_us"]),
            format_us(row["floor_us"]),
            f"{row['full_graph_ratio']:.2f}x",
            f"{row['active_path_ratio']:.2f}x",
            format_us(row["floor_walk_us"]),
            f"{row['full_graph_us_per_node']:.2f} us",
        ]
        for row in report["sizes"]
    ]
    headers = [
        "turns",
        "nodes",
        "full graph",
        "active path",
        "sqlite3 floor",
        "full/floor",
        "active/floor",
        "floor walk",
        "full per node",
    ]
    lines.append(render_table(headers, table))
    check = report["verification"]
    lines += [
        "",
        "floor walk: the floor's nodes read by a recursive parent walk like the active path's (for scale)",
        f"verification: every read returned all nodes, the head revision and the latest tool state  "
        f"{'ok' if check['ok'] else 'FAILED'}",
    ]
    lines += [f"  {problem}" for problem in check["problems"]]
    lines.append(f"elapsed {report['elapsed_s']:.1f} s")
    return "\n".join(lines)
