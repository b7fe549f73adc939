"""The ``lash-store`` command line: the chaos demo, inspection and maintenance of session files and of the
process registry (``processes list|show|prune``).

Every command prints human output or, with ``--json``, one JSON document on
stdout.  Human output uses ``rich`` (the ``cli`` extra) when it is installed
and plain aligned text otherwise, so a bare ``pip install lash-store`` gives a
working command (:mod:`lash_store._output`).  Exit codes: 0 success; 1 a check failed
(``verify`` found problems, ``migrate`` could not migrate a file or, with
``--check``, found one that needs it, the demo's verification failed); 2 bad usage;
3 the command could not run (missing or foreign path, refused import, ...),
reported as one line on stderr (and as ``{"error": ...}`` on stdout with
``--json``); 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from lash_store import __version__, tools
from lash_store._output import Output, Table
from lash_store.bench import non_negative, positive
from lash_store.demo import DemoConfig, DemoProgress, DemoResult, DemoSetupError, run_demo
from lash_store.deployment_cli import add_deployment_commands
from lash_store.errors import StoreError
from lash_store.targets import is_dsn

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["EXIT_ERROR", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ERROR = 3
EXIT_INTERRUPTED = 130


_POLICY = {"earliest_safe_boundary": "safe-boundary", "after_current_turn_commit": "after-turn"}


class CommandError(Exception):
    """A one-line failure of a command (exit code 3)."""


# ---------------------------------------------------------------------------
# Output helpers


def _output() -> Output:
    return Output()


def _print_json(data: Any) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(data), indent=2).decode() + "\n")


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{int(amount)} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} B"


def _short(ref: str | None, width: int = 12) -> str:
    return "-" if not ref else (ref if len(ref) <= width else ref[:width] + "…")


def _clip(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    try:
        stamp = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return str(ms)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")


def _relative(ms: object, now_ms: int) -> str:
    if not isinstance(ms, int):
        return f"damaged ({ms!r})"
    delta = (ms - now_ms) / 1000
    return f"in {delta:.1f} s" if delta >= 0 else f"expired {-delta:.1f} s ago"


def _attempts(count: object) -> str:
    return f"{count} attempt{'s' * (count != 1)}"


def _json_value(value: Any, width: int = 100) -> str:
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, ValueError):
        text = repr(value)
    return _clip(text, width)


def _kv_table(out: Output, title: str, rows: Sequence[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("key", style="cyan", no_wrap=True)
    table.add_column("value", fold=True)
    for key, value in rows:
        table.add_row(key, out.text(value))
    return table


# ---------------------------------------------------------------------------
# Commands


def _backend_rows(data: dict[str, Any]) -> list[tuple[str, Any]]:
    """Where the store lives: the file (SQLite) or the database and partition (PostgreSQL)."""
    schema = data["schema"]
    if data["backend"] == "sqlite":
        return [
            ("path", data["path"]),
            (
                "schema",
                f"version {schema['user_version']}, layout revision {schema['layout_revision']} "
                f"(application id {schema['application_id']:#x})",
            ),
            ("file", f"{_size(data['file']['size_bytes'])} ({data['file']['page_count']} pages)"),
        ]
    return [
        ("database", data["target"]),
        ("schema", f"{schema['name']} version {schema['version']} (PostgreSQL {data['server_version']})"),
        ("partition", data["session_partition"]),
    ]


def _cmd_inspect(args: argparse.Namespace) -> int:
    data = tools.inspect_store(args.path, args.session)
    if args.json:
        _print_json(data)
        return EXIT_OK
    out = _output()
    meta = data["session"] or {}
    head = data["head"] or {}
    graph = data["graph"]
    relation = meta.get("relation") or {}
    rows: list[tuple[str, Any]] = [
        *_backend_rows(data),
        ("session", meta.get("session_id") or head.get("session_id") or "-"),
        ("name", meta.get("session_name", "-")),
        ("model", meta.get("model") or "-"),
        ("created", meta.get("created_at", "-")),
        ("cwd", meta.get("cwd") or "-"),
        (
            "relation",
            relation.get("kind", "-")
            + (f" of {relation['parent_session_id']}" if relation.get("parent_session_id") else ""),
        ),
        ("head revision", head.get("head_revision", 0)),
        ("leaf", head.get("leaf_node_id") or "-"),
        ("agent frames", f"{head.get('agent_frame_count', 0)} (current {head.get('current_agent_frame_id') or '-'})"),
        ("nodes", f"{graph['node_count']} live, {graph['tombstoned_rows']} tombstoned"),
        ("user messages", graph["user_message_count"]),
        ("turn commits", data["turn_commits"]),
    ]
    if head.get("error"):
        rows.append(("head error", head["error"]))
    out.print(_kv_table(out, "Session", rows))

    checkpoint = data["checkpoint"]
    if checkpoint is not None:
        table = Table(title="Checkpoint")
        for column in ("blob", "ref", "kind", "encoding", "raw", "stored"):
            table.add_column(column, justify="right" if column in ("raw", "stored") else "left")
        for role, info in [("manifest", checkpoint["manifest"]), *[(c["role"], c) for c in checkpoint["children"]]]:
            missing = "" if info.get("present") else " " + out.styled("(missing)", "red")
            table.add_row(
                out.text(role) + missing,
                _short(info.get("ref")),
                out.text(info.get("kind") or "-"),
                out.text(info.get("encoding") or "-"),
                _size(info.get("raw_bytes")),
                _size(info.get("stored_bytes")),
            )
        out.print(table)
        out.print(f"  turn state: {out.text(_json_value(checkpoint.get('turn_state')))}")
        if checkpoint.get("error"):
            out.print("  " + out.styled(checkpoint["error"], "red"))

    table = Table(title="Usage")
    for column in ("source", "model", "input", "output", "cached input", "reasoning"):
        table.add_column(column, justify="left" if column in ("source", "model") else "right")
    fields = ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens")
    for entry in data["usage"]:
        table.add_row(out.text(entry["source"]), out.text(entry["model"]), *(f"{entry[f]:,}" for f in fields))
    if len(data["usage"]) != 1:
        table.add_row(out.styled("total", "bold"), "", *(f"{data['usage_total'][f]:,}" for f in fields))
    out.print(table)

    queue = data["queue"]
    table = Table(title=f"Queue ({len(queue['batches'])} batches)")
    for column in ("seq", "batch", "source key", "policy", "items", "claim owner", "fence", "lease"):
        table.add_column(column)
    for batch in queue["batches"]:
        claim = batch["claim"]
        policy = f"{_POLICY.get(batch['delivery_policy'], batch['delivery_policy'])}/{batch['slot_policy']}"
        items = "corrupt" if batch["items"] is None else str(batch["items"])
        retry_at = batch.get("retry_at_ms")
        if claim:
            lease = _relative(claim["expires_at_ms"], queue["now_ms"])
        elif batch.get("dead_lettered_at_ms") is not None:
            lease = f"dead letter ({_attempts(batch['attempts'])})"
        elif isinstance(retry_at, int) and retry_at > queue["now_ms"]:
            lease = f"backing off ({_attempts(batch['attempts'])})"
        else:
            lease = "ready" if batch["ready"] else "delayed"
        table.add_row(
            str(batch["enqueue_seq"]),
            out.text(_short(batch["batch_id"], 16)),
            out.text(batch["source_key"] or "-"),
            out.text(policy),
            items,
            out.text(claim["owner_id"]) if claim else "-",
            str(claim["fencing_token"]) if claim else "-",
            lease,
        )
    out.print(table)

    if data["attachments"]:
        table = Table(title="Attachment manifest")
        for column in ("attachment", "uri", "intent", "committed"):
            table.add_column(column)
        for entry in data["attachments"]:
            committed = entry["committed_at_ms"]
            table.add_row(
                out.text(entry["attachment_id"]),
                out.text(entry["canonical_uri"]),
                _when(entry["intent_at_ms"]),
                _when(committed) if committed is not None else out.styled("uncommitted", "yellow"),
            )
        out.print(table)
    if data["module_artifacts"]:
        table = Table(title="Module artifacts")
        for column in ("module", "blob", "size"):
            table.add_column(column)
        for entry in data["module_artifacts"]:
            size = _size(entry["raw_bytes"]) if entry["present"] else out.styled("missing", "red")
            table.add_row(out.text(entry["module_ref"]), _short(entry["blob_ref"]), size)
        out.print(table)

    out.print(_blob_table(out, data["blobs"]))
    return EXIT_OK


def _blob_table(out: Output, blobs: dict[str, Any]) -> Table:
    table = Table(title=f"Blobs ({blobs['count']})")
    for column in ("kind", "count", "raw", "stored", "zstd"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for kind, entry in blobs["by_kind"].items():
        table.add_row(
            out.text(kind),
            str(entry["count"]),
            _size(entry["raw_bytes"]),
            _size(entry["stored_bytes"]),
            str(entry["zstd"]),
        )
    table.add_row(
        out.styled("total", "bold"), str(blobs["count"]), _size(blobs["raw_bytes"]), _size(blobs["stored_bytes"]), ""
    )
    return table


def _cmd_history(args: argparse.Namespace) -> int:
    data = tools.history(args.path, args.session, active_path=args.active_path, limit=args.limit)
    if args.json:
        _print_json(data)
        return EXIT_OK
    out = _output()
    scope = "active path" if args.active_path else "full graph"
    out.print(
        f"{out.styled(data['session_id'] or '-', 'bold')}  revision {data['head_revision']}  "
        f"{scope}: showing {data['shown']} of {data['total']} nodes"
    )
    table = Table()
    table.add_column("#", justify="right", style="dim")
    table.add_column("role", no_wrap=True)
    table.add_column("text", fold=True)
    table.add_column("node", style="dim", fold=True)
    styles = {"user": "bold cyan", "assistant": "green", "system": "magenta", "tool": "yellow"}
    for node in data["nodes"]:
        role = node["role"]
        table.add_row(
            str(node["index"]),
            out.styled(role, styles.get(role, "white")),
            out.text(node["text"]),
            out.text(node["node_id"]),
        )
    out.print(table)
    return EXIT_OK


def _cmd_sessions(args: argparse.Namespace) -> int:
    data = tools.list_sessions(args.dir, limit=args.limit, after=args.after, recent=args.recent, cursor=args.cursor)
    if args.json:
        _print_json(data)
        return EXIT_FAILED if data["errors"] else EXIT_OK
    out = _output()
    table = Table(title=f"{len(data['sessions'])} sessions in {out.text(data['root'])}")
    for column in ("session", "model", "created", "rev", "nodes/user", "first user message", "size"):
        table.add_column(
            column,
            justify="right" if column in ("rev", "nodes/user", "size") else "left",
            no_wrap=column in ("created", "size"),
        )
    for row in data["sessions"]:
        name = row["session_id"] or "-"
        if row.get("session_name") and row["session_name"] != row["session_id"]:
            name = f"{name} ({row['session_name']})"
        created = str(row.get("created_at") or "-").replace("T", " ")[:16]
        table.add_row(
            out.text(name),
            out.text(row.get("model") or "-"),
            out.text(created),
            str(row.get("head_revision", "-")),
            f"{row.get('messages', '-')}/{row['user_messages']}",
            out.text(_clip(row["first_user_message"], 48)),
            _size(row.get("size_bytes")),
        )
    out.print(table)
    if data.get("next_cursor"):
        print(f"more: --recent --cursor {data['next_cursor']}")
    for error in data["errors"]:
        print(f"lash-store: error: cannot read {error['path']}: {error['error']}", file=sys.stderr)
    return EXIT_FAILED if data["errors"] else EXIT_OK


def _cmd_stats(args: argparse.Namespace) -> int:
    data = tools.stats(args.path, args.session, top=args.top)
    failed = bool(data.get("errors"))
    if args.json:
        _print_json(data)
        return EXIT_FAILED if failed else EXIT_OK
    out = _output()
    if data["kind"] == "store":
        _render_store_stats(out, data)
        return EXIT_OK
    out.print(
        f"{out.styled(str(data['sessions']), 'bold')} sessions in {out.text(data['root'])}: "
        f"{_size(data['stored_bytes'])} stored"
    )
    if data["largest"]:
        table = Table(title=f"Largest sessions (top {len(data['largest'])})")
        for column in ("session", "rev", "nodes", "blobs", "content", "stored"):
            table.add_column(column, justify="left" if column == "session" else "right")
        for entry in data["largest"]:
            table.add_row(
                out.text(entry["session_id"] or entry["path"] or "-"),
                str(entry["head_revision"] if entry["head_revision"] is not None else "-"),
                str(entry["nodes"]),
                str(entry["blobs"]),
                _size(entry["content_bytes"]),
                _size(entry["stored_bytes"]),
            )
        out.print(table)
    counts = data["counts"]
    per_commit = data["content_bytes_per_commit"]
    rows = [
        ("sessions", data["sessions"]),
        ("stored", _size(data["stored_bytes"])),
        ("content", _content_line(data["content_bytes"])),
        ("commits", data["commits"]),
        ("content per commit", "-" if per_commit is None else _size(round(per_commit))),
        *_count_rows(counts),
    ]
    out.print(_kv_table(out, "Totals", rows))
    for error in data["errors"]:
        print(f"lash-store: error: cannot read {error['path']}: {error['error']}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _render_store_stats(out: Output, data: dict[str, Any]) -> None:
    files = data["files"]
    if data["backend"] == "sqlite":
        where: list[tuple[str, Any]] = [("path", data["path"] or "(in memory)")]
        if files is not None:
            where += [
                (
                    "database file",
                    f"{_size(files['database_bytes'])} ({data['file']['page_count']} pages of "
                    f"{data['file']['page_size']} B, {data['file']['freelist_pages']} free)",
                ),
                ("WAL", _size(files["wal_bytes"])),
            ]
    else:
        where = [("database", data["target"]), ("partition", data["session_partition"])]
    growth = data["growth"]

    def per(value: float | None) -> str:
        return "-" if value is None else _size(round(value))

    rows = [
        *where,
        ("session", data["session_id"] or "-"),
        ("head revision", data["head_revision"] if data["head_revision"] is not None else "-"),
        ("stored", f"{_size(data['stored_bytes'])} ({'file + WAL' if files is not None else 'content'})"),
        ("content", _content_line(data["content_bytes"])),
        *_count_rows(data["counts"]),
        (
            "per commit",
            f"{per(growth['stored_bytes_per_commit'])} stored, {per(growth['content_bytes_per_commit'])} content",
        ),
        ("per turn stamp", "-" if growth["turns"] == 0 else f"{per(growth['content_bytes_per_turn'])} content"),
    ]
    if data.get("head_error"):
        rows.append(("head error", data["head_error"]))
    out.print(_kv_table(out, "Stats", rows))
    out.print(_blob_table(out, data["blobs"]))


def _content_line(content: dict[str, int]) -> str:
    return (
        f"{_size(content['total'])}: nodes {_size(content['nodes'])}, blobs {_size(content['blobs'])}, "
        f"turn stamps {_size(content['turn_commits'])}, queue {_size(content['queue'])}"
    )


def _count_rows(counts: dict[str, int]) -> list[tuple[str, Any]]:
    return [
        ("nodes", f"{counts['nodes']:,} live, {counts['tombstoned_nodes']:,} tombstoned"),
        ("blobs", f"{counts['blobs']:,}"),
        ("turn stamps", f"{counts['turn_commits']:,}"),
        ("queue", f"{counts['queue_batches']:,} batches ({counts['claimed_batches']:,} claimed)"),
        ("attachments", f"{counts['attachments']:,} ({counts['uncommitted_attachments']:,} uncommitted)"),
        ("module artifacts", f"{counts['module_artifacts']:,}"),
    ]


def _cmd_gc(args: argparse.Namespace) -> int:
    data = tools.gc(args.path, args.session, grace_ms=args.grace_ms, dry_run=args.dry_run)
    if args.json:
        _print_json(data)
        return EXIT_OK
    out = _output()
    verb = "would delete" if args.dry_run else "deleted"
    out.print(
        f"GC{' (dry run)' if args.dry_run else ''}: {verb} {data['deleted_blob_count']} blobs "
        f"({_size(data['deleted_bytes'])}); {data['retained_blob_count']} retained; "
        f"{data['root_count']} roots; grace {data['grace_ms']:,} ms"
    )
    if data["skipped_reason"]:
        out.print(out.styled(f"skipped: {data['skipped_reason']}", "yellow"))
    return EXIT_OK


def _cmd_vacuum(args: argparse.Namespace) -> int:
    data = tools.vacuum(args.path, args.session, compact=not args.no_compact)
    if args.json:
        _print_json(data)
        return EXIT_OK
    if data["compacted"]:
        space = f"; {_size(data['size_before_bytes'])} -> {_size(data['size_after_bytes'])} (file compacted)"
    else:
        space = f"; {data['reason']}" if data.get("reason") else ""
    _output().print(f"vacuum: removed {data['removed_node_count']} tombstoned nodes{space}")
    return EXIT_OK


def _cmd_backup(args: argparse.Namespace) -> int:
    data = tools.backup(args.source, args.dest)
    if args.json:
        _print_json(data)
        return EXIT_OK if data["ok"] else EXIT_FAILED
    out = _output()
    out.print(
        f"backup: {out.text(data['destination'])} ({_size(data['size_bytes'])}, head revision "
        f"{data['head_revision'] if data['head_revision'] is not None else '-'}, {data['elapsed_ms']:,.0f} ms)"
    )
    for problem in data["problems"]:
        out.print(f"{out.styled('problem:', 'red')} {out.text(problem)}")
    out.print(out.styled("verified: OK", "green") if data["ok"] else out.styled("verify FAILED", "red"))
    return EXIT_OK if data["ok"] else EXIT_FAILED


def _cmd_rekey(args: argparse.Namespace) -> int:
    if not args.keys:
        raise tools.ToolError("rekey needs the key ring: --keys FILE (or $LASH_STORE_KEYS)")
    ring = tools.load_key_ring(args.keys)
    data = tools.rekey(args.path, args.session, ring=ring, batch_size=args.batch)
    if args.json:
        _print_json(data)
        return EXIT_FAILED if data["errors"] else EXIT_OK
    out = _output()
    total = sum(data["resealed"].values())
    out.print(f"rekey: {total:,} values re-sealed under key {data['key_id']!r} in {data['stores']:,} store(s)")
    remaining = data["remaining_key_ids"]
    out.print("older keys still in use: " + (", ".join(remaining) if remaining else "none (they may leave the ring)"))
    for error in data["errors"]:
        out.print(f"  could not rekey {error['path']}: {error['error']}")
    return EXIT_FAILED if data["errors"] else EXIT_OK


def _cmd_prune(args: argparse.Namespace) -> int:
    if args.stamps_older_than is None and args.idle_sessions is None:
        raise tools.ToolError("nothing to prune: give --stamps-older-than and/or --idle-sessions")
    data = tools.prune(
        args.path,
        args.session,
        stamps_older_than_ms=args.stamps_older_than,
        idle_sessions_ms=args.idle_sessions,
        dry_run=args.dry_run,
    )
    if args.json:
        _print_json(data)
        return EXIT_FAILED if data["errors"] else EXIT_OK
    out = _output()
    verb = "would prune" if args.dry_run else "pruned"
    out.print(f"prune{' (dry run)' if args.dry_run else ''}: {verb} {data['turn_stamps']:,} turn stamps")
    if args.idle_sessions is not None:
        idle = data["idle_sessions"]
        out.print(f"{'would delete' if args.dry_run else 'deleted'} {len(idle):,} idle sessions")
        for session_id in idle:
            out.print(f"  {out.text(session_id)}")
    for error in data["errors"]:
        out.print(f"{out.styled('error:', 'red')} {out.text(error['path'])}: {out.text(error['error'])}")
    return EXIT_FAILED if data["errors"] else EXIT_OK


_DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _duration(text: str) -> int:
    """A duration in milliseconds: ``90d``, ``12h``, ``30m``, ``45s``, ``500ms`` or plain milliseconds."""
    number, unit = text.strip(), "ms"
    for suffix in sorted(_DURATION_UNITS, key=len, reverse=True):
        if number.endswith(suffix):
            number, unit = number[: -len(suffix)], suffix
            break
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30d, 12h, 45m, 500ms)")
    value = int(number) * _DURATION_UNITS[unit]
    if value >= 2**63:
        raise argparse.ArgumentTypeError(f"duration too long: {text!r}")
    return value


# ---------------------------------------------------------------------------
# processes: the process registry


def _cmd_processes_list(args: argparse.Namespace) -> int:
    data = tools.processes_list(args.target, state=args.state, after=args.after, limit=args.limit, schema=args.schema)
    if args.json:
        _print_json(data)
        return EXIT_OK
    out = _output()
    now = int(time.time() * 1000)
    table = Table(title=f"{len(data['processes'])} processes in {out.text(data['target'])}")
    for column in ("process", "state", "owner session", "host", "updated", "outcome"):
        table.add_column(column, no_wrap=column in ("state", "updated"))
    styles = {"running": "cyan", "completed": "green", "failed": "red", "cancelled": "yellow"}
    for row in data["processes"]:
        table.add_row(
            out.text(row["process_id"]),
            out.styled(row["state"], styles.get(row["state"], "white")),
            out.text(row["owner_session_id"]),
            out.text(row["host_profile_id"]),
            _relative(row["updated_at_ms"], now),
            out.text(_clip(row["message"] or row["outcome"] or "-", 48)),
        )
    out.print(table)
    if data["next_after"] is not None:
        out.print(f"more: --after {out.text(data['next_after'])}")
    return EXIT_OK


def _cmd_processes_show(args: argparse.Namespace) -> int:
    data = tools.processes_show(args.target, args.process_id, events=args.events, schema=args.schema)
    if args.json:
        _print_json(data)
        return EXIT_OK
    out = _output()
    process, lease = data["process"], data["lease"]
    rows: list[tuple[str, Any]] = [
        ("state", process["state"]),
        ("owner session", process["owner_session_id"]),
        ("host profile", process["host_profile_id"]),
        ("created", _when(process["created_at_ms"])),
        ("updated", _when(process["updated_at_ms"])),
        ("outcome", _json_value(process["record"]["status"].get("await_output"))),
        ("external ref", _json_value(process["external_ref"])),
        ("grants", ", ".join(grant["session_id"] for grant in data["grants"]) or "-"),
        (
            "lease",
            "-"
            if lease is None
            else f"{lease['owner_id']} fence {lease['fencing_token']} until {_when(lease['expires_at_epoch_ms'])}",
        ),
        ("events", f"{data['event_count']:,} (showing {len(data['events'])})"),
    ]
    out.print(_kv_table(out, f"process {process['process_id']}", rows))
    table = Table(title="events")
    for column in ("#", "type", "at", "payload"):
        table.add_column(column, justify="right" if column == "#" else "left", fold=column == "payload")
    for event in data["events"]:
        table.add_row(
            str(event["sequence"]),
            out.text(event["event_type"]),
            _when(event["occurred_at_ms"]),
            out.text(_json_value(event["payload"])),
        )
    out.print(table)
    return EXIT_OK


def _cmd_processes_prune(args: argparse.Namespace) -> int:
    data = tools.processes_prune(
        args.target, args.older_than, dry_run=args.dry_run, limit=args.limit, schema=args.schema
    )
    if args.json:
        _print_json(data)
        return EXIT_OK
    out = _output()
    verb = "would prune" if args.dry_run else "pruned"
    out.print(
        f"processes prune{' (dry run)' if args.dry_run else ''}: {verb} {len(data['processes']):,} terminal "
        f"processes last updated before {_when(data['horizon_epoch_ms'])} "
        f"({data['events']:,} events, {data['grants']:,} grants)"
    )
    for process_id in data["processes"]:
        out.print(f"  {out.text(process_id)}")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    data = tools.verify(args.path, args.session)
    if args.json:
        _print_json(data)
    else:
        out = _output()
        table = Table(title=f"verify {out.text(data['target'])}")
        table.add_column("check")
        table.add_column("result")
        table.add_column("detail", fold=True)
        for check in data["checks"]:
            problems = len(check["problems"])
            status = out.styled("ok", "green") if check["ok"] else out.styled(f"{problems} problem(s)", "red")
            table.add_row(out.text(check["name"]), status, out.text(check["detail"]))
        out.print(table)
        for problem in data["problems"]:
            out.print(f"{out.styled('problem:', 'red')} {out.text(problem)}")
        count = len(data["problems"])
        out.print(
            out.styled("OK", "green") if data["ok"] else out.styled(f"{count} problem{'s' * (count != 1)}", "red")
        )
    return EXIT_OK if data["ok"] else EXIT_FAILED


def _cmd_queue_dead_letters(args: argparse.Namespace) -> int:
    data = tools.dead_letters(args.path, args.session, queue=args.queue)
    if args.json:
        _print_json(data)
        return EXIT_OK
    out = _output()
    letters = data["dead_letters"]
    if not letters:
        out.print(f"queue {out.text(data['queue'])}: no dead letters")
        return EXIT_OK
    table = Table(title=f"dead letters of queue {out.text(data['queue'])}")
    for column in ("batch", "seq", "attempts", "dead-lettered", "last owner", "items", "last error"):
        table.add_column(column, fold=column == "last error")
    for letter in letters:
        table.add_row(
            out.text(letter["batch_id"]),
            str(letter["enqueue_seq"]),
            str(letter["attempts"]),
            _when(letter["dead_lettered_at_ms"]),
            out.text(letter["last_owner_id"] or "-"),
            out.text(f"{letter['items']} ({', '.join(letter['kinds'])})"),
            out.text(_clip(letter["last_error"] or "-", 60)),
        )
    out.print(table)
    out.print(f"{len(letters)} dead letter{'s' * (len(letters) != 1)}; lash-store queue show|requeue|drop STORE BATCH")
    return EXIT_OK


def _cmd_queue_show(args: argparse.Namespace) -> int:
    data = tools.show_dead_letter(args.path, args.batch_id, args.session, queue=args.queue)
    if args.json:
        _print_json(data)
        return EXIT_OK
    out = _output()
    rows = [
        ("queue", data["queue"]),
        ("batch", data["batch_id"]),
        ("enqueue seq", data["enqueue_seq"]),
        ("source key", data["source_key"] or "-"),
        ("policy", f"{_POLICY.get(data['delivery_policy'], data['delivery_policy'])}, {data['slot_policy']}"),
        ("enqueued", _when(data["enqueued_at_ms"])),
        ("attempts", data["attempts"]),
        ("last claim", f"{data['last_owner_id'] or '-'} at {_when(data['last_claimed_at_ms'])}"),
        ("dead-lettered", _when(data["dead_lettered_at_ms"])),
        ("last error", data["last_error"] or "-"),
    ]
    out.print(_kv_table(out, f"dead letter {out.text(data['batch_id'])}", rows))
    for payload in data["payloads"]:
        out.print(f"{out.text(payload['item_id'])}: {out.text(_json_value(payload, 300))}")
    return EXIT_OK


def _cmd_queue_requeue(args: argparse.Namespace) -> int:
    data = tools.requeue_dead_letter(args.path, args.batch_id, args.session, queue=args.queue)
    if args.json:
        _print_json(data)
    else:
        _output().print(
            f"re-queued {data['requeued']['batch_id']} in queue {data['queue']} "
            f"(enqueue seq {data['requeued']['enqueue_seq']}, attempts reset)"
        )
    return EXIT_OK


def _cmd_queue_drop(args: argparse.Namespace) -> int:
    data = tools.drop_dead_letter(args.path, args.batch_id, args.session, queue=args.queue)
    if args.json:
        _print_json(data)
    else:
        dropped = data["dropped"]
        _output().print(
            f"dropped {dropped['batch_id']} from queue {data['queue']} after {dropped['attempts']} attempts"
        )
    return EXIT_OK


def _cmd_migrate(args: argparse.Namespace) -> int:
    data = tools.migrate(args.paths, check=args.check)
    if args.json:
        _print_json(data)
        return EXIT_OK if data["ok"] else EXIT_FAILED
    for entry in data["files"]:
        status = entry["status"]
        if status == "error":
            message = entry["error"]["message"]
            where = "" if entry["path"] in message else f"{entry['path']}: "  # most errors name the file already
            print(f"lash-store: error: {where}{message}", file=sys.stderr)
        elif status == "migrated":
            print(f"{entry['path']}: migrated from revision {entry['revision']}")
        elif status == "needs_migration":
            print(f"{entry['path']}: needs migration (revision {entry['revision']})")
        else:
            print(f"{entry['path']}: current")
    summary = data["summary"]
    if not data["files"]:
        print("no session files found")
    elif args.check:
        print(
            f"{summary['needs_migration']} need migration, {summary['current']} current, {summary['error']} failed "
            f"(this release uses layout revision {data['layout_revision']}; nothing was changed)"
        )
    else:
        print(f"{summary['migrated']} migrated, {summary['current']} current, {summary['error']} failed")
    return EXIT_OK if data["ok"] else EXIT_FAILED


def _cmd_export(args: argparse.Namespace) -> int:
    if args.output not in (None, "-"):
        tools.check_export_destination(args.path, args.output)  # even --force never overwrites the source
        if Path(args.output).exists() and not args.force:
            raise CommandError(f"{args.output} exists; pass --force to overwrite it")
    dump = tools.export_store(args.path, args.session)
    encoded = tools.export_bytes(dump)
    if args.output is None or args.output == "-":
        sys.stdout.buffer.write(encoded + b"\n")
        sys.stdout.flush()
        return EXIT_OK
    target = Path(args.output)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a conversation: owner-only
    with os.fdopen(fd, "wb") as handle:
        handle.write(encoded + b"\n")
    summary = {
        "output": str(target),
        "bytes": len(encoded) + 1,
        "source": args.path,
        "session_id": tools.dump_session_id(dump),
        "head_revision": dump.head.head_revision if dump.head else 0,
        "node_count": sum(not node.tombstoned for node in dump.nodes),
        "blob_count": len(dump.blobs),
    }
    if args.json:
        _print_json(summary)
    else:
        out = _output()
        out.print(
            f"exported session {out.text(summary['session_id'])} (revision {summary['head_revision']}, "
            f"{summary['node_count']} nodes, {summary['blob_count']} blobs) to {out.text(target)} "
            f"({_size(summary['bytes'])})"
        )
    return EXIT_OK


def _cmd_import(args: argparse.Namespace) -> int:
    data = tools.import_store(args.file, args.path, args.session)
    _report_transfer(args, data, "imported")
    return EXIT_OK


def _cmd_copy(args: argparse.Namespace) -> int:
    data = tools.copy_store(args.source, args.destination, session_id=args.session, to_session=args.to_session)
    _report_transfer(args, data, "copied")
    return EXIT_OK


def _report_transfer(args: argparse.Namespace, data: dict[str, Any], verb: str) -> None:
    if args.json:
        _print_json(data)
        return
    rows = data["rows"]
    out = _output()
    out.print(
        f"{verb} session {out.text(data['session_id'])} into {out.text(data['target'])} "
        f"(revision {data['head_revision']}, {rows['nodes']} nodes, {rows['blobs']} blobs, "
        f"{rows['batches']} queued batches); verified"
    )


# ---------------------------------------------------------------------------
# The demo


class _DemoDisplay:
    """Live progress: a rich bar on a terminal, a plain line every two seconds otherwise, nothing with --json."""

    def __init__(self, out: Output, enabled: bool) -> None:
        self.out = out
        self.enabled = enabled
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.last_line = 0.0

    def __enter__(self) -> _DemoDisplay:
        console = self.out.console
        if self.enabled and console is not None and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("[bold]answered"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[stats]}"),
                console=console,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task("demo", total=None, stats="starting workers…")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(None, None, None)

    def update(self, snapshot: DemoProgress) -> None:
        stats = (
            f"kills {snapshot.kills} · reclaims {snapshot.reclaims} · CAS conflicts {snapshot.cas_conflicts} · "
            f"{snapshot.commits_per_s:.1f} commits/s · queued {snapshot.queued} · dead letters {snapshot.dead_letters}"
        )
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=snapshot.answered, total=snapshot.total, stats=stats)
        elif self.enabled and time.monotonic() - self.last_line >= 2.0:
            self.last_line = time.monotonic()
            print(
                f"[{snapshot.elapsed_s:5.1f} s] answered {snapshot.answered}/{snapshot.total} · {stats}",
                file=sys.stderr,
                flush=True,
            )


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.think_ms[0] > args.think_ms[1]:
        raise CommandError("--think-ms MIN MAX needs MIN <= MAX")
    if args.postgres is not None:
        if args.postgres != "auto" and not is_dsn(args.postgres):
            raise CommandError("--postgres takes a postgresql:// URI, a libpq key=value string, or 'auto'")
        if args.dir:
            raise CommandError("--dir names a SQLite factory root; with --postgres the sessions live in a schema")
        if args.postgres == "auto" and args.keep:
            raise CommandError("--keep cannot keep anything from --postgres auto: the throwaway server is removed")
    config = DemoConfig(
        sessions=args.sessions,
        messages=args.messages,
        workers=args.workers,
        seed=args.seed,
        chaos=not args.no_chaos,
        kill_every_s=args.kill_every,
        lease_ms=args.lease_ms,
        think_ms=(args.think_ms[0], args.think_ms[1]),
        duplicate_rate=args.duplicate_rate,
        stall_rate=args.stall_rate,
        produce_interval_s=args.produce_interval,
        timeout_s=args.timeout,
        directory=Path(args.dir) if args.dir else None,
        keep=args.keep,
        postgres=args.postgres,
        poison=not args.no_poison,
        poison_attempts=args.poison_attempts,
    )
    out = _output()
    if not args.json:
        chaos = f"chaos on (SIGKILL a worker every ~{config.kill_every_s:g} s)" if config.chaos else "chaos off"
        if config.poisoned:
            chaos += f", a poisoned message (dead-lettered after {config.poison_attempts} attempts)"
        backend = {None: "SQLite", "auto": "PostgreSQL (a throwaway server)"}.get(config.postgres, "PostgreSQL")
        out.print(
            f"{out.styled('lash-store demo', 'bold')}: {config.sessions} sessions x {config.messages} messages, "
            f"{config.workers} worker processes, lease {config.lease_ms} ms, {chaos}, seed {config.seed}, "
            f"on {backend}"
        )
    try:
        with _DemoDisplay(out, enabled=not args.json) as display:
            result = run_demo(config, display.update)
    except (ValueError, DemoSetupError) as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        _print_json(result.to_json())
    else:
        _render_demo(out, result)
    return EXIT_OK if result.ok else EXIT_FAILED


def _render_demo(out: Output, result: DemoResult) -> None:
    counters = result.counters
    table = Table(title="Run", show_header=False)
    table.add_column("metric", style="cyan")
    table.add_column("value", justify="right")
    postgres = result.postgres
    backend = (
        [("backend", "SQLite")] if postgres is None else [("backend", "PostgreSQL"), ("  schema", postgres["schema"])]
    )
    rows = [
        *backend,
        ("sessions", counters["sessions"]),
        ("user messages", counters["messages"]),
        ("sent twice (same source key)", counters["duplicates_sent"]),
        ("  merged at enqueue", counters["deduplicated_at_enqueue"]),
        ("  re-queued, cancelled by a worker", counters["duplicates_requeued"]),
        ("turns committed", counters["turns_committed"]),
        ("claims", counters["claims"]),
        ("workers SIGKILLed", counters["kills"]),
        ("work reclaimed after a kill (higher fence)", counters["reclaims"]),
        ("worker stalls past the lease (simulated pause)", counters["stalls"]),
        ("stale owners fenced off (renew/commit rejected)", counters["lost_claims"]),
        ("CAS conflicts (head moved, reloaded)", counters["cas_conflicts"]),
        ("turn-stamp replays", counters["stamp_replays"]),
        ("poisoned message: claims (each killed its worker)", counters["poison_claims"]),
        ("dead letters", counters["dead_letters"]),
        ("wall time", f"{result.wall_s:.1f} s"),
        ("commits per second", f"{counters['commits_per_s']:.1f}"),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    out.print(table)
    checks = Table(title="Verification")
    checks.add_column("", no_wrap=True)
    checks.add_column("check")
    checks.add_column("detail", fold=True)
    for check in result.checks:
        mark = out.styled("✓", "green") if check["ok"] else out.styled("✗", "red")
        checks.add_row(mark, out.text(check["name"]), out.text(check["detail"]))
    out.print(checks)
    if result.ok:
        out.print(
            f"{out.styled('PASS', 'bold green')}: all {len(result.checks)} checks passed in {result.wall_s:.1f} s"
        )
    else:
        failed = sum(1 for check in result.checks if not check["ok"])
        out.print(f"{out.styled('FAIL', 'bold red')}: {failed} of {len(result.checks)} checks failed")
    if result.kept and result.directory is not None:
        where = out.text(str(result.directory))
        out.print(f"session files kept in {where} (try: lash-store sessions {where})")
    elif result.kept and postgres is not None:
        schema = postgres["schema"]
        out.print(
            f"sessions kept in schema {schema} of {out.text(postgres['database'])} (DROP SCHEMA {schema} CASCADE)"
        )
    if result.logs is not None and result.directory is None:
        out.print(f"worker counters and claim logs kept in {out.text(str(result.logs))}")


# ---------------------------------------------------------------------------
# Parser and entry point


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lash-store``."""
    parser = argparse.ArgumentParser(
        prog="lash-store",
        description="lash-store: durable session store for LLM agent runtimes -- demo, inspection and maintenance.",
        epilog="Exit codes: 0 ok, 1 a check failed, 2 usage error, 3 could not run (one line on stderr).",
    )
    parser.add_argument("--version", action="version", version=f"lash-store {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    # Every command that opens session stores takes the key ring of an encrypted one.
    keys_flag = argparse.ArgumentParser(add_help=False)
    keys_flag.add_argument(
        "--keys",
        default=os.environ.get("LASH_STORE_KEYS"),
        metavar="FILE",
        help="the key ring of encrypted stores, as JSON (KeyRing.to_json); default: $LASH_STORE_KEYS",
    )

    demo = commands.add_parser(
        "demo",
        parents=[json_flag],
        help="run the chaos demo (worker processes, SIGKILLs, exactly-once verification)",
        description="Worker processes answer queued messages of several sessions while a chaos monkey SIGKILLs "
        "them; then every file is verified. Exit 0 only when every check passes.",
    )
    demo.add_argument("--dir", help="factory root to use and keep (default: a temporary directory, removed)")
    demo.add_argument(
        "--postgres",
        metavar="DSN",
        help="run on PostgreSQL instead: a postgresql:// URI or libpq key=value DSN (sessions go in a new schema, "
        "dropped afterwards), or 'auto' for a throwaway local server",
    )
    demo.add_argument("--sessions", type=positive, default=8, metavar="N", help="sessions (default 8)")
    demo.add_argument(
        "--messages", type=positive, default=25, metavar="N", help="user messages per session (default 25)"
    )
    demo.add_argument("--workers", type=positive, default=4, metavar="N", help="worker processes (default 4)")
    demo.add_argument(
        "--seed",
        type=int,
        default=7,
        metavar="N",
        help="seed of the fake model, the duplicates and the chaos (default 7)",
    )
    demo.add_argument("--no-chaos", action="store_true", help="no fault injection: no SIGKILLs, no stalls")
    demo.add_argument(
        "--kill-every", type=_positive_float, default=1.5, metavar="SECONDS", help="mean kill interval (default 1.5)"
    )
    demo.add_argument("--lease-ms", type=positive, default=1000, metavar="MS", help="claim lease (default 1000)")
    demo.add_argument(
        "--think-ms",
        type=non_negative,
        nargs=2,
        default=[40, 240],
        metavar=("MIN", "MAX"),
        help="fake model latency in ms (default 40 240)",
    )
    demo.add_argument(
        "--duplicate-rate",
        type=_fraction,
        default=0.2,
        metavar="P",
        help="share of messages delivered twice (default 0.2)",
    )
    demo.add_argument(
        "--stall-rate",
        type=_fraction,
        default=0.05,
        metavar="P",
        help="share of turns where a worker pauses past its lease without renewing (default 0.05)",
    )
    demo.add_argument(
        "--produce-interval",
        type=float,
        default=0.15,
        metavar="SECONDS",
        help="pause between producer rounds (default 0.15)",
    )
    demo.add_argument(
        "--timeout", type=_positive_float, default=120.0, metavar="SECONDS", help="give up after this (default 120)"
    )
    demo.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (with --postgres: the run's schema)"
    )
    demo.add_argument(
        "--no-poison", action="store_true", help="no poisoned message (there is none with --no-chaos either)"
    )
    demo.add_argument(
        "--poison-attempts",
        type=positive,
        default=8,
        metavar="N",
        help="attempts before a message is dead-lettered (default 8)",
    )
    demo.set_defaults(handler=_cmd_demo)

    store_flags = argparse.ArgumentParser(add_help=False, parents=[keys_flag])
    store_flags.add_argument(
        "path", metavar="STORE", help="a session database file, or a PostgreSQL DSN (URI or key=value) with --session"
    )
    store_flags.add_argument("--session", default=None, metavar="ID", help="the session id (PostgreSQL)")

    inspect = commands.add_parser(
        "inspect",
        parents=[json_flag, store_flags],
        help="show a store: head, checkpoint, usage, queue, attachments, blobs",
    )
    inspect.set_defaults(handler=_cmd_inspect)

    history = commands.add_parser("history", parents=[json_flag, store_flags], help="print the conversation")
    history.add_argument("--active-path", action="store_true", help="only the path from the root to the leaf")
    history.add_argument("--limit", type=positive, default=None, metavar="N", help="only the last N nodes")
    history.set_defaults(handler=_cmd_history)

    sessions = commands.add_parser(
        "sessions", parents=[json_flag, keys_flag], help="list the sessions of a factory root or a PostgreSQL database"
    )
    sessions.add_argument("dir", metavar="ROOT", help="factory root directory, or a PostgreSQL DSN")
    sessions.add_argument("--limit", type=positive, default=None, metavar="N", help="at most N sessions")
    sessions.add_argument("--after", default=None, metavar="ID", help="start after this session id (next page)")
    sessions.add_argument(
        "--recent", action="store_true", help="the most recently written first, a page of --limit (default 50)"
    )
    sessions.add_argument("--cursor", default=None, metavar="C", help="the next page of --recent (its next_cursor)")
    sessions.set_defaults(handler=_cmd_sessions)

    stats = commands.add_parser(
        "stats",
        parents=[json_flag, keys_flag],
        help="sizes, counts and growth of a store, or summed over a factory root or a database",
        description="One store (a session file, or a DSN with --session): file and WAL sizes, row counts, content "
        "bytes by kind and growth per commit and per turn. A factory root directory or a DSN without --session: "
        "the number of sessions, the totals and the largest sessions. Read-only; exit 1 if a session of a root "
        "cannot be read.",
    )
    stats.add_argument("path", metavar="TARGET", help="a session file, a factory root directory, or a PostgreSQL DSN")
    stats.add_argument("--session", default=None, metavar="ID", help="one session of the DSN (PostgreSQL)")
    stats.add_argument(
        "--top", type=positive, default=10, metavar="N", help="largest sessions listed for a root (default 10)"
    )
    stats.set_defaults(handler=_cmd_stats)

    gc = commands.add_parser(
        "gc", parents=[json_flag, store_flags], help="delete unreachable blobs (older than the grace period)"
    )
    gc.add_argument("--dry-run", action="store_true", help="report what would be deleted; change nothing")
    gc.add_argument(
        "--grace-ms",
        type=non_negative,
        default=None,
        metavar="MS",
        help="protect blobs younger than this (default 600000)",
    )
    gc.set_defaults(handler=_cmd_gc)

    vacuum = commands.add_parser(
        "vacuum", parents=[json_flag, store_flags], help="remove tombstoned nodes and compact the file"
    )
    vacuum.add_argument("--no-compact", action="store_true", help="skip SQLite's VACUUM (file size unchanged)")
    vacuum.set_defaults(handler=_cmd_vacuum)

    verify = commands.add_parser(
        "verify", parents=[json_flag, store_flags], help="check a store thoroughly; exit 1 on any problem"
    )
    verify.set_defaults(handler=_cmd_verify)

    prune = commands.add_parser(
        "prune",
        parents=[json_flag, keys_flag],
        help="retention: drop old turn stamps; delete idle sessions of a root or database",
        description="Remove turn-commit stamps older than a horizon (a retry of a turn older than that is no "
        "longer recognised as a replay and is judged by its compare-and-set revision alone), from one store or "
        "from every session of a factory root or database; and delete the sessions of a root or database that "
        "were not written for a while, have no queued work and are not open anywhere. Exit 1 if a session "
        "could not be pruned.",
    )
    prune.add_argument("path", metavar="TARGET", help="a session file, factory root, or PostgreSQL DSN")
    prune.add_argument("--session", default=None, metavar="ID", help="one session of a PostgreSQL database")
    prune.add_argument(
        "--stamps-older-than", type=_duration, default=None, metavar="AGE", help="e.g. 30d; prune older turn stamps"
    )
    prune.add_argument(
        "--idle-sessions", type=_duration, default=None, metavar="AGE", help="e.g. 90d; delete sessions idle longer"
    )
    prune.add_argument("--dry-run", action="store_true", help="count what would go; change nothing")
    prune.set_defaults(handler=_cmd_prune)

    rekey = commands.add_parser(
        "rekey",
        parents=[json_flag, keys_flag],
        help="encryption at rest: re-seal stored data under the key ring's current key",
        description="Re-encrypt every value of one store, or of every session of a factory root or database, "
        "that is sealed under an older key of the ring, in bounded batches of short transactions (safe while "
        "writers run; run it again to resume). When it reports no remaining key ids, the older keys may be "
        "removed from the ring. Exit 1 if a session could not be rekeyed.",
    )
    rekey.add_argument("path", metavar="TARGET", help="a session file, factory root, or PostgreSQL DSN")
    rekey.add_argument("--session", default=None, metavar="ID", help="one session of a PostgreSQL database")
    rekey.add_argument("--batch", type=positive, default=500, metavar="N", help="rows per transaction (default 500)")
    rekey.set_defaults(handler=_cmd_rekey)
    processes = commands.add_parser(
        "processes",
        help="the process registry: list, show and prune processes (a deployment file or a PostgreSQL DSN)",
        description="Inspect the process registry of a deployment file or a PostgreSQL database (list, show: "
        "read-only, nothing is created or written) and delete terminal processes older than a horizon (prune).",
    )
    registry_flags = argparse.ArgumentParser(add_help=False)
    registry_flags.add_argument("target", metavar="TARGET", help="the deployment file, or a PostgreSQL DSN")
    registry_flags.add_argument("--schema", default="lash", metavar="NAME", help="the PostgreSQL schema (default lash)")
    process_commands = processes.add_subparsers(dest="processes_command", required=True, metavar="ACTION")
    listing = process_commands.add_parser(
        "list", parents=[json_flag, registry_flags], help="processes by id, a page at a time"
    )
    listing.add_argument(
        "--state",
        choices=("running", "completed", "failed", "cancelled", "terminal"),
        default=None,
        help="only processes in this state (terminal: every state but running)",
    )
    listing.add_argument("--after", default=None, metavar="ID", help="start after this process id (next page)")
    listing.add_argument("--limit", type=positive, default=None, metavar="N", help="at most N processes")
    listing.set_defaults(handler=_cmd_processes_list)
    show = process_commands.add_parser(
        "show", parents=[json_flag, registry_flags], help="one process: record, events, grants, lease"
    )
    show.add_argument("process_id", metavar="PROCESS", help="the process id")
    show.add_argument(
        "--events", type=non_negative, default=50, metavar="N", help="show the last N events (default 50)"
    )
    show.set_defaults(handler=_cmd_processes_show)
    prune_processes = process_commands.add_parser(
        "prune",
        parents=[json_flag, registry_flags],
        help="delete terminal processes older than a horizon, with their events, acks, grants and leases",
    )
    prune_processes.add_argument(
        "--older-than", type=_duration, required=True, metavar="AGE", help="e.g. 30d: last updated longer ago"
    )
    prune_processes.add_argument("--limit", type=positive, default=None, metavar="N", help="at most N processes")
    prune_processes.add_argument("--dry-run", action="store_true", help="count what would go; change nothing")
    prune_processes.set_defaults(handler=_cmd_processes_prune)

    backup = commands.add_parser(
        "backup",
        parents=[json_flag, keys_flag],
        help="copy a SQLite session file while it is in use, then verify the copy",
        description="Take a consistent copy of a live session file (SQLite's online backup: writers keep "
        "committing) into DEST, which must not exist, then verify the copy. Restore by opening the copy. "
        "Exit 1 if the copy does not verify. For PostgreSQL use pg_dump, or export for one session.",
    )
    backup.add_argument("source", metavar="SRC", help="the session file to copy")
    backup.add_argument("dest", metavar="DEST", help="the new file (never overwritten; mode 0600)")
    backup.set_defaults(handler=_cmd_backup)

    queue = commands.add_parser(
        "queue",
        help="poison work: list, show, re-queue or drop a queue's dead letters",
        description="Batches whose every allowed attempt failed (StoreOptions.poison) wait on their queue's "
        "dead-letter list. dead-letters and show only read; requeue puts a batch back at its old place with its "
        "attempts reset; drop deletes it. The queue defaults to the store's own session (--queue names another).",
    )
    queue_commands = queue.add_subparsers(dest="queue_command", required=True, metavar="ACTION")
    queue_flags = argparse.ArgumentParser(add_help=False)
    queue_flags.add_argument(
        "--queue", default=None, metavar="ID", help="the queue's session id (default: the store's)"
    )
    batch_flag = argparse.ArgumentParser(add_help=False)
    batch_flag.add_argument("batch_id", metavar="BATCH", help="the dead letter's batch id (qwb:...)")
    for name, handler, parents, text in (
        ("dead-letters", _cmd_queue_dead_letters, [], "list the dead letters (read-only)"),
        ("show", _cmd_queue_show, [batch_flag], "one dead letter in full, payloads included (read-only)"),
        ("requeue", _cmd_queue_requeue, [batch_flag], "put a dead letter back in the queue, attempts reset"),
        ("drop", _cmd_queue_drop, [batch_flag], "delete a dead letter for good"),
    ):
        action = queue_commands.add_parser(name, parents=[json_flag, store_flags, queue_flags, *parents], help=text)
        action.set_defaults(handler=handler)

    migrate = commands.add_parser(
        "migrate",
        parents=[json_flag, keys_flag],
        help="bring session files of an earlier layout revision up to date (one transaction per file)",
        description="Migrate each session file that was written by an earlier release, in one transaction per "
        "file; a file that is current is left as it is, a file that is not a lash-store session file is reported "
        "and left untouched. Exit 1 if any file failed. With --check nothing is changed, and the exit code is 1 "
        "if any file needs a migration or cannot be read (for CI).",
    )
    migrate.add_argument("paths", nargs="+", metavar="PATH", help="session file, or factory root (every *.db in it)")
    migrate.add_argument("--check", action="store_true", help="change nothing; exit 1 if any file needs migrating")
    migrate.set_defaults(handler=_cmd_migrate)

    export = commands.add_parser(
        "export",
        parents=[json_flag, store_flags],
        help="write a portable JSON copy (blobs included, any backend) to stdout or a file",
    )
    export.add_argument("-o", "--output", default=None, help="write to this file (mode 0600) instead of stdout")
    export.add_argument("--force", action="store_true", help="overwrite an existing output file (never the source)")
    export.set_defaults(handler=_cmd_export)

    import_ = commands.add_parser(
        "import",
        parents=[json_flag, keys_flag],
        help="recreate an exported session in a new or empty store (never overwrites)",
    )
    import_.add_argument("file", help="export file ('-' for stdin)")
    import_.add_argument("path", metavar="STORE", help="new session file, factory root directory, or PostgreSQL DSN")
    import_.add_argument(
        "--session", default=None, metavar="ID", help="the session id (PostgreSQL; default: the export's)"
    )
    import_.set_defaults(handler=_cmd_import)

    copy = commands.add_parser(
        "copy",
        parents=[json_flag, keys_flag],
        help="copy a session between stores of any backend (SQLite <-> PostgreSQL), verified",
    )
    copy.add_argument("source", metavar="SOURCE", help="session file or PostgreSQL DSN (with --session)")
    copy.add_argument("destination", metavar="DEST", help="new session file, factory root, or PostgreSQL DSN")
    copy.add_argument("--session", default=None, metavar="ID", help="the source's session id (PostgreSQL)")
    copy.add_argument("--to-session", default=None, metavar="ID", help="the destination's session id (default: same)")
    copy.set_defaults(handler=_cmd_copy)

    add_deployment_commands(commands, json_flag)

    commands.add_parser("bench", add_help=False, help="benchmarks (python -m lash_store.bench; see bench --help)")
    return parser


def _bench(argv: Sequence[str]) -> int:
    """Delegate to the benchmark package's own command line."""
    try:
        module = importlib.import_module("lash_store.bench.__main__")
    except ImportError as exc:
        raise CommandError(f"the benchmarks are not available: {exc}") from exc
    bench_main: Callable[[Sequence[str]], int] = module.main
    return bench_main(list(argv))


def _report_error(message: str, kind: str, as_json: bool) -> None:
    line = " ".join(message.split()) or kind
    print(f"lash-store: error: {line}", file=sys.stderr)
    if as_json:
        _print_json({"error": {"type": kind, "message": line}})


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lash-store``; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in arguments
    try:
        if arguments and arguments[0] == "bench":
            return _bench(arguments[1:])
        args = build_parser().parse_args(arguments)
        handler: Callable[[argparse.Namespace], int] = args.handler
        keys: str | None = getattr(args, "keys", None)
        with tools.using_key_ring(tools.load_key_ring(keys) if keys else None):
            return handler(args)
    except KeyboardInterrupt:
        print("lash-store: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); silence the flush at exit too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (CommandError, StoreError, OSError, ValueError) as exc:
        _report_error(str(exc), type(exc).__name__, as_json)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
