"""Command line of the benchmarks: ``python -m lash_store.bench {commit,resume,queue,gc,list} [options]``.

Examples::

    python -m lash_store.bench commit            # 10 / 100 / 1,000 / 10,000 turns, 3 runs
    python -m lash_store.bench commit --quick    # 10 / 100 / 1,000 turns, 1 run
    python -m lash_store.bench commit --peers --plot commit.png   # + LangGraph / OpenAI Agents, and a chart
    python -m lash_store.bench resume            # load_session at 10 / 100 / 1,000 / 10,000 turns
    python -m lash_store.bench queue --json      # 2,000 batches, 4 worker processes, JSON report
    python -m lash_store.bench gc                # gc_unreachable over 10,000 unreachable blobs
    python -m lash_store.bench queue --quick --dir /tmp/bench   # keep the database files
    python -m lash_store.bench commit --backend postgres --peers  # PostgreSQL vs plain psycopg, + LangGraph
    python -m lash_store.bench queue --backend postgres          # 1 / 4 / 8 processes, own and shared queues
    python -m lash_store.bench list --backend postgres           # list_sessions first page, 10,000 sessions
    python -m lash_store.bench telemetry         # commit latency with OpenTelemetry off / API only / SDK
    python -m lash_store.bench processes --backend postgres   # the process registry: appends, leases, wakes
    python -m lash_store.bench effects                           # effect journal and host-event routing
    python -m lash_store.bench openai-session    # LashSession.add_items vs the SDK's SQLiteSession, per turn

Every benchmark measures plain ``sqlite3`` doing the same work in the same
run and prints the ratio.  ``--backend postgres`` (``commit``, ``queue``,
``list``) runs on PostgreSQL against plain psycopg instead, on a throwaway
durable server (``fsync=on``, unix socket) or, with ``--dsn DSN``, in fresh
schemas of that database that are dropped afterwards (see
:mod:`lash_store.bench.pg`).  ``--peers`` and ``--plot`` need the optional extra
``lash-store[bench]``; without it they print a one-line error and exit 2
before anything runs.

``telemetry`` compares the same store with telemetry off and on (see
:mod:`lash_store.bench.telemetry`); it needs ``opentelemetry-api``.

Targets are printed next to the figures as PASS/MISS; ``commit`` exits 0
whatever the figures (it is a measurement); ``resume``, ``queue`` and ``gc``
exit 1 when their verification (what was read, claimed or deleted) fails.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from lash_store.bench import MissingExtra, non_negative, positive
from lash_store.bench import commit as commit_bench
from lash_store.bench import gc as gc_bench
from lash_store.bench import pg_list as list_bench
from lash_store.bench import queue as queue_bench
from lash_store.bench import resume as resume_bench
from lash_store.bench import telemetry as telemetry_bench
from lash_store.options import BlobProfile, StoreOptions

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m lash_store.bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m lash_store.bench",
        description=(
            "lash-store benchmarks, each against plain sqlite3 (or, with --backend postgres, plain psycopg) "
            "doing the same work in the same run."
        ),
    )
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="{commit,resume,queue,gc,list,telemetry,processes,effects,langgraph-growth,openai-session}",
    )

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quick", action="store_true", help="smaller sizes and fewer repetitions")
    common.add_argument("--json", action="store_true", help="print a JSON report instead of tables")
    common.add_argument(
        "--dir", metavar="DIR", default=None, help="run in a new sub-directory of DIR and keep it (default: a temp dir)"
    )

    backend = argparse.ArgumentParser(add_help=False)
    backend.add_argument(
        "--backend",
        choices=("sqlite", "postgres"),
        default=None,  # resolved after parsing: sqlite
        help="sqlite (vs plain sqlite3; the default) or postgres (vs plain psycopg, on a durable server)",
    )
    backend.add_argument(
        "--dsn",
        metavar="DSN",
        default=None,
        help="postgres: run in fresh schemas of this database (dropped afterwards) instead of a throwaway server",
    )

    commit = commands.add_parser(
        "commit", parents=[common, backend], help="per-turn commit latency as a session grows, vs a plain floor"
    )
    commit.add_argument(
        "--turns",
        type=positive,
        nargs="+",
        metavar="N",
        default=None,
        help="checkpoint turns; the run lasts until the largest (default 10 100 1000 10000, --quick: 10 100 1000)",
    )
    commit.add_argument("--repeat", type=positive, default=None, help="runs per measurement (default 3, --quick 1)")
    commit.add_argument(
        "--window", type=positive, default=50, help="turns ending at a checkpoint whose median is reported"
    )
    commit.add_argument("--warmup", type=non_negative, default=30, help="warm-up turns on throw-away files per run")
    commit.add_argument(
        "--profile",
        choices=[profile.value for profile in BlobProfile],
        default=BlobProfile.BALANCED.value,
        help="blob profile of the store (default balanced, the StoreOptions default)",
    )
    commit.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="draw per-turn latency against session length to FILE.png (needs lash-store[bench])",
    )
    commit.add_argument(
        "--peers",
        action="store_true",
        help="add LangGraph SqliteSaver and OpenAI Agents SQLiteSession on the same workload (needs lash-store[bench])",
    )
    commit.add_argument(
        "--encryption",
        action="store_true",
        help="add the same store with a key ring (encryption at rest) to the loop and report its cost",
    )
    commit.add_argument(
        "--peer-sync",
        choices=("match", "default"),
        default="match",
        help="peers' SQLite synchronous level: match lash-store's (default) or keep each library's own (FULL)",
    )
    commit.add_argument(
        "--peer-full-max-turns",
        type=positive,
        default=None,
        metavar="N",
        help="turns after which the full-state LangGraph peer stops; its write grows with the session (default 1000)",
    )

    resume = commands.add_parser(
        "resume", parents=[common], help="load_session latency (full graph, active path) vs a sqlite3 read"
    )
    resume.add_argument(
        "--turns",
        type=positive,
        nargs="+",
        metavar="N",
        default=None,
        help="session sizes in turns (default 10 100 1000 10000, --quick: 10 100 1000)",
    )
    resume.add_argument(
        "--repeat", type=positive, default=None, help="loads per reader and size (default 11, --quick 5)"
    )
    resume.add_argument(
        "--profile",
        choices=[profile.value for profile in BlobProfile],
        default=BlobProfile.BALANCED.value,
        help="blob profile of the store (default balanced)",
    )

    queue = commands.add_parser(
        "queue", parents=[common, backend], help="claim throughput with several worker processes on one session"
    )
    queue.add_argument(
        "--batches",
        type=positive,
        default=None,
        help="batches to enqueue per run (sqlite: default 2000, --quick 400; postgres: 1000, --quick 24)",
    )
    queue.add_argument(
        "--workers",
        type=positive,
        nargs="+",
        default=None,
        help="worker processes (sqlite: one count, default 4; postgres: counts, default 1 4 8, --quick 1 2)",
    )
    queue.add_argument(
        "--mode",
        choices=("own", "shared"),
        nargs="+",
        default=None,
        help="postgres: a queue per worker (own) and/or one queue for all (shared); default both",
    )
    queue.add_argument("--repeat", type=positive, default=None, help="runs per side (default 3, --quick 1)")
    queue.add_argument(
        "--start-method", choices=("spawn", "fork", "forkserver"), default="spawn", help="multiprocessing start method"
    )
    queue.add_argument("--no-floor", action="store_true", help="skip the plain sqlite3 comparison run")

    gc = commands.add_parser("gc", parents=[common], help="gc_unreachable time over unreachable blobs vs a DELETE")
    gc.add_argument(
        "--blobs", type=positive, default=None, help=f"unreachable blobs (default {gc_bench.DEFAULT_BLOBS:,})"
    )
    gc.add_argument("--repeat", type=positive, default=None, help="runs on fresh files (default 3, --quick 1)")

    listing = commands.add_parser(
        "list", parents=[common, backend], help="the session list's first page with many sessions"
    )
    listing.add_argument(
        "--sessions",
        type=positive,
        default=None,
        help=f"sessions in the database (default {list_bench.FULL_SESSIONS:,}, --quick {list_bench.QUICK_SESSIONS})",
    )
    listing.add_argument("--limit", type=positive, default=list_bench.DEFAULT_LIMIT, help="page size (default 50)")
    listing.add_argument("--repeat", type=positive, default=None, help="calls per side (default 30, --quick 5)")

    telemetry = commands.add_parser(
        "telemetry", parents=[common], help="commit latency with OpenTelemetry off, API only, and SDK (no exporter)"
    )
    telemetry.add_argument(
        "--turns",
        type=positive,
        default=None,
        help=f"turns per variant and run (default {telemetry_bench.FULL_TURNS:,}, "
        f"--quick {telemetry_bench.QUICK_TURNS})",
    )
    telemetry.add_argument("--repeat", type=positive, default=None, help="runs (default 3, --quick 1)")
    telemetry.add_argument("--warmup", type=non_negative, default=30, help="warm-up turns on throw-away stores per run")
    telemetry.add_argument(
        "--profile",
        choices=[profile.value for profile in BlobProfile],
        default=BlobProfile.BALANCED.value,
        help="blob profile of the stores (default balanced)",
    )
    telemetry.add_argument(
        "--memory", action="store_true", help="in-memory stores (cheaper commits, so a larger relative cost)"
    )

    processes = commands.add_parser(
        "processes",
        parents=[common, backend],
        help="process registry: appends, lease cycles with 1/4/8 worker processes, cross-process wake latency",
    )
    processes.add_argument(
        "--workers", type=positive, nargs="+", default=None, help="worker counts (default 1 4 8, --quick 1 2)"
    )

    growth = commands.add_parser(
        "langgraph-growth",
        parents=[common, backend],
        help="storage and invoke latency of a long MessagesState thread (SqliteSaver, or PostgresSaver, vs LashSaver)",
    )
    growth.add_argument("--turns", type=positive, default=None, help="turns (default 1,000; --quick 100)")
    growth.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() the heap before each saver's first turn (both savers alike; a diagnostic, off by default)",
    )

    openai = commands.add_parser(
        "openai-session",
        parents=[common],
        help="LashSession.add_items per turn vs the OpenAI Agents SDK's SQLiteSession (matched synchronous level)",
    )
    openai.add_argument(
        "--turns",
        type=positive,
        nargs="+",
        metavar="N",
        default=None,
        help="checkpoint turns; the run lasts until the largest (default 10 100 1000, --quick: 10 100)",
    )
    openai.add_argument(
        "--window", type=positive, default=50, help="turns ending at a checkpoint whose latencies are reported"
    )
    openai.add_argument("--warmup", type=non_negative, default=30, help="warm-up turns on throw-away sessions")
    openai.add_argument(
        "--reads", type=non_negative, default=30, help="get_items(limit) calls per side at each checkpoint"
    )
    openai.add_argument("--limit", type=positive, default=20, help="the limit of those get_items calls (default 20)")

    effects = commands.add_parser(
        "effects",
        parents=[common, backend],
        help="journaled effects/s (first execution, replay; 1 / 4 processes) and occurrences routed/s vs plain SQL",
    )
    effects.add_argument("--effects", type=positive, default=None, help="effects per run (default 2,000, --quick 200)")
    effects.add_argument(
        "--occurrences", type=positive, default=None, help="occurrences routed (default 200, --quick 30)"
    )
    effects.add_argument(
        "--workers", type=positive, action="append", default=None, help="worker processes (repeatable; default 1 and 4)"
    )
    return parser


def _effects(args: argparse.Namespace, verbose: bool) -> tuple[dict[str, Any], str, int]:
    from lash_store.bench import effects as effects_bench

    report = effects_bench.run(
        backend=args.backend,
        effects=args.effects or (200 if args.quick else 2_000),
        workers=tuple(args.workers or (1, 4)),
        occurrences=args.occurrences or (30 if args.quick else 200),
        dsn=args.dsn,
        base_dir=args.dir,
        verbose=verbose,
    )
    return report, effects_bench.format_report(report), 0


def _openai_session(args: argparse.Namespace, verbose: bool) -> tuple[dict[str, Any], str, int]:
    from lash_store.bench import openai_session

    default = openai_session.QUICK_CHECKPOINTS if args.quick else openai_session.FULL_CHECKPOINTS
    report = openai_session.run(
        checkpoints=args.turns or list(default),
        window=args.window,
        warmup_turns=args.warmup,
        reads=args.reads,
        limit=args.limit,
        base_dir=args.dir,
        verbose=verbose,
    )
    return report, openai_session.format_report(report), _verified(report)


def _json_safe(value: Any) -> Any:
    """NaN and infinities become ``null`` so the report is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _verified(report: dict[str, Any]) -> int:
    """The exit code of a benchmark whose report carries a verification."""
    return 0 if report["verification"]["ok"] else 1


