"""``lash-store bench openai-session``: ``LashSession.add_items`` per turn against the SDK's ``SQLiteSession``.

Issue 14's target: ``LashSession.add_items`` per-turn latency no higher than
``SQLiteSession``'s in the same run, and flat with session length.

The workload: one session per side, each in its own file of the run
directory, and every turn one ``await add_items([user item, assistant
message])`` on each (a ~500-byte user message and a ~1,500-byte assistant
output message, Responses-API shaped, the same dicts on both sides, built
outside the timed region).  The two sides alternate who goes first every turn,
on one persistent event loop; the whole awaited call is timed, thread hop
included (it is the API).

Durability is matched: ``LashSession.sqlite`` runs with the store's default
(WAL, ``synchronous=NORMAL``), and ``SQLiteSession`` gets the same level on
its connections (the subclass :mod:`lash_store.bench.peers` uses for
``commit --peers``), so the comparison is of implementations, not of
``fsync`` policy.

Reported at each checkpoint turn (default 10, 100, 1,000): p50/p90/p99/max
of the ``window`` turns ending there, the lash/SDK ratio of p50 and p99, and
``get_items(limit)`` latency (the newest ``limit`` items, ``reads`` calls per
side, after the window).  Flatness is the p50 at the last checkpoint over the
p50 at the first.  Warm-up turns on throw-away sessions come first, so the
first window does not pay for imports, connections and caches.  The run is
verified: both sides end with the same items.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import random
from pathlib import Path
from typing import Any

from lash_store.bench import (
    latency_row,
    ms_figures,
    progress,
    render_table,
    require_extra,
    timed,
    verdict,
    workdir,
)

__all__ = ["FLAT_BOUND", "FULL_CHECKPOINTS", "QUICK_CHECKPOINTS", "format_report", "run"]

FULL_CHECKPOINTS = (10, 100, 1_000)
QUICK_CHECKPOINTS = (10, 100)
FLAT_BOUND = 1.5
"""Flat: the last checkpoint's p50 is at most this many times the first's (a shared machine's noise included)."""

_WORDS = ("the", "agent", "reads", "a", "file", "runs", "tests", "and", "answers", "with", "plan", "for", "store")


def _text(rng: random.Random, size: int) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size]


def turn_items(seed: int, turn: int) -> list[dict[str, Any]]:
    """The turn's two items: a user message and an assistant output message (deterministic per seed and turn)."""
    rng = random.Random(seed * 1_000_003 + turn)
    return [
        {"role": "user", "content": _text(rng, 500)},
        {
            "id": f"msg_{turn:06d}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": _text(rng, 1_500), "annotations": []}],
        },
    ]


class _Sides:
    """The two sessions of one run, on one event loop."""

    def __init__(self, directory: Path, name: str, synchronous: str) -> None:
        from lash_store.adapters.openai_agents import LashSession
        from lash_store.bench.peers import _session_class

        self.loop = asyncio.new_event_loop()
        self.sessions: dict[str, Any] = {}
        try:
            self.sessions["lash"] = LashSession.sqlite(name, directory / f"{name}-lash")
            self.sessions["sdk"] = _session_class(synchronous)(name, str(directory / f"{name}-sdk.db"))
        except BaseException:
            self.close()
            raise

    def add(self, side: str, items: list[dict[str, Any]]) -> int:
        elapsed, _ = timed(lambda: self.loop.run_until_complete(self.sessions[side].add_items(items)))
        return elapsed

    def read(self, side: str, limit: int | None) -> tuple[int, list[Any]]:
        return timed(lambda: self.loop.run_until_complete(self.sessions[side].get_items(limit)))

    def close(self) -> None:
        try:
            for session in self.sessions.values():
                session.close()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()


