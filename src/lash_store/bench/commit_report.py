"""Figures and text of the commit benchmark's report, shared by its SQLite and PostgreSQL runs.

:mod:`lash_store.bench.commit` (SQLite) and :mod:`lash_store.bench.pg_commit`
(PostgreSQL) measure the same thing -- per-turn commit latency of lash-store,
a floor and optional peers, interleaved turn by turn -- and summarise it the
same way: per checkpoint turn, the median over runs of the median of the
window of turns ending at that turn.  What differs is passed in: the
PostgreSQL report adds p90 / p99 columns (``spread``) and lash-store's encode
time, takes its growth to the last checkpoint too, and gives peers' ratios to
lash-store rather than to the floor.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from lash_store.bench import format_us, percentile, render_table, verdict

__all__ = [
    "GROWTH_FROM",
    "GROWTH_TARGET",
    "GROWTH_TO",
    "STORE_LABEL",
    "Peer",
    "RunSamples",
    "WindowFigures",
    "all_turns_line",
    "all_turns_totals",
    "checkpoint_row",
    "checkpoint_table",
    "growth_figures",
    "growth_line",
    "peer_heading",
    "peer_point",
    "peer_source",
    "peer_table",
    "peer_turns",
    "peer_verification",
    "targets_line",
    "verification_line",
    "window_figures",
    "window_median",
    "with_ratio",
]

GROWTH_TARGET = 1.3
GROWTH_FROM, GROWTH_TO = 10, 1_000
"""Growth is lash-store's latency at turn 1,000 over turn 10 (the first / last checkpoint when not measured)."""
STORE_LABEL = "lash-store"


class Peer(Protocol):
    """One peer library on the commit workload, as it is scheduled and reported (how it is opened is per backend)."""

    @property
    def key(self) -> str:
        """A short identifier (JSON key, file name)."""

    @property
    def label(self) -> str:
        """The column heading of the report."""

    @property
    def max_turns(self) -> int | None:
        """The peer stops after this many turns (``None``: runs to the end)."""

    @property
    def isolated(self) -> bool:
        """Run in a pass of its own with lash-store and the floor (its I/O would disturb the shared pass)."""

    def describe(self) -> dict[str, Any]:
        """What the peer writes per turn, its version and its settings (for the report)."""


@dataclass(slots=True)
class RunSamples:
    """The per-turn latencies (ns) of one pass, and what each peer read back at its end."""

    store_ns: list[int]
    floor_ns: list[int]
    peer_ns: dict[str, list[int]] = field(default_factory=dict)
    peer_checks: dict[str, dict[str, Any]] = field(default_factory=dict)


# --------------------------------------------------------------------------
# Figures


def _window(samples: Sequence[int], turn: int, size: int) -> Sequence[int]:
    """The samples of the ``size`` turns ending at ``turn`` (1-based)."""
    return samples[max(0, turn - size) : turn]


def window_median(samples: Sequence[int], turn: int, size: int) -> float:
    """Median (in microseconds) of the ``size`` turns ending at ``turn``."""
    return statistics.median(_window(samples, turn, size)) / 1000


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """One side at one checkpoint, in microseconds."""

    p50: float
    """The median over runs of each run's window median."""
    p90: float
    """Of the window's samples of all runs pooled."""
    p99: float
    per_run: list[float]
    """Each run's window median."""


def window_figures(samples_per_run: Sequence[Sequence[int]], turn: int, size: int) -> WindowFigures:
    """The figures of one side's window ending at ``turn``, over runs."""
    medians = [window_median(samples, turn, size) for samples in samples_per_run]
    pooled = [ns for samples in samples_per_run for ns in _window(samples, turn, size)]
    return WindowFigures(
        p50=statistics.median(medians),
        p90=percentile(pooled, 0.90) / 1000,
        p99=percentile(pooled, 0.99) / 1000,
        per_run=medians,
    )


def _side_columns(side: str, figures: WindowFigures, spread: bool) -> dict[str, float]:
    if not spread:
        return {f"{side}_us": figures.p50}
    return {f"{side}_us": figures.p50, f"{side}_p90_us": figures.p90, f"{side}_p99_us": figures.p99}