def _commit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``run()`` arguments the SQLite and the PostgreSQL commit benchmarks take alike."""
    default_checkpoints = commit_bench.QUICK_CHECKPOINTS if args.quick else commit_bench.FULL_CHECKPOINTS
    return {
        "checkpoints": args.turns or list(default_checkpoints),
        "repeat": args.repeat or (1 if args.quick else 3),
        "window": args.window,
        "warmup_turns": args.warmup,
        "blob_profile": BlobProfile(args.profile),
    }


def _langgraph_full_max_turns(args: argparse.Namespace) -> int:
    from lash_store.bench import peers as peer_bench

    return int(args.peer_full_max_turns or peer_bench.LANGGRAPH_FULL_MAX_TURNS)


def _commit(args: argparse.Namespace, verbose: bool) -> tuple[dict[str, Any], str, int]:
    peers: list[commit_bench.PeerSpec] = []
    if args.plot:
        from lash_store.bench import plot

        plot.check_available()
    if args.peers:
        from lash_store.bench import peers as peer_bench

        options = StoreOptions()
        peers = peer_bench.default_peers(
            synchronous=options.durability.value if args.peer_sync == "match" else None,
            langgraph_full_max_turns=_langgraph_full_max_turns(args),
        )
    series: dict[str, list[float]] | None = {} if args.plot else None
    report = commit_bench.run(
        **_commit_settings(args),
        base_dir=args.dir,
        verbose=verbose,
        peers=peers,
        series=series,
        encryption=args.encryption,
    )
    text = commit_bench.format_report(report)
    if series is not None:
        from lash_store.bench import plot

        config = report["config"]
        path = plot.plot_commit_latency(
            series,
            args.plot,
            window=min(args.window, config["turns"]),
            checkpoints=config["checkpoints"],
            subtitle=(
                f"per turn: user ~500 B + assistant ~1,500 B + tool state ~8 KB; "
                f"median of {config['repeat']} run(s) per turn; synchronous={config['durability']}"
            ),
        )
        report["plot"] = str(path)
        text += f"\nplot: {path}"
    return report, text, 0


def _check_backend(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Resolve the default backend; options that only make sense for the other one are refused before anything runs."""
    if getattr(args, "backend", None) is None:
        args.backend = "postgres" if args.command == "list" and args.dsn is not None else "sqlite"
    backend = args.backend
    if backend == "postgres":
        if args.dir is not None:
            parser.error("--dir applies to --backend sqlite (postgres runs in schemas it creates and drops)")
        if getattr(args, "plot", None):
            parser.error("--plot applies to --backend sqlite")
        if getattr(args, "encryption", False):
            parser.error("--encryption applies to --backend sqlite (the sealing layer is the same on postgres)")
        if args.command == "commit" and args.peer_sync != "match":
            parser.error("--peer-sync applies to --backend sqlite (the postgres peers use the server's setting)")
    else:
        if getattr(args, "dsn", None) is not None:
            parser.error("--dsn applies to --backend postgres")
        if args.command == "queue" and args.workers is not None and len(args.workers) > 1:
            parser.error("--backend sqlite takes one --workers count")
        if args.command == "queue" and args.mode is not None:
            parser.error("--mode applies to --backend postgres")


