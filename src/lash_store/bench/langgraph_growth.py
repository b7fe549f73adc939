"""``lash-store bench langgraph-growth``: storage and latency of a long MessagesState thread, LashSaver vs SqliteSaver.

The workload: ``StateGraph(MessagesState)`` with one node answering with a
deterministic pseudo-text ``AIMessage`` (a seeded vocabulary, so compression
is realistic, not flattering); each turn invokes it with a user message,
``durability="sync"``, one thread, files on local disk.  Both savers run in
the same process, one after the other, on the same inputs.

Recorded per saver: the bytes on disk at sample turns (SqliteSaver: its
database after ``wal_checkpoint(TRUNCATE)``; LashSaver: every file of its
root after a checkpoint), bytes added per turn in an early and a late window,
``invoke`` latency p50/p99 per window, total wall time, the full (generation-2)
garbage collections that ran during each saver's turns (count, longest, sum:
measured through ``gc.callbacks`` for both savers alike, the collector's
settings untouched), the load average before and after, and that both end
with the same conversation.

``gc_freeze=True`` (``--gc-freeze``) calls ``gc.freeze()`` after building each
saver's graph, before its first turn, and ``gc.unfreeze()`` after its last --
for both savers alike.  It is a diagnostic, off by default: it moves the
objects alive at that point (mostly LangGraph's, pydantic's and the SDKs'
import-time objects) out of the full collections, which shows how much of the
tail is the collector walking them.
"""

from __future__ import annotations

import gc
import os
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from lash_store.bench import MissingExtra

_WORDS = [
    "the",
    "store",
    "keeps",
    "every",
    "turn",
    "of",
    "the",
    "conversation",
    "durable",
    "while",
    "the",
    "agent",
    "thinks",
    "about",
    "tools",
    "results",
    "plans",
    "answers",
    "questions",
    "users",
    "files",
    "context",
    "window",
    "tokens",
    "messages",
    "graph",
    "nodes",
    "checkpoints",
    "writes",
    "reads",
]


def _text(rng: random.Random, size: int) -> str:
    words: list[str] = []
    while sum(len(word) + 1 for word in words) < size:
        words.append(rng.choice(_WORDS))
    return " ".join(words)[:size]


def _graph(saver: Any, seed: int, ai_bytes: int) -> Any:
    try:
        from langchain_core.messages import AIMessage
        from langgraph.graph import END, START, MessagesState, StateGraph
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtra("langgraph-growth", ["langgraph"]) from exc
    rng = random.Random(seed)

    def reply(state: MessagesState) -> dict[str, list[Any]]:
        return {"messages": [AIMessage(content=_text(rng, ai_bytes))]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=saver)