def checkpoint_row(
    turn: int,
    size: int,
    runs: Sequence[RunSamples],
    target: float,
    *,
    spread: bool,
    extra: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """One row of the checkpoint table: lash-store and floor at ``turn``, their ratio and its verdict.

    ``spread`` adds the p90 / p99 columns of both sides; ``extra`` columns
    follow the verdict.
    """
    store = window_figures([r.store_ns for r in runs], turn, size)
    floor = window_figures([r.floor_ns for r in runs], turn, size)
    ratio = store.p50 / floor.p50
    return {
        "turn": turn,
        "window": min(size, turn),
        **_side_columns("store", store, spread),
        **_side_columns("floor", floor, spread),
        "ratio": ratio,
        "target": target,
        "pass": ratio <= target,
        **(extra or {}),
        "store_us_per_run": store.per_run,
        "floor_us_per_run": floor.per_run,
    }


def growth_figures(rows: Sequence[Mapping[str, Any]], *, to_last_turn: bool) -> dict[str, Any]:
    """How much lash-store's latency grows with the session, from the checkpoint rows.

    ``to_last_turn`` adds the growth to the last checkpoint (which may lie
    beyond :data:`GROWTH_TO`).
    """
    by_turn = {row["turn"]: row for row in rows}
    low = GROWTH_FROM if GROWTH_FROM in by_turn else rows[0]["turn"]
    high = GROWTH_TO if GROWTH_TO in by_turn else rows[-1]["turn"]
    ratio = by_turn[high]["store_us"] / by_turn[low]["store_us"]
    figures = {
        "from_turn": low,
        "to_turn": high,
        "ratio": ratio,
        "floor_ratio": by_turn[high]["floor_us"] / by_turn[low]["floor_us"],
    }
    if to_last_turn:
        last = rows[-1]["turn"]
        figures |= {"last_turn": last, "ratio_to_last": by_turn[last]["store_us"] / by_turn[low]["store_us"]}
    return {**figures, "target": GROWTH_TARGET, "pass": ratio <= GROWTH_TARGET}


def all_turns_totals(runs: Sequence[RunSamples]) -> dict[str, float]:
    """Mean and p99 over every turn of a run (WAL checkpoints and all), median over runs, in microseconds."""
    return {
        "store_mean_us": statistics.median(statistics.fmean(r.store_ns) for r in runs) / 1000,
        "floor_mean_us": statistics.median(statistics.fmean(r.floor_ns) for r in runs) / 1000,
        "store_p99_us": statistics.median(percentile(r.store_ns, 0.99) for r in runs) / 1000,
        "floor_p99_us": statistics.median(percentile(r.floor_ns, 0.99) for r in runs) / 1000,
    }


# --------------------------------------------------------------------------
# Peers


def peer_turns(spec: Peer, turns: int) -> int:
    """How many of a pass's ``turns`` the peer commits: it stops after its ``max_turns``."""
    return min(turns, spec.max_turns or turns)


def peer_source(
    spec: Peer, runs: Sequence[RunSamples], own_pass: Mapping[str, Sequence[RunSamples]]
) -> Sequence[RunSamples]:
    """The passes a peer was measured in: its own passes when isolated, else the shared ones."""
    return own_pass.get(spec.key) or runs


def peer_heading(spec: Peer, own_pass: Mapping[str, Sequence[RunSamples]]) -> dict[str, Any]:
    """The first entries of a peer's report: who it is, where it stops, which pass it ran in, what it writes."""
    return {
        "key": spec.key,
        "label": spec.label,
        "max_turns": spec.max_turns,
        "pass": "own" if spec.key in own_pass else "shared",
        **spec.describe(),
    }


def peer_point(spec: Peer, source: Sequence[RunSamples], turn: int, size: int, *, spread: bool) -> dict[str, Any]:
    """A peer at one checkpoint, with its ratios to the floor and to lash-store of the same passes.

    A shared-pass peer is compared with the figures of the main table; an
    isolated peer with the floor and lash-store of its own pass.  ``spread``
    adds the peer's p90 / p99.
    """
    if spec.max_turns is not None and turn > spec.max_turns:
        return {"turn": turn, "us": None, "ratio_vs_floor": None, "ratio_vs_store": None}
    peer = window_figures([r.peer_ns[spec.key] for r in source], turn, size)
    floor_us = statistics.median(window_median(r.floor_ns, turn, size) for r in source)
    store_us = statistics.median(window_median(r.store_ns, turn, size) for r in source)
    return {
        "turn": turn,
        "us": peer.p50,
        **({"p90_us": peer.p90, "p99_us": peer.p99} if spread else {}),
        "ratio_vs_floor": peer.p50 / floor_us,
        "ratio_vs_store": peer.p50 / store_us,
        "pass_floor_us": floor_us,
        "pass_store_us": store_us,
        "us_per_run": peer.per_run,
    }


def peer_verification(spec: Peer, source: Sequence[RunSamples]) -> dict[str, Any]:
    """What the peer read back: the first failing run's check (else the last), ``ok`` only if every run's was."""
    checks = [r.peer_checks[spec.key] for r in source if spec.key in r.peer_checks]
    shown = next((check for check in checks if not check.get("ok")), checks[-1] if checks else {"ok": False})
    return {**shown, "ok": bool(checks) and all(check.get("ok") for check in checks)}


# --------------------------------------------------------------------------
# Text


def with_ratio(microseconds: float | None, ratio: float | None) -> str:
    """A latency and, in brackets, its ratio to another side: ``412 us (1.8x)``; ``-`` when not measured."""
    if microseconds is None or ratio is None:
        return "-"
    return f"{format_us(microseconds)} ({ratio:.1f}x)"


def growth_line(growth: Mapping[str, Any]) -> str:
    """The growth of :func:`growth_figures`, with its verdict."""
    compared = f"floor {growth['floor_ratio']:.2f}x"
    if "last_turn" in growth:
        compared += f"; @{growth['last_turn']:,}: {growth['ratio_to_last']:.2f}x"
    return (
        f"growth lash-store latency@{growth['to_turn']:,} / latency@{growth['from_turn']:,}: "
        f"{growth['ratio']:.2f}x ({compared})  target <= {growth['target']:.1f}x  {verdict(growth['pass'])}"
    )


def all_turns_line(totals: Mapping[str, float], heading: str) -> str:
    """The totals of :func:`all_turns_totals` after ``heading``."""
    return (
        f"{heading}: mean lash-store {format_us(totals['store_mean_us'])}, floor {format_us(totals['floor_mean_us'])}; "
        f"p99 lash-store {format_us(totals['store_p99_us'])}, floor {format_us(totals['floor_p99_us'])}"
    )


def verification_line(check: Mapping[str, Any], *, read: str, floor: str = "") -> str:
    """The re-opened session's check; ``read`` names the timed resume, ``floor`` adds what the floor holds."""
    return (
        f"verification: head revision {check['head_revision']:,}, {check['node_count']:,} nodes, "
        f"resume ({read}, {check['active_path_nodes']:,} nodes) {format_us(check['resume_active_path_us'])}"
        f"{floor}  {'ok' if check['ok'] else 'FAILED'}"
    )


def targets_line(report: Mapping[str, Any]) -> str:
    return f"targets: {'all met' if report['targets_met'] else 'some missed'}; elapsed {report['elapsed_s']:.1f} s"


def checkpoint_table(
    rows: Sequence[Mapping[str, Any]], floor_label: str, *, spread: bool, extra: Mapping[str, str] | None = None
) -> str:
    """The checkpoint rows of :func:`checkpoint_row` as a table with their verdicts.

    ``spread`` shows the p90 / p99 columns; ``extra`` maps the headings of
    further latency columns, after the verdict, to their keys in the rows.
    """
    extra = extra or {}

    def side(row: Mapping[str, Any], name: str) -> list[str]:
        keys = [f"{name}_us", f"{name}_p90_us", f"{name}_p99_us"] if spread else [f"{name}_us"]
        return [format_us(row[key]) for key in keys]

    table = [
        [
            f"{row['turn']:,}",
            *side(row, "store"),
            *side(row, "floor"),
            f"{row['ratio']:.2f}x",
            f"<= {row['target']:.1f}x",
            verdict(row["pass"]),
            *(format_us(row[key]) for key in extra.values()),
        ]
        for row in rows
    ]
    percentiles = ["p90", "p99"] if spread else []
    headers = ["turn", STORE_LABEL, *percentiles, floor_label, *percentiles, "ratio", "target", "", *extra]
    return render_table(headers, table)


def peer_table(report: Mapping[str, Any], floor_label: str, *, versus: Literal["floor", "store"]) -> list[str]:
    """The peers table: per checkpoint, each side's window median and, in brackets, its ratio to ``versus``.

    Against the floor, lash-store's cell shows its own ratio to the floor too;
    against lash-store it shows its latency alone.
    """
    sides = report["peers"]["sides"]
    table = []
    for index, row in enumerate(report["checkpoints"]):
        store = with_ratio(row["store_us"], row["ratio"]) if versus == "floor" else format_us(row["store_us"])
        cells = [f"{row['turn']:,}", store, format_us(row["floor_us"])]
        for side in sides:
            point = side["checkpoints"][index]
            mark = "*" if side["pass"] == "own" and point["us"] is not None else ""
            cells.append(with_ratio(point["us"], point[f"ratio_vs_{versus}"]) + mark)
        table.append(cells)
    lines = [render_table(["turn", STORE_LABEL, floor_label, *(side["label"] for side in sides)], table)]
    if any(side["pass"] == "own" for side in sides):
        that = "floor" if versus == "floor" else "lash-store"
        lines.append(f"* measured in a pass of its own (with its own lash-store and floor); ratio to that {that}")
    return lines