def _commit_postgres(args: argparse.Namespace, verbose: bool) -> tuple[dict[str, Any], str, int]:
    from lash_store.bench import pg_commit

    peers: list[Any] = []
    if args.peers:
        from lash_store.bench import pg_peers

        peers = list(pg_peers.default_peers(langgraph_full_max_turns=_langgraph_full_max_turns(args)))
    report = pg_commit.run(**_commit_settings(args), dsn=args.dsn, verbose=verbose, peers=peers)
    return report, pg_commit.format_report(report), _verified(report)


def _queue_postgres(args: argparse.Namespace, verbose: bool) -> tuple[dict[str, Any], str, int]:
    from lash_store.bench import pg_queue

    report = pg_queue.run(
        batches=args.batches or (24 if args.quick else 1_000),
        workers=args.workers or (pg_queue.QUICK_WORKERS if args.quick else pg_queue.FULL_WORKERS),
        modes=args.mode or pg_queue.MODES,
        repeat=args.repeat or (1 if args.quick else 3),
        start_method=args.start_method,
        dsn=args.dsn,
        verbose=verbose,
    )
    return report, pg_queue.format_report(report), _verified(report)


def _list(args: argparse.Namespace, verbose: bool) -> tuple[dict[str, Any], str, int]:
    from lash_store.bench import sqlite_list

    report = sqlite_list.run(
        sessions=args.sessions or (sqlite_list.QUICK_SESSIONS if args.quick else sqlite_list.FULL_SESSIONS),
        repeat=args.repeat or (5 if args.quick else 30),
        limit=args.limit,
        base=args.dir,
        verbose=verbose,
    )
    return report, sqlite_list.format_report(report), _verified(report)


