"""Benchmarks of lash-store, each measured against plain ``sqlite3`` doing the same work in the same run.

Run ``python -m lash_store.bench {commit,resume,queue,gc,list} [--quick] [--json] [--dir DIR]``
(see :mod:`lash_store.bench.__main__`).  The sub-modules hold the workloads:

- :mod:`lash_store.bench.commit` -- per-turn commit latency as a session grows,
  against a hand-written WAL ``sqlite3`` "floor" writing the same bytes (the
  interleaved loop the PostgreSQL twin runs too);
- :mod:`lash_store.bench.commit_report` -- the commit benchmark's figures and
  text, for both backends;
- :mod:`lash_store.bench.resume` -- ``load_session`` (full graph and active
  path) of sessions of growing length, against a ``sqlite3`` read of the same rows;
- :mod:`lash_store.bench.queue` -- claim throughput and latency with several
  worker processes sharing one session file, with exactly-once verification;
- :mod:`lash_store.bench.gc` -- ``gc_unreachable`` over 10,000 unreachable
  blobs, against a plain ``DELETE ... NOT IN (live set)``;
- :mod:`lash_store.bench.peers` -- LangGraph's ``SqliteSaver`` and the OpenAI
  Agents SDK's ``SQLiteSession`` on the commit workload (``commit --peers``);
- :mod:`lash_store.bench.plot` -- the per-turn latency chart (``commit --plot``);
- :mod:`lash_store.bench.openai_session` -- ``LashSession.add_items`` per turn
  against the OpenAI Agents SDK's ``SQLiteSession`` (``openai-session``).

With ``--backend postgres`` the benchmarks run on PostgreSQL against plain
psycopg, on a throwaway durable server or in fresh schemas of ``--dsn``
(:mod:`lash_store.bench.pg`):

- :mod:`lash_store.bench.pg_commit` -- per-turn commit latency against one
  pipelined psycopg transaction of the bytes lash-store encodes;
- :mod:`lash_store.bench.pg_peers` -- LangGraph's ``PostgresSaver`` on that
  workload (``commit --backend postgres --peers``);
- :mod:`lash_store.bench.pg_queue` -- claims per second with 1 / 4 / 8 worker
  processes on own queues and on one shared queue, against ``FOR UPDATE SKIP
  LOCKED``, with exactly-once verification;
- :mod:`lash_store.bench.pg_list` -- ``list_sessions`` first page with
  10,000 sessions in the database (``list``).

The peers and the chart need the optional extra ``lash-store[bench]``; without
it those options fail with :class:`MissingExtra` and nothing else is affected.

This module holds the small helpers all share: statistics, formatting and
the working directory.  Benchmarks are measurements, never pass/fail tests of
speed; targets are printed next to the figures as PASS/MISS.
"""

from __future__ import annotations

import argparse
import importlib
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = [
    "EXTRA_INSTALL_HINT",
    "FLOOR_CACHE_SIZE_KIB",
    "MissingExtra",
    "format_us",
    "percentile",
    "progress",
    "render_table",
    "require_extra",
    "summarise_ns",
    "verdict",
    "workdir",
]

EXTRA_INSTALL_HINT = "pip install 'lash-store[bench]'"

FLOOR_CACHE_SIZE_KIB = 8_000
"""The SQLite page cache (``PRAGMA cache_size = -8000``) lash-store's connections use; the floors of
``resume`` and ``gc`` get the same, so that their ratios compare implementations, not cache settings."""


class MissingExtra(RuntimeError):
    """An option needs a package of the optional extra ``lash-store[bench]`` that is not installed."""

    def __init__(self, option: str, packages: Sequence[str]) -> None:
        self.option = option
        self.packages = tuple(packages)
        missing = ", ".join(self.packages)
        super().__init__(f"{option} needs {missing} (not installed); install the extra: {EXTRA_INSTALL_HINT}")


def require_extra(option: str, required: Sequence[tuple[str, str]]) -> None:
    """Import every module of ``required`` (module, distribution providing it) that ``option`` needs.

    Raises :class:`MissingExtra` naming only the distributions whose modules
    could not be imported.
    """
    missing = []
    for module, distribution in required:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(distribution)
    if missing:
        raise MissingExtra(option, missing)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (``fraction`` in 0..1); NaN for an empty sequence."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def summarise_ns(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50 / p90 / p99 / max / mean of nanosecond samples, in microseconds (NaN when empty)."""
    if not samples_ns:
        return {"count": 0, "p50": math.nan, "p90": math.nan, "p99": math.nan, "max": math.nan, "mean": math.nan}
    return {
        "count": len(samples_ns),
        "p50": percentile(samples_ns, 0.50) / 1000,
        "p90": percentile(samples_ns, 0.90) / 1000,
        "p99": percentile(samples_ns, 0.99) / 1000,
        "max": max(samples_ns) / 1000,
        "mean": statistics.fmean(samples_ns) / 1000,
    }


def format_us(microseconds: float) -> str:
    """A latency for a table: ``412 us``, ``1.84 ms``."""
    if math.isnan(microseconds):
        return "-"
    if microseconds >= 1000:
        return f"{microseconds / 1000:,.2f} ms"
    return f"{microseconds:,.0f} us"


def timed(call: Callable[[], T]) -> tuple[int, T]:
    """``call()``'s duration in nanoseconds, and its value."""
    started = time.perf_counter_ns()
    value = call()
    return time.perf_counter_ns() - started, value


def ms_figures(samples_ns: Sequence[int]) -> dict[str, Any]:
    """count, p50 / p90 / p99 / max of nanosecond samples, in milliseconds (the listing benchmarks' shape)."""
    return {
        "count": len(samples_ns),
        "p50_ms": statistics.median(samples_ns) / 1e6,
        "p90_ms": percentile(samples_ns, 0.90) / 1e6,
        "p99_ms": percentile(samples_ns, 0.99) / 1e6,
        "max_ms": max(samples_ns) / 1e6,
    }


def latency_row(label: str, figures: dict[str, Any]) -> list[str]:
    """A table row of :func:`ms_figures`: label, p50, p90, p99, max."""
    return [label, *(format_us(figures[key] * 1000) for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))]


def verdict(ok: bool) -> str:
    """The word printed next to a target."""
    return "PASS" if ok else "MISS"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(cells)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def progress(enabled: bool, message: str) -> None:
    """A progress line on stderr (stdout stays clean for tables and JSON)."""
    if enabled:
        print(message, file=sys.stderr, flush=True)


@contextmanager
def workdir(base: str | None, prefix: str) -> Iterator[Path]:
    """A fresh directory for one benchmark run.

    Without ``base`` it is a temporary directory removed afterwards; with
    ``base`` it is a new sub-directory of ``base`` that is kept for inspection.
    """
    if base is None:
        path = Path(tempfile.mkdtemp(prefix=f"lash-bench-{prefix}-"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
    else:
        root = Path(base)
        root.mkdir(parents=True, exist_ok=True)
        yield Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=root))


# Argument types shared by the benchmark and the lash-store command lines.


_MAX = 2**63 - 1  # what the stores accept for counts and milliseconds


def positive(text: str) -> int:
    value = int(text)
    if not 1 <= value <= _MAX:
        raise argparse.ArgumentTypeError(f"must be an integer in 1..2**63-1, got {text}")
    return value


def non_negative(text: str) -> int:
    value = int(text)
    if not 0 <= value <= _MAX:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..2**63-1, got {text}")
    return value
