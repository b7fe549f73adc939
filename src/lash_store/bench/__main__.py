"""Command line of the benchmarks: ``python -m lash_store.bench {commit,queue} [options]``.

Examples::

    python -m lash_store.bench commit            # 10 / 100 / 1,000 / 10,000 turns, 3 runs
    python -m lash_store.bench commit --quick    # 10 / 100 / 1,000 turns, 1 run
    python -m lash_store.bench queue --json      # 2,000 batches, 4 worker processes, JSON report
    python -m lash_store.bench queue --quick --dir /tmp/bench   # keep the database files

Targets are printed next to the figures as PASS/MISS; ``commit`` exits 0
whatever the figures (it is a measurement), ``queue`` exits 1 when its
exactly-once verification fails.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from lash_store.bench import commit as commit_bench
from lash_store.bench import queue as queue_bench
from lash_store.options import BlobProfile

__all__ = ["build_parser", "main"]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m lash_store.bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m lash_store.bench",
        description="lash-store benchmarks, each against plain sqlite3 doing the same work in the same run.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{commit,queue}")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quick", action="store_true", help="smaller sizes and fewer repetitions")
    common.add_argument("--json", action="store_true", help="print a JSON report instead of tables")
    common.add_argument(
        "--dir", metavar="DIR", default=None, help="run in a new sub-directory of DIR and keep it (default: a temp dir)"
    )

    commit = commands.add_parser(
        "commit", parents=[common], help="per-turn commit latency as a session grows, vs a sqlite3 floor"
    )
    commit.add_argument(
        "--turns",
        type=_positive,
        nargs="+",
        metavar="N",
        default=None,
        help="checkpoint turns; the run lasts until the largest (default 10 100 1000 10000, --quick: 10 100 1000)",
    )
    commit.add_argument("--repeat", type=_positive, default=None, help="runs per measurement (default 3, --quick 1)")
    commit.add_argument(
        "--window", type=_positive, default=50, help="turns ending at a checkpoint whose median is reported"
    )
    commit.add_argument("--warmup", type=_non_negative, default=30, help="warm-up turns on throw-away files per run")
    commit.add_argument(
        "--profile",
        choices=[profile.value for profile in BlobProfile],
        default=BlobProfile.BALANCED.value,
        help="blob profile of the store (default balanced, the StoreOptions default)",
    )

    queue = commands.add_parser(
        "queue", parents=[common], help="claim throughput with several worker processes on one session file"
    )
    queue.add_argument("--batches", type=_positive, default=None, help="batches to enqueue (default 2000, --quick 400)")
    queue.add_argument("--workers", type=_positive, default=4, help="worker processes (default 4)")
    queue.add_argument("--repeat", type=_positive, default=None, help="runs per side (default 3, --quick 1)")
    queue.add_argument(
        "--start-method", choices=("spawn", "fork", "forkserver"), default="spawn", help="multiprocessing start method"
    )
    queue.add_argument("--no-floor", action="store_true", help="skip the plain sqlite3 comparison run")
    return parser


def _json_safe(value: Any) -> Any:
    """NaN and infinities become ``null`` so the report is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run one benchmark; returns the process exit code."""
    args = build_parser().parse_args(argv)
    verbose = not args.json
    if args.command == "commit":
        checkpoints = args.turns or list(
            commit_bench.QUICK_CHECKPOINTS if args.quick else commit_bench.FULL_CHECKPOINTS
        )
        repeat = args.repeat or (1 if args.quick else 3)
        report = commit_bench.run(
            checkpoints=checkpoints,
            repeat=repeat,
            window=args.window,
            warmup_turns=args.warmup,
            base_dir=args.dir,
            verbose=verbose,
            blob_profile=BlobProfile(args.profile),
        )
        text = commit_bench.format_report(report)
        exit_code = 0
    else:
        batches = args.batches or (400 if args.quick else 2_000)
        report = queue_bench.run(
            batches=batches,
            workers=args.workers,
            repeat=args.repeat or (1 if args.quick else 3),
            start_method=args.start_method,
            floor=not args.no_floor,
            base_dir=args.dir,
            verbose=verbose,
        )
        text = queue_bench.format_report(report)
        exit_code = 0 if report["verification"]["ok"] else 1
    if args.json:
        print(json.dumps(_json_safe(report), indent=2, allow_nan=False))
    else:
        print(text)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
