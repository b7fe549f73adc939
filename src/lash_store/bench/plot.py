"""``commit --plot FILE.png``: per-turn commit latency against session length.

Each side of the commit run (lash-store, the ``sqlite3`` floor and, with
``--peers``, the peer libraries) is drawn as faint per-turn points (the median
over runs of each turn's latency) under a line of their rolling median.  Both
axes are logarithmic: turns 1 to 10,000, and latencies from tens of
microseconds to the tens of milliseconds of a peer that rewrites the whole
history.  A flat line means the per-turn cost does not grow with the session.

Needs matplotlib (the optional extra ``lash-store[bench]``); it is driven
through its object API on the Agg backend, so no display and no global
``pyplot`` state are involved.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from lash_store.bench import require_extra

__all__ = ["check_available", "plot_commit_latency", "rolling_median"]

_COLOURS = ("#1f77b4", "#7f7f7f", "#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")


def check_available() -> None:
    """Raise :class:`MissingExtra` when matplotlib cannot be imported."""
    require_extra("--plot", (("matplotlib.backends.backend_agg", "matplotlib"),))


def rolling_median(values: Sequence[float], window: int) -> list[float]:
    """For each index, the median of the ``window`` values ending there (fewer at the start)."""
    if window < 1:
        raise ValueError("window must be at least 1")
    return [statistics.median(values[max(0, i + 1 - window) : i + 1]) for i in range(len(values))]


def plot_commit_latency(
    series: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    window: int = 50,
    checkpoints: Sequence[int] = (),
    title: str = "lash-store: per-turn commit latency vs session length",
    subtitle: str = "",
) -> Path:
    """Draw ``series`` (label -> per-turn latency in microseconds, turn 1 first) to a PNG; returns its path."""
    check_available()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    target = Path(path)
    figure = Figure(figsize=(10, 6), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for number, (label, values) in enumerate(series.items()):
        if not values:
            continue
        colour = _COLOURS[number % len(_COLOURS)]
        turns = range(1, len(values) + 1)
        axes.scatter(turns, values, s=2, alpha=0.12, color=colour, linewidths=0, rasterized=True)
        axes.plot(turns, rolling_median(values, window), color=colour, linewidth=1.8, label=label)
    for turn in checkpoints:
        axes.axvline(turn, color="#cccccc", linewidth=0.8, linestyle=":", zorder=0)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("turn (session length in turns)")
    axes.set_ylabel(f"commit latency per turn, us (line: rolling median of {window} turns)")
    axes.set_title(f"{title}\n{subtitle}" if subtitle else title, fontsize=11)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="upper left", fontsize=9)
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, format="png")
    return target