def _list_postgres(args: argparse.Namespace, verbose: bool) -> tuple[dict[str, Any], str, int]:
    report = list_bench.run(
        sessions=args.sessions or (list_bench.QUICK_SESSIONS if args.quick else list_bench.FULL_SESSIONS),
        repeat=args.repeat or (5 if args.quick else 30),
        limit=args.limit,
        dsn=args.dsn,
        verbose=verbose,
    )
    return report, list_bench.format_report(report), _verified(report)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one benchmark; returns the process exit code."""
    from lash_store.testing.pgserver import PostgresUnavailable

    parser = build_parser()
    args = parser.parse_args(argv)
    _check_backend(parser, args)
    verbose = not args.json
    postgres = args.backend == "postgres"
    try:
        if args.command == "effects":
            report, text, exit_code = _effects(args, verbose)
        elif args.command == "openai-session":
            report, text, exit_code = _openai_session(args, verbose)
        elif postgres and args.command == "commit":
            report, text, exit_code = _commit_postgres(args, verbose)
        elif postgres and args.command == "queue":
            report, text, exit_code = _queue_postgres(args, verbose)
        elif postgres and args.command == "list":
            report, text, exit_code = _list_postgres(args, verbose)
        elif args.command == "list":
            report, text, exit_code = _list(args, verbose)
        elif args.command == "commit":
            report, text, exit_code = _commit(args, verbose)
        elif args.command == "processes":
            from lash_store.bench import processes as processes_bench

            report = processes_bench.run(
                backend=args.backend,
                quick=args.quick,
                dsn=args.dsn,
                base_dir=args.dir,
                workers=args.workers,
                verbose=verbose,
            )
            text = processes_bench.format_report(report)
            exit_code = _verified(report)
        elif args.command == "langgraph-growth":
            from lash_store.bench import langgraph_growth

            growth_turns = args.turns or (100 if args.quick else 1000)
            if postgres:
                report = langgraph_growth.run_postgres(
                    dsn=args.dsn, turns=growth_turns, verbose=verbose, gc_freeze=args.gc_freeze
                )
            else:
                report = langgraph_growth.run(turns=growth_turns, base_dir=args.dir, gc_freeze=args.gc_freeze)
            text = langgraph_growth.format_report(report)
            exit_code = 0 if report["verification"]["ok"] else 1
        elif args.command == "resume":
            sizes = args.turns or list(resume_bench.QUICK_SIZES if args.quick else resume_bench.FULL_SIZES)
            report = resume_bench.run(
                sizes=sizes,
                repeat=args.repeat or (5 if args.quick else 11),
                base_dir=args.dir,
                verbose=verbose,
                blob_profile=BlobProfile(args.profile),
            )
            text = resume_bench.format_report(report)
            exit_code = _verified(report)
        elif args.command == "telemetry":
            report = telemetry_bench.run(
                turns=args.turns or (telemetry_bench.QUICK_TURNS if args.quick else telemetry_bench.FULL_TURNS),
                repeat=args.repeat or (1 if args.quick else 3),
                warmup_turns=args.warmup,
                base_dir=args.dir,
                verbose=verbose,
                blob_profile=BlobProfile(args.profile),
                memory=args.memory,
            )
            text = telemetry_bench.format_report(report)
            exit_code = _verified(report)
        elif args.command == "gc":
            report = gc_bench.run(
                blobs=args.blobs or gc_bench.DEFAULT_BLOBS,
                repeat=args.repeat or (1 if args.quick else 3),
                base_dir=args.dir,
                verbose=verbose,
            )
            text = gc_bench.format_report(report)
            exit_code = _verified(report)
        else:
            batches = args.batches or (400 if args.quick else 2_000)
            report = queue_bench.run(
                batches=batches,
                workers=args.workers[0] if args.workers else 4,
                repeat=args.repeat or (1 if args.quick else 3),
                start_method=args.start_method,
                floor=not args.no_floor,
                base_dir=args.dir,
                verbose=verbose,
            )
            text = queue_bench.format_report(report)
            exit_code = _verified(report)
    except (MissingExtra, PostgresUnavailable) as exc:
        print(f"python -m lash_store.bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(_json_safe(report), indent=2, allow_nan=False))
    else:
        print(text)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
