"""Session listing on PostgreSQL: the picker's first page with many sessions in the database (``bench list``).

Set-up (timed and reported, not part of the figure): ``sessions`` sessions
(10,000 by default) are created through the public API --
``PostgresSessionStoreFactory.create_store`` and one committed turn each (a
user and an assistant message and the turn's tool state, from the commit
workload) -- from a few threads, so that their durable commits share WAL
flushes.  The floor's table gets the same picker rows with one ``COPY``.

Measured, interleaved and repeated on warm connections:

- ``list_sessions(limit=50)``: the first page (picker info: id, cwd,
  relation, first user message, user message count);
- ``list_sessions(limit=50, after=<the middle session id>)``: a page in the
  middle, which keyset paging should serve as fast as the first;
- ``recent_sessions(limit=50)``: the first page by last commit (no index on the
  update time: a top-N over the sessions table, kept off the commit path);
- the floor: plain psycopg selecting the same 50 rows of a denormalised
  table that holds exactly the picker's columns (the least a program listing
  sessions could read).

Verification: the first page holds the first 50 session ids in order with
their first user message and count, the middle page the 50 after the middle,
and a full listing (``limit=None``, timed once) returns every session.
Target: the first page in at most 50 ms.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from lash_store.bench import format_us, latency_row, ms_figures, progress, render_table, timed, verdict
from lash_store.bench.commit import Workload
from lash_store.bench.pg import PgTarget, pg_target, server_line
from lash_store.model import SessionPickerInfo

__all__ = ["DEFAULT_LIMIT", "FULL_SESSIONS", "QUICK_SESSIONS", "TARGET_MS", "format_report", "run"]

FULL_SESSIONS = 10_000
QUICK_SESSIONS = 200
DEFAULT_LIMIT = 50
TARGET_MS = 50.0
SETUP_THREADS = 8


def _session_id(number: int) -> str:
    return f"bench-list-{number:06d}"


def _setup_store(target: PgTarget, schema: str, sessions: int, verbose: bool) -> float:
    """Create the sessions through the public API; returns the seconds it took."""
    from lash_store.postgres import PostgresSessionStoreFactory

    factory = PostgresSessionStoreFactory(target.dsn, schema=schema)
    workload = Workload(7)
    content = workload.turn(1)

    def create(number: int) -> None:
        session_id = _session_id(number)
        with factory.create_store(session_id, model="bench-model") as store:
            store.commit_runtime_state(Workload(7, session_id=session_id).commit(content, 0))

    started = time.perf_counter()
    step = max(1, sessions // 10)
    with ThreadPoolExecutor(SETUP_THREADS) as pool:
        for done, _ in enumerate(pool.map(create, range(sessions)), start=1):
            if done % step == 0:
                progress(verbose, f"list (postgres): set-up {done:,}/{sessions:,} sessions")
    return time.perf_counter() - started


def _setup_floor(target: PgTarget, schema: str, rows: list[SessionPickerInfo]) -> None:
    import psycopg

    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {schema}.sessions (session_id text PRIMARY KEY, cwd text, relation bytea NOT NULL, "
            "first_user_message text NOT NULL, user_message_count bigint NOT NULL)"
        )
        with (
            conn.transaction(),
            conn.cursor().copy(f"COPY {schema}.sessions FROM STDIN") as copy,
        ):
            for info in rows:
                copy.write_row(
                    (
                        info.session_id,
                        info.cwd,
                        msgspec.msgpack.encode(info.relation),
                        info.first_user_message,
                        info.user_message_count,
                    )
                )
        conn.execute(f"ANALYZE {schema}.sessions")


def run(
    *,
    sessions: int,
    repeat: int,
    limit: int = DEFAULT_LIMIT,
    dsn: str | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run the listing benchmark and return its JSON-ready report."""
    import psycopg

    from lash_store.postgres import PostgresSessionStoreFactory

    if sessions < 1 or repeat < 1 or limit < 1:
        raise ValueError("sessions, repeat and limit must be at least 1")
    started = time.perf_counter()
    problems: list[str] = []
    with pg_target(dsn, verbose=verbose) as target:
        server = target.describe()
        store_schema, floor_schema = target.new_schema("list_store"), target.new_schema("list_floor")
        progress(verbose, f"list (postgres): creating {sessions:,} sessions ({SETUP_THREADS} threads)")
        setup_s = _setup_store(target, store_schema, sessions, verbose)
        factory = PostgresSessionStoreFactory(target.dsn, schema=store_schema)
        analyze_started = time.perf_counter()
        with psycopg.connect(target.dsn, autocommit=True) as conn:
            conn.execute(f"ANALYZE {store_schema}.session_meta, {store_schema}.sessions")
        analyze_s = time.perf_counter() - analyze_started
        full_ns, everything = timed(lambda: factory.list_sessions())
        expected_ids = [_session_id(n) for n in range(sessions)]
        if [info.session_id for info in everything] != expected_ids:
            problems.append(f"full listing returned {len(everything):,} sessions, expected {sessions:,} in order")
        _setup_floor(target, floor_schema, everything)
        middle = _session_id(sessions // 2 - 1) if sessions >= 2 else None

        floor_conn = psycopg.connect(target.dsn, autocommit=True)
        floor_sql = (
            "SELECT session_id, cwd, relation, first_user_message, user_message_count "
            f"FROM {floor_schema}.sessions WHERE session_id > %s ORDER BY session_id LIMIT %s"
        )

        def floor_page(after: str) -> list[tuple[Any, ...]]:
            return floor_conn.execute(floor_sql, (after, limit)).fetchall()

        first_ns: list[int] = []
        middle_ns: list[int] = []
        recent_ns: list[int] = []
        floor_ns: list[int] = []
        try:
            for _ in range(2):  # warm the pool, the statement cache and the buffers for every side
                factory.list_sessions(limit=limit)
                floor_page("")
            for round_number in range(repeat):
                calls: list[tuple[list[int], Callable[[], Any], str]] = [
                    (first_ns, lambda: factory.list_sessions(limit=limit), "first"),
                    (middle_ns, lambda: factory.list_sessions(limit=limit, after=middle), "middle"),
                    (recent_ns, lambda: factory.recent_sessions(limit=limit), "recent"),
                    (floor_ns, lambda: floor_page(""), "floor"),
                ]
                shift = round_number % len(calls)
                for samples, call, kind in calls[shift:] + calls[:shift]:
                    elapsed, value = timed(call)
                    samples.append(elapsed)
                    problems.extend(_check_page(kind, value, expected_ids, middle, limit))
        finally:
            floor_conn.close()
        target.drop_schema(floor_schema)
    problems = sorted(set(problems))
    first_ms = statistics.median(first_ns) / 1e6
    return {
        "benchmark": "list",
        "backend": "postgres",
        "config": {"sessions": sessions, "limit": limit, "repeat": repeat, "setup_threads": SETUP_THREADS},
        "server": server,
        "setup": {
            "seconds": setup_s,
            "sessions_per_s": sessions / setup_s if setup_s > 0 else None,
            "per_session": "create_store (session row + metadata) and one committed turn",
            "analyze_s": analyze_s,
        },
        "first_page": ms_figures(first_ns),
        "middle_page": ms_figures(middle_ns),
        "recent_page": ms_figures(recent_ns),
        "floor": ms_figures(floor_ns),
        "ratio": statistics.median(first_ns) / statistics.median(floor_ns),
        "full_listing_ms": full_ns / 1e6,
        "target_ms": TARGET_MS,
        "pass": first_ms <= TARGET_MS,
        "targets_met": first_ms <= TARGET_MS,
        "verification": {"ok": not problems, "problems": problems[:20], "listed": len(everything)},
        "elapsed_s": time.perf_counter() - started,
    }


def _check_page(kind: str, value: Any, expected_ids: list[str], middle: str | None, limit: int) -> list[str]:
    """What is wrong with one page (empty when it is right)."""
    if kind == "floor":
        ids = [row[0] for row in value]
        wanted = expected_ids[:limit]
    elif kind == "recent":  # the set-up's threads finish in any order: check the page's shape, not its members
        stamps = [item.updated_at_epoch_ms for item in value.sessions]
        ok = len(stamps) == min(limit, len(expected_ids)) and stamps == sorted(stamps, reverse=True)
        return [] if ok else ["recent page: not a full page newest first"]
    else:
        ids = [info.session_id for info in value]
        start = 0 if kind == "first" or middle is None else expected_ids.index(middle) + 1
        wanted = expected_ids[start : start + limit]
        for info in value:
            if info.user_message_count != 1 or not info.first_user_message:
                return [f"{kind} page: {info.session_id} lacks its picker info"]
    return [] if ids == wanted else [f"{kind} page: got {len(ids)} ids, not the {len(wanted)} expected in order"]


def format_report(report: dict[str, Any]) -> str:
    """The plain-text rendering of :func:`run`'s report."""
    config, server, setup = report["config"], report["server"], report["setup"]
    lines = [
        f"lash-store list benchmark on PostgreSQL {server['server_version']}: list_sessions(limit={config['limit']}) "
        f"with {config['sessions']:,} sessions in the database, {config['repeat']} calls per side",
        server_line(server),
        f"set-up: {config['sessions']:,} sessions ({setup['per_session']}) in {setup['seconds']:.1f} s "
        f"({setup['sessions_per_s']:,.0f}/s, {config['setup_threads']} threads); ANALYZE {setup['analyze_s']:.2f} s",
        "",
    ]
    rows = [
        latency_row(label, fig)
        for label, fig in (
            ("lash-store first page", report["first_page"]),
            ("lash-store middle page", report["middle_page"]),
            ("lash-store recent_sessions first page", report["recent_page"]),
            ("psycopg floor (same rows)", report["floor"]),
        )
    ]
    lines.append(render_table(["", "p50", "p90", "p99", "max"], rows))
    check = report["verification"]
    lines += [
        "",
        f"first page / floor: {report['ratio']:.1f}x (informational); "
        f"target first page <= {report['target_ms']:.0f} ms: {verdict(report['pass'])}",
        f"full listing (limit=None, {check['listed']:,} sessions): {format_us(1000 * report['full_listing_ms'])}",
        f"verification: {'ok' if check['ok'] else 'FAILED'}" + "".join(f"\n  {p}" for p in check["problems"]),
        f"elapsed {report['elapsed_s']:.1f} s",
    ]
    return "\n".join(lines)