def run(
    *,
    checkpoints: list[int] | tuple[int, ...] = FULL_CHECKPOINTS,
    window: int = 50,
    warmup_turns: int = 30,
    reads: int = 30,
    limit: int = 20,
    seed: int = 1,
    base_dir: str | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run the workload (see the module docstring); returns the report."""
    require_extra("openai-session", [("agents.memory.sqlite_session", "openai-agents")])
    from lash_store.options import StoreOptions

    synchronous = StoreOptions().durability.value
    marks = sorted(set(checkpoints))
    turns = marks[-1]
    samples: dict[str, list[int]] = {"lash": [], "sdk": []}
    at_marks: list[dict[str, Any]] = []
    with workdir(base_dir, "openai-session") as directory:
        if warmup_turns:
            warm = _Sides(directory, "warm-up", synchronous)
            try:
                for turn in range(1, warmup_turns + 1):
                    for side in ("lash", "sdk"):
                        warm.add(side, turn_items(seed + 1, turn))
            finally:
                warm.close()
        sides = _Sides(directory, "bench", synchronous)
        try:
            for turn in range(1, turns + 1):
                items = turn_items(seed, turn)
                order = ("lash", "sdk") if turn % 2 else ("sdk", "lash")
                for side in order:
                    samples[side].append(sides.add(side, items))
                if turn in marks:
                    at_marks.append(_checkpoint(sides, samples, turn, window, reads, limit))
                    progress(verbose, f"openai-session: turn {turn:,} of {turns:,}")
            lash_items = sides.loop.run_until_complete(sides.sessions["lash"].get_items())
            sdk_items = sides.loop.run_until_complete(sides.sessions["sdk"].get_items())
        finally:
            sides.close()
    same = lash_items == sdk_items and len(sdk_items) == 2 * turns
    first, last = at_marks[0], at_marks[-1]
    flatness = {side: last[side]["p50_ms"] / first[side]["p50_ms"] for side in ("lash", "sdk")}
    not_slower = all(mark["ratio_p50"] <= 1.0 for mark in at_marks)
    return {
        "config": {
            "checkpoints": marks,
            "window": window,
            "warmup_turns": warmup_turns,
            "reads": reads,
            "limit": limit,
            "seed": seed,
            "synchronous": synchronous,
            "item_bytes": {"user": 500, "assistant": 1_500},
            "openai_agents": _version("openai-agents"),
        },
        "checkpoints": at_marks,
        "flatness": flatness,
        "targets": {
            "not_slower_than_sqlite_session": not_slower,
            "flat": flatness["lash"] <= FLAT_BOUND,
            "flat_bound": FLAT_BOUND,
        },
        "verification": {"ok": same, "same_items": lash_items == sdk_items, "items": len(lash_items)},
    }


def _checkpoint(
    sides: _Sides, samples: dict[str, list[int]], turn: int, window: int, reads: int, limit: int
) -> dict[str, Any]:
    """The window ending at ``turn`` on both sides, then ``get_items(limit)`` timed ``reads`` times per side."""
    mark: dict[str, Any] = {"turn": turn}
    for side in ("lash", "sdk"):
        mark[side] = ms_figures(samples[side][-min(window, turn) :])
    mark["ratio_p50"] = mark["lash"]["p50_ms"] / mark["sdk"]["p50_ms"]
    mark["ratio_p99"] = mark["lash"]["p99_ms"] / mark["sdk"]["p99_ms"]
    read_samples: dict[str, list[int]] = {"lash": [], "sdk": []}
    for index in range(reads):
        for side in ("lash", "sdk") if index % 2 else ("sdk", "lash"):
            elapsed, _ = sides.read(side, limit)
            read_samples[side].append(elapsed)
    mark["get_items"] = {side: ms_figures(values) for side, values in read_samples.items()} if reads else {}
    return mark


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def format_report(report: dict[str, Any]) -> str:
    """The report as text: one latency table per checkpoint, then the targets."""
    config = report["config"]
    headers = ["add_items", "p50", "p90", "p99", "max"]
    lines = [
        f"openai-session: one add_items([user ~500 B, assistant ~1,500 B]) per turn; windows of {config['window']} "
        f"turns; synchronous={config['synchronous']} on both; openai-agents {config['openai_agents']}"
    ]
    for mark in report["checkpoints"]:
        rows = [latency_row(f"LashSession @ {mark['turn']:,}", mark["lash"])]
        rows.append(latency_row(f"SQLiteSession @ {mark['turn']:,}", mark["sdk"]))
        for side, label in (("lash", "LashSession"), ("sdk", "SQLiteSession")):
            if side in mark["get_items"]:
                rows.append(latency_row(f"  {label} get_items({config['limit']})", mark["get_items"][side]))
        lines += ["", render_table(headers, rows)]
        lines.append(f"lash/SDK: p50 {mark['ratio_p50']:.2f}x, p99 {mark['ratio_p99']:.2f}x")
    targets = report["targets"]
    flat = report["flatness"]
    lines += [
        "",
        f"not slower than SQLiteSession (p50, every checkpoint): {verdict(targets['not_slower_than_sqlite_session'])}",
        f"flat with session length (p50 last/first: lash {flat['lash']:.2f}x, SDK {flat['sdk']:.2f}x; "
        f"bound {targets['flat_bound']}x): {verdict(targets['flat'])}",
        f"same items on both sides: {report['verification']['same_items']} ({report['verification']['items']:,})",
    ]
    return "\n".join(lines)
