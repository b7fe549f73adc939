"""``lash-store bench langgraph-growth``: storage and latency of a long MessagesState thread, LashSaver vs SqliteSaver.

The workload: ``StateGraph(MessagesState)`` with one node answering with a
deterministic pseudo-text ``AIMessage`` (a seeded vocabulary, so compression
is realistic, not flattering); each turn invokes it with a user message,
``durability="sync"``, one thread, files on local disk.  Both savers run in
the same process, one after the other, on the same inputs.

Recorded per saver: the bytes on disk at sample turns (SqliteSaver: its
database after ``wal_checkpoint(TRUNCATE)``; LashSaver: every file of its
root after a checkpoint), bytes added per turn in an early and a late window,
``invoke`` latency p50/p99 per window, total wall time, and that both end
with the same conversation.
"""

from __future__ import annotations

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
    name: str, saver: Any, files: Any, turns: int, samples: list[int], seed: int, sizes: tuple[int, int]
) -> dict[str, Any]:
    user_bytes, ai_bytes = sizes
    graph = _graph(saver, seed, ai_bytes)
    rng = random.Random(seed + 1)
    config = {"configurable": {"thread_id": "growth"}}
    latencies: list[float] = []
    sizes_at: dict[int, int] = {}
    started = time.perf_counter()
    for turn in range(1, turns + 1):
        message = ("user", _text(rng, user_bytes))
        begin = time.perf_counter()
        graph.invoke({"messages": [message]}, config, durability="sync")
        latencies.append(time.perf_counter() - begin)
        if turn in samples:
            pause = time.perf_counter()
            sizes_at[turn] = _disk_bytes(files())
            started += time.perf_counter() - pause  # measuring the files is not the saver's time
    wall = time.perf_counter() - started
    final = [(m.type, m.content) for m in graph.get_state(config).values["messages"]]
    return {"saver": name, "bytes_at": sizes_at, "latencies": latencies, "wall_s": wall, "final": final}


def _window(values: list[float], first: int, last: int) -> list[float]:
    return values[first - 1 : last]


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run(
    *, turns: int = 1000, user_bytes: int = 300, ai_bytes: int = 1500, seed: int = 1, base_dir: str | None = None
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
        stock = _drive("SqliteSaver", SqliteSaver(conn), lambda: [stock_path], turns, samples, seed, sizes)
        conn.close()
        lash_root = root / "lash"
        with LashSaver.sqlite(lash_root) as saver:
            lash = _drive("LashSaver", saver, lambda: sorted(lash_root.glob("*.db")), turns, samples, seed, sizes)
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
            f"{row['p99_ms_late']:7.2f} ms  wall {row['wall_s']:7.1f} s"
        )
    lines.append(
        f"  LashSaver/SqliteSaver: bytes {report['bytes_ratio']:.4f}x, wall time {report['wall_ratio']:.2f}x; "
        f"same final messages: {report['verification']['same_final_messages']}"
    )
    return "\n".join(lines)