def _disk_bytes(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        if path.suffix == ".db":
            with sqlite3.connect(path) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        total += path.stat().st_size if path.exists() else 0
    return total


def _drive(
    name: str,
    saver: Any,
    measure: Any,
    turns: int,
    samples: list[int],
    seed: int,
    sizes: tuple[int, int],
    gc_freeze: bool = False,
) -> dict[str, Any]:
    """Run the turns on one saver; ``measure()`` gives its bytes on disk (called at the sample turns only)."""
    user_bytes, ai_bytes = sizes
    graph = _graph(saver, seed, ai_bytes)
    rng = random.Random(seed + 1)
    config = {"configurable": {"thread_id": "growth"}}
    latencies: list[float] = []
    sizes_at: dict[int, int] = {}
    pauses: list[float] = []  # full collections during the turns (measured only; the collector is left as is)
    clock = [0.0]

    def watch(phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") == 2:
            if phase == "start":
                clock[0] = time.perf_counter()
            else:
                pauses.append(time.perf_counter() - clock[0])

    load_before = os.getloadavg()[0]
    if gc_freeze:
        gc.collect()
        gc.freeze()
    gc.callbacks.append(watch)
    try:
        started = time.perf_counter()
        for turn in range(1, turns + 1):
            message = ("user", _text(rng, user_bytes))
            begin = time.perf_counter()
            graph.invoke({"messages": [message]}, config, durability="sync")
            latencies.append(time.perf_counter() - begin)
            if turn in samples:
                pause = time.perf_counter()
                sizes_at[turn] = measure()
                started += time.perf_counter() - pause  # measuring the files is not the saver's time
        wall = time.perf_counter() - started
    finally:
        gc.callbacks.remove(watch)
        if gc_freeze:
            gc.unfreeze()
    final = [(m.type, m.content) for m in graph.get_state(config).values["messages"]]
    return {
        "saver": name,
        "bytes_at": sizes_at,
        "latencies": latencies,
        "wall_s": wall,
        "final": final,
        "gen2_pauses": pauses,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def _window(values: list[float], first: int, last: int) -> list[float]:
    return values[first - 1 : last]


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run(
    *,
    turns: int = 1000,
    user_bytes: int = 300,
    ai_bytes: int = 1500,
    seed: int = 1,
    base_dir: str | None = None,
    gc_freeze: bool = False,
) -> dict[str, Any]:
    """Run both savers; returns the report (see the module docstring)."""
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError as exc:  # pragma: no cover
        raise MissingExtra("langgraph-growth", ["langgraph-checkpoint-sqlite"]) from exc
    from lash_store.adapters.langgraph import LashSaver

    samples = sorted({s for s in (10, 100, turns // 4, turns // 2, turns) if 0 < s <= turns})
    early = (max(1, turns // 10 + 1), max(1, turns // 5))
    late = (max(1, turns - turns // 10 + 1), turns)
    with tempfile.TemporaryDirectory(dir=base_dir) as work:
        root = Path(work)
        stock_path = root / "sqlite-saver.db"
        conn = sqlite3.connect(stock_path, check_same_thread=False)
        sizes = (user_bytes, ai_bytes)
        stock = _drive(
            "SqliteSaver", SqliteSaver(conn), lambda: _disk_bytes([stock_path]), turns, samples, seed, sizes, gc_freeze
        )
        conn.close()
        lash_root = root / "lash"
        with LashSaver.sqlite(lash_root) as saver:
            lash = _drive(
                "LashSaver",
                saver,
                lambda: _disk_bytes(sorted(lash_root.glob("*.db"))),
                turns,
                samples,
                seed,
                sizes,
                gc_freeze,
            )
    report = _report(stock, lash, turns, samples, (user_bytes, ai_bytes, seed), early, late)
    report["gc_freeze"] = gc_freeze
    return report


def run_postgres(
    *,
    dsn: str | None = None,
    turns: int = 1000,
    user_bytes: int = 300,
    ai_bytes: int = 1500,
    seed: int = 1,
    verbose: bool = False,
    gc_freeze: bool = False,
) -> dict[str, Any]:
    """The PostgreSQL pair: ``PostgresSaver`` and ``LashSaver.postgres``, each in a fresh schema of one database.

    Without ``dsn`` a throwaway durable server runs the benchmark (see
    :mod:`lash_store.bench.pg`).  Bytes on disk are the schema's relations with
    their indexes and TOAST tables (``pg_total_relation_size``), after a
    ``VACUUM`` so that dead tuples are not counted against either saver.
    """
    try:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
    except ImportError as exc:  # pragma: no cover
        raise MissingExtra("langgraph-growth --backend postgres", ["langgraph-checkpoint-postgres"]) from exc
    from lash_store.adapters.langgraph import LashSaver
    from lash_store.bench.pg import dsn_with_search_path, pg_target

    samples = sorted({s for s in (10, 100, turns // 4, turns // 2, turns) if 0 < s <= turns})
    early = (max(1, turns // 10 + 1), max(1, turns // 5))
    late = (max(1, turns - turns // 10 + 1), turns)
    sizes = (user_bytes, ai_bytes)
    with pg_target(dsn, verbose=verbose) as target:
        stock_schema, lash_schema = target.new_schema("stock"), target.new_schema("lash")
        stock_dsn = dsn_with_search_path(target.dsn, stock_schema)
        with psycopg.connect(stock_dsn, autocommit=True, prepare_threshold=0, row_factory=dict_row) as conn:
            stock_saver = PostgresSaver(conn)
            stock_saver.setup()
            stock = _drive(
                "PostgresSaver",
                stock_saver,
                lambda: _schema_bytes(target.dsn, stock_schema),
                turns,
                samples,
                seed,
                sizes,
                gc_freeze,
            )
        with LashSaver.postgres(target.dsn, schema=lash_schema) as saver:
            lash = _drive(
                "LashSaver",
                saver,
                lambda: _schema_bytes(target.dsn, lash_schema),
                turns,
                samples,
                seed,
                sizes,
                gc_freeze,
            )
        server = target.describe()
    report = _report(stock, lash, turns, samples, (user_bytes, ai_bytes, seed), early, late)
    report["server"] = server
    report["gc_freeze"] = gc_freeze
    return report


def _schema_bytes(dsn: str, schema: str) -> int:
    """Every table of ``schema`` with its indexes and TOAST, after a VACUUM (dead tuples are not the saver's)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'r'",
                (schema,),
            ).fetchall()
        ]
        for table in tables:
            conn.execute(f'VACUUM "{schema}"."{table}"')
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
            (schema,),
        ).fetchone()
    return int(row[0]) if row else 0


def _report(
    stock: dict[str, Any],
    lash: dict[str, Any],
    turns: int,
    samples: list[int],
    workload: tuple[int, int, int],
    early: tuple[int, int],
    late: tuple[int, int],
) -> dict[str, Any]:
    user_bytes, ai_bytes, seed = workload
    rows = []
    for result in (stock, lash):
        at = result["bytes_at"]
        lat = result["latencies"]
        rows.append(
            {
                "saver": result["saver"],
                "bytes_at": at,
                "total_bytes": at[turns],
                "early_window_bytes_per_turn": _growth(at, early, samples),
                "late_window_bytes_per_turn": _growth(at, late, samples),
                "p50_ms_early": 1000 * statistics.median(_window(lat, *early)),
                "p99_ms_early": 1000 * _p(_window(lat, *early), 0.99),
                "p50_ms_late": 1000 * statistics.median(_window(lat, *late)),
                "p99_ms_late": 1000 * _p(_window(lat, *late), 0.99),
                "wall_s": result["wall_s"],
                "gen2_collections": len(result["gen2_pauses"]),
                "gen2_max_ms": 1000 * max(result["gen2_pauses"], default=0.0),
                "gen2_total_s": sum(result["gen2_pauses"]),
            }
        )
    same = stock["final"] == lash["final"]
    return {
        "workload": {"turns": turns, "user_bytes": user_bytes, "ai_bytes": ai_bytes, "seed": seed},
        "windows": {"early": early, "late": late},
        "results": rows,
        "bytes_ratio": rows[1]["total_bytes"] / rows[0]["total_bytes"],
        "wall_ratio": rows[1]["wall_s"] / rows[0]["wall_s"],
        "verification": {"ok": same, "same_final_messages": same},
        "load_average": {"before": stock.get("load_before"), "after": lash.get("load_after")},
    }


def _growth(at: dict[int, int], window: tuple[int, int], samples: list[int]) -> float:
    """Bytes per turn between the sample points around a window (the files are only measured at samples)."""
    before = max((s for s in samples if s < window[0]), default=None)
    after = min((s for s in samples if s >= window[1]), default=None)
    if before is None or after is None or after == before:
        return float("nan")
    return (at[after] - at[before]) / (after - before)


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"langgraph-growth: {report['workload']['turns']} turns, user {report['workload']['user_bytes']} B, "
        f"AI {report['workload']['ai_bytes']} B (windows {report['windows']['early']} and {report['windows']['late']})"
    ]
    for row in report["results"]:
        lines.append(
            f"  {row['saver']:<12} total {row['total_bytes'] / 1e6:9.2f} MB  growth "
            f"{row['early_window_bytes_per_turn']:>10.0f} -> {row['late_window_bytes_per_turn']:>10.0f} B/turn  "
            f"invoke p99 {row['p99_ms_early']:7.2f} -> "
            f"{row['p99_ms_late']:7.2f} ms  wall {row['wall_s']:7.1f} s  gen-2 GCs {row['gen2_collections']} "
            f"(max {row['gen2_max_ms']:.0f} ms, sum {row['gen2_total_s']:.1f} s)"
        )
    stock_name = report["results"][0]["saver"]
    if "server" in report:
        from lash_store.bench.pg import server_line

        lines.append("  " + server_line(report["server"]))
    if report.get("gc_freeze"):
        lines.append("  gc.freeze() before each saver's first turn (both alike; a diagnostic)")
    load = report.get("load_average") or {}
    if load.get("before") is not None:
        lines.append(f"  load average (1 min) before {load['before']:.2f}, after {load['after']:.2f}")
    lines.append(
        f"  LashSaver/{stock_name}: bytes {report['bytes_ratio']:.4f}x, wall time {report['wall_ratio']:.2f}x; "
        f"same final messages: {report['verification']['same_final_messages']}"
    )
    return "\n".join(lines)
