"""Per-turn commit latency of one growing session, against a plain ``sqlite3`` floor.

Every turn commits what an agent runtime commits after a model round trip:
a user message (~500 bytes of text) and an assistant reply (~1,500 bytes)
appended to the graph, a checkpoint with the turn state and an ~8 KB tool
state that changes every turn, and a usage delta.  The floor is the least a
hand-written program could do to make the same bytes durable: one
``BEGIN IMMEDIATE ... COMMIT`` per turn on a WAL database with the same
``synchronous`` level, inserting the two encoded nodes, the encoded tool
state and a usage row, and updating one head row.  Both sides encode their
values inside the timed region (the floor with the same msgpack encoder);
building the Python values of a turn is not timed.

The store and the floor run interleaved, turn by turn (rotating which goes
first), in separate files of one directory, so both see the same machine
conditions.  Each run is preceded by a short warm-up on throw-away files.
Reported figures are, per checkpoint turn, the median latency over the window
of turns ending at that turn, then the median of those medians over runs.

With ``peers`` (``--peers``, see :mod:`lash_store.bench.peers`) other
libraries join the same interleaved loop on the same turn content, each in its
own file; a peer marked ``isolated`` gets a pass of its own per run, with a
lash-store and a floor of that pass.  With ``series`` the per-turn latencies
are handed back for ``--plot`` (see :mod:`lash_store.bench.plot`).
"""

from __future__ import annotations

import gc
import random
import sqlite3
import statistics
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec

from lash_store.api import SessionStoreAPI
from lash_store.bench import commit_report, progress, workdir
from lash_store.bench.commit_report import GROWTH_TARGET, STORE_LABEL, Peer, RunSamples
from lash_store.core.codec import encode_blob
from lash_store.model import (
    BlobArtifactDescriptor,
    GraphDelta,
    HydratedCheckpoint,
    RuntimeCommit,
    SessionNode,
    SessionReadScope,
    TokenLedgerEntry,
    TokenUsage,
)
from lash_store.options import BlobProfile, StoreOptions
from lash_store.sqlite import Store

__all__ = [
    "FLOOR_LABEL",
    "FULL_CHECKPOINTS",
    "GROWTH_TARGET",
    "QUICK_CHECKPOINTS",
    "RATIO_TARGET",
    "STORE_LABEL",
    "FloorStore",
    "FloorWriter",
    "PeerSpec",
    "PeerWriter",
    "TurnContent",
    "Workload",
    "checked_checkpoints",
    "warmup_content",
    "format_report",
    "interleave_turns",
    "run",
    "verify_session",
]

SESSION_ID = "bench-session"
MODEL = "bench-model"
FULL_CHECKPOINTS = (10, 100, 1_000, 10_000)
QUICK_CHECKPOINTS = (10, 100, 1_000)
RATIO_TARGET = 2.0
FLOOR_LABEL = "sqlite3 floor"

_ENCODER = msgspec.msgpack.Encoder()

# --------------------------------------------------------------------------
# Workload: deterministic, realistic, compressible content

_WORD_TEXT = (
    "the a of to and in is it that for on with as this be are was by at from or an not can will "
    "function return value error file module test config request response session state token model "
    "update change commit build deploy check run output input result cache index query table schema "
    "user assistant tool call message stream context window retry timeout lock write read path line "
    "python rust sqlite database migration version release branch merge review patch diff log trace "
    "should would could might need want make take use find show give try keep start stop add remove "
    "because however therefore although instead meanwhile finally first then next also only just "
    "quickly carefully safely correctly again already still never always often usually"
)
_WORDS = tuple(_WORD_TEXT.split())
_MODULES = ("api", "auth", "billing", "cache", "cli", "core", "db", "events", "http", "jobs", "models", "utils")
_COMMANDS = ("pytest -q", "ruff check .", "git status", "git diff --stat", "ls -la", "make build", "mypy src")
_STATUSES = ("pending", "in_progress", "done", "blocked")


def _sentence(rng: random.Random, length: int) -> str:
    """Pseudo-English text of about ``length`` characters."""
    words: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    text = " ".join(words)[: max(length - 1, 0)]
    return text[:1].upper() + text[1:] + "."


@dataclass(frozen=True, slots=True)
class TurnContent:
    """The Python values of one turn (built outside the timed region)."""

    index: int
    user: SessionNode
    assistant: SessionNode
    turn_state: dict[str, Any]
    tool_state: dict[str, Any]
    usage: TokenLedgerEntry
    config: dict[str, Any]
    agent_frames: list[dict[str, Any]]


class Workload:
    """Deterministic per-turn content: the same seed and turn always give the same bytes.

    The tool state mimics a coding agent's: open files (changing every few
    turns), a todo list, a rolling shell history and per-turn scratch notes;
    it encodes to ~8 KB of msgpack and compresses about 2-3x.
    """

    def __init__(self, seed: int = 1, *, session_id: str = SESSION_ID) -> None:
        self.seed = seed
        self.session_id = session_id
        self.config: dict[str, Any] = {"model": MODEL, "temperature": 0.2, "max_output_tokens": 4096}
        self.agent_frames: list[dict[str, Any]] = [{"frame_id": "main", "agent": "coder", "depth": 0}]
        self._cache: dict[tuple[int, int], Any] = {}

    def _rng(self, kind: int, index: int) -> random.Random:
        return random.Random((self.seed << 48) | (kind << 40) | (index + (1 << 32)))

    def turn(self, index: int) -> TurnContent:
        """The content of turn ``index`` (1-based)."""
        rng = self._rng(0, index)
        user_id, assistant_id = f"t{index:06d}-user", f"t{index:06d}-assistant"
        parent = f"t{index - 1:06d}-assistant" if index > 1 else None
        stamp = 1_700_000_000_000 + index * 30_000
        user = SessionNode(
            node_id=user_id,
            parent_node_id=parent,
            payload={"role": "user", "parts": [{"type": "text", "text": _sentence(rng, 500)}]},
            timestamp_ms=stamp,
            agent_frame_id="main",
        )
        assistant = SessionNode(
            node_id=assistant_id,
            parent_node_id=user_id,
            payload={"role": "assistant", "parts": [{"type": "text", "text": _sentence(rng, 1_500)}]},
            timestamp_ms=stamp + 12_000,
            agent_frame_id="main",
        )
        turn_state = {
            "turn_index": index,
            "phase": "idle",
            "last_user_node_id": user_id,
            "last_assistant_node_id": assistant_id,
            "pending_tool_calls": [],
        }
        usage = TokenLedgerEntry(
            source="agent",
            model=MODEL,
            usage=TokenUsage(
                input_tokens=1_200 + rng.randrange(800),
                output_tokens=350 + rng.randrange(400),
                cached_input_tokens=900,
            ),
        )
        return TurnContent(
            index=index,
            user=user,
            assistant=assistant,
            turn_state=turn_state,
            tool_state=self.tool_state(index),
            usage=usage,
            config=self.config,
            agent_frames=self.agent_frames,
        )

    def tool_state(self, index: int) -> dict[str, Any]:
        """An ~8 KB JSON-like tool state of constant size; part of it rolls forward every turn."""
        scratch_rng = self._rng(4, index)
        return {
            "schema": 3,
            "turn_index": index,
            "cwd": "/home/dev/projects/acme-service",
            "env": {"VIRTUAL_ENV": "/home/dev/projects/acme-service/.venv", "CI": "0", "LANG": "C.UTF-8"},
            "open_files": [
                {**entry, "last_read_turn": max(1, index - k % 5)} for k, entry in enumerate(self._files(index // 5))
            ],
            "todo": self._todo(index // 10),
            "shell_history": [self._history(turn) for turn in range(index - 13, index + 1)],
            "notes": _sentence(scratch_rng, 1_150),
            "search_cache": {f"q{k}": scratch_rng.randbytes(8).hex() for k in range(8)},
        }

    def _files(self, epoch: int) -> list[dict[str, Any]]:
        cached = self._cache.get((1, epoch))
        if cached is None:
            rng = self._rng(1, epoch)
            cached = [
                {
                    "path": f"src/acme/{rng.choice(_MODULES)}/{rng.choice(_WORDS)}_{k}.py",
                    "sha256": rng.randbytes(16).hex(),
                    "lines": rng.randrange(40, 900),
                }
                for k in range(12)
            ]
            self._remember((1, epoch), cached)
        return cached

    def _todo(self, epoch: int) -> list[dict[str, Any]]:
        cached = self._cache.get((2, epoch))
        if cached is None:
            rng = self._rng(2, epoch)
            cached = [{"id": k, "title": _sentence(rng, 60), "status": rng.choice(_STATUSES)} for k in range(10)]
            self._remember((2, epoch), cached)
        return cached

    def _history(self, turn: int) -> dict[str, Any]:
        cached = self._cache.get((3, turn))
        if cached is None:
            rng = self._rng(3, turn)
            cached = {
                "turn": turn,
                "command": rng.choice(_COMMANDS),
                "exit_code": rng.choice((0, 0, 0, 1)),
                "duration_ms": rng.randrange(20, 9_000),
                "stdout_tail": _sentence(rng, 260),
            }
            self._remember((3, turn), cached)
        return cached

    def _remember(self, key: tuple[int, int], value: Any) -> None:
        if len(self._cache) > 256:
            self._cache.clear()
        self._cache[key] = value

    def commit(self, content: TurnContent, expected_head_revision: int | None) -> RuntimeCommit:
        """The lash-store commit of one turn."""
        return RuntimeCommit(
            session_id=self.session_id,
            expected_head_revision=expected_head_revision,
            config=content.config,
            agent_frames=content.agent_frames,
            current_agent_frame_id="main",
            graph=GraphDelta.append([content.user, content.assistant], leaf_node_id=content.assistant.node_id),
            checkpoint=HydratedCheckpoint(turn_state=content.turn_state, tool_state=content.tool_state),
            usage_deltas=[content.usage],
        )


# --------------------------------------------------------------------------
# The floor: plain sqlite3 writing the same bytes

_FLOOR_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (seq INTEGER PRIMARY KEY, node_id TEXT NOT NULL UNIQUE, parent_id TEXT,
                                  body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tool_states (turn INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS usage (seq INTEGER PRIMARY KEY, source TEXT NOT NULL, model TEXT NOT NULL,
                                  input_tokens INTEGER, output_tokens INTEGER, cached_input_tokens INTEGER,
                                  reasoning_tokens INTEGER);
CREATE TABLE IF NOT EXISTS head (singleton INTEGER PRIMARY KEY CHECK (singleton = 1), revision INTEGER NOT NULL,
                                 leaf_node_id TEXT, body BLOB NOT NULL);
"""


class FloorStore:
    """The baseline: a WAL ``sqlite3`` database written with one ``BEGIN IMMEDIATE`` transaction per turn."""

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL").fetchone()
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.conn.executescript(_FLOOR_SCHEMA)
        self.revision = 0

    def prepare(self, content: TurnContent, commit: RuntimeCommit) -> TurnContent:
        """Nothing to do before the turn: the floor encodes inside its timed commit, as lash-store does."""
        return content

    def commit(self, content: TurnContent) -> None:
        """Encode the turn and write it in one transaction."""
        user = _ENCODER.encode(content.user)
        assistant = _ENCODER.encode(content.assistant)
        tool_state = _ENCODER.encode(content.tool_state)
        head = _ENCODER.encode(
            {
                "config": content.config,
                "agent_frames": content.agent_frames,
                "current_agent_frame_id": "main",
                "turn_state": content.turn_state,
            }
        )
        usage = content.usage.usage
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO nodes (node_id, parent_id, body) VALUES (?, ?, ?)",
                [
                    (content.user.node_id, content.user.parent_node_id, user),
                    (content.assistant.node_id, content.assistant.parent_node_id, assistant),
                ],
            )
            conn.execute("INSERT INTO tool_states (turn, body) VALUES (?, ?)", (content.index, tool_state))
            conn.execute(
                "INSERT INTO usage (source, model, input_tokens, output_tokens, cached_input_tokens, "
                "reasoning_tokens) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    content.usage.source,
                    content.usage.model,
                    usage.input_tokens,
                    usage.output_tokens,
                    usage.cached_input_tokens,
                    usage.reasoning_tokens,
                ),
            )
            self.revision += 1
            conn.execute(
                "INSERT INTO head VALUES (1, ?, ?, ?) ON CONFLICT (singleton) DO UPDATE SET "
                "revision = excluded.revision, leaf_node_id = excluded.leaf_node_id, body = excluded.body",
                (self.revision, content.assistant.node_id, head),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------
# Peers: other libraries joining the interleaved loop (implemented in lash_store.bench.peers)


class PeerWriter(Protocol):
    """One open peer: it makes each turn durable the way an application using that library would."""

    def prepare(self, content: TurnContent) -> Any:
        """Build the library's Python values of one turn (not timed, like :meth:`Workload.turn`)."""

    def commit(self, prepared: Any) -> None:
        """Serialise and write one prepared turn (timed)."""

    def verify(self, turns: int) -> dict[str, Any]:
        """After the last turn, read back what was written; ``ok`` says whether all ``turns`` turns are there."""

    def close(self) -> None:
        """Release connections, threads and event loops."""


class FloorWriter(Protocol):
    """The floor's side of the interleaved loop (the PostgreSQL floor's bytes are encoded before the turn)."""

    def prepare(self, content: TurnContent, commit: RuntimeCommit) -> Any:
        """What :meth:`commit` will write, made once per turn before any side runs (not timed)."""

    def commit(self, content: Any) -> None:
        """Write one turn (timed)."""


class PeerSpec(Peer, Protocol):
    """How to open one SQLite peer (how it is reported: :class:`~lash_store.bench.commit_report.Peer`)."""

    def open(self, directory: Path, name: str) -> PeerWriter:
        """A fresh peer on a new database file in ``directory``."""


# --------------------------------------------------------------------------
# Running


def _run_pair(
    directory: Path,
    turns: int,
    workload: Workload,
    options: StoreOptions,
    *,
    warmup: bool,
    peers: Sequence[PeerSpec] = (),
    prefix: str = "",
) -> RunSamples:
    """Commit ``turns`` turns to a fresh store, a fresh floor and fresh peers (:func:`interleave_turns`).

    Files are named ``{prefix}{warmup|session}-{side}.db``.
    """
    name = prefix + ("warmup" if warmup else "session")
    with ExitStack() as stack:
        store = Store.open(directory / f"{name}-store.db", options)
        stack.callback(store.close)
        floor = FloorStore(directory / f"{name}-floor.db")
        stack.callback(floor.close)
        writers: list[tuple[PeerSpec, PeerWriter]] = []
        for spec in peers:
            writer = spec.open(directory, name)
            stack.callback(writer.close)
            writers.append((spec, writer))
        return interleave_turns(turns, workload, store, floor, writers, warmup=warmup)


def interleave_turns(
    turns: int,
    workload: Workload,
    store: SessionStoreAPI,
    floor: FloorWriter,
    peers: Sequence[tuple[Peer, PeerWriter]],
    *,
    warmup: bool,
) -> RunSamples:
    """Commit ``turns`` turns through lash-store, the floor and each peer, interleaved; latencies in ns.

    Shared by the SQLite and PostgreSQL benchmarks.  The side going first
    rotates every turn, so that no side always meets the others' after-effects
    (cache, WAL, fsync).  A peer with ``max_turns`` drops out of the rotation
    after that many turns.  After a measured (not warm-up) pass, each peer
    reads back what it wrote.
    """
    store_ns: list[int] = []
    floor_ns: list[int] = []
    peer_ns: list[list[int]] = [[] for _ in peers]
    clock = time.perf_counter_ns
    revision = 0
    limits = [commit_report.peer_turns(spec, turns) for spec, _ in peers]
    sides = 2 + len(peers)
    gc.collect()
    for index in range(1, turns + 1):
        content = workload.turn(index)
        commit = workload.commit(content, revision)
        floor_turn = floor.prepare(content, commit)
        shift = (index - 1) % sides
        for side in (*range(shift, sides), *range(shift)):
            if side == 0:
                started = clock()
                result = store.commit_runtime_state(commit)
                store_ns.append(clock() - started)
                revision = result.head_revision
            elif side == 1:
                started = clock()
                floor.commit(floor_turn)
                floor_ns.append(clock() - started)
            elif index <= limits[side - 2]:
                writer = peers[side - 2][1]
                prepared = writer.prepare(content)
                started = clock()
                writer.commit(prepared)
                peer_ns[side - 2].append(clock() - started)
    checks: dict[str, dict[str, Any]] = {}
    if not warmup:
        for (spec, writer), limit in zip(peers, limits, strict=True):
            checks[spec.key] = writer.verify(limit)
    latencies = {spec.key: ns for (spec, _), ns in zip(peers, peer_ns, strict=True)}
    return RunSamples(store_ns, floor_ns, latencies, checks)


def verify_session(store: SessionStoreAPI, turns: int) -> dict[str, Any]:
    """Re-read a measured session: its head revision, node count and how long resuming its active path takes."""
    started = time.perf_counter_ns()
    read = store.load_session(SessionReadScope.active_path())
    resume_us = (time.perf_counter_ns() - started) / 1000
    node_count = store.graph_node_count()
    revision = read.head_revision if read is not None else 0
    path_nodes = len(read.graph.nodes) if read is not None else 0
    return {
        "ok": revision == turns and node_count == 2 * turns and path_nodes == 2 * turns,
        "head_revision": revision,
        "node_count": node_count,
        "active_path_nodes": path_nodes,
        "resume_active_path_us": resume_us,
    }


def _verify(path: Path, turns: int) -> dict[str, Any]:
    """Re-open the measured session: the head revision, node count and resume latency."""
    with Store.open(path) as store:
        return verify_session(store, turns)


def _bytes_per_turn(workload: Workload, index: int, profile: BlobProfile) -> dict[str, int | None]:
    """Encoded sizes of one turn; the stored tool-state size comes from the store's (internal) blob encoder."""
    content = workload.turn(index)
    tool_state = _ENCODER.encode(content.tool_state)
    stored: int | None
    try:
        stored = len(encode_blob(tool_state, BlobArtifactDescriptor.tool_state_snapshot(), profile).content)
    except Exception:  # informational only: an internal API that may change must not break the benchmark
        stored = None
    return {
        "user_node": len(_ENCODER.encode(content.user)),
        "assistant_node": len(_ENCODER.encode(content.assistant)),
        "tool_state": len(tool_state),
        "tool_state_stored_by_lash_store": stored,
    }


def warmup_content(seed: int, run: int) -> Workload:
    """The warm-up turns of run ``run`` (1-based): their own seed, unlike every other run's and the measured turns'."""
    return Workload(seed + 1000 + run)


def checked_checkpoints(checkpoints: Sequence[int], repeat: int, window: int) -> list[int]:
    """The checkpoint turns in order, without repeats; ``ValueError`` for settings that could not measure anything."""
    ordered = sorted(set(checkpoints))
    if not ordered or ordered[0] < 1 or repeat < 1 or window < 1:
        raise ValueError("checkpoints must be positive and repeat/window at least 1")
    return ordered


def run(
    *,
    checkpoints: Sequence[int],
    repeat: int,
    window: int = 50,
    warmup_turns: int = 30,
    base_dir: str | None = None,
    verbose: bool = True,
    seed: int = 1,
    blob_profile: BlobProfile = BlobProfile.BALANCED,
    peers: Sequence[PeerSpec] = (),
    series: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """Run the commit benchmark and return its JSON-ready report.

    ``peers`` join the interleaved loop (``report["peers"]`` is ``None``
    without them).  When ``series`` is given it is filled with the per-turn
    latency in microseconds of every side (the median over runs of each turn),
    keyed by the side's label, for :func:`lash_store.bench.plot.plot_commit_latency`.
    """
    checkpoints = checked_checkpoints(checkpoints, repeat, window)
    turns = checkpoints[-1]
    workload = Workload(seed)
    options = StoreOptions(blob_profile=blob_profile)
    runs: list[RunSamples] = []
    shared = [spec for spec in peers if not spec.isolated]
    own_pass: dict[str, list[RunSamples]] = {spec.key: [] for spec in peers if spec.isolated}
    started = time.perf_counter()
    verification: dict[str, Any] = {}
    with workdir(base_dir, "commit") as directory:
        for number in range(1, repeat + 1):
            run_dir = directory / f"run-{number}"
            run_dir.mkdir()
            progress(verbose, f"commit: run {number}/{repeat}: warm-up {warmup_turns} turns, then {turns:,} turns")
            warmup_workload = warmup_content(seed, number)
            if warmup_turns:
                _run_pair(run_dir, warmup_turns, warmup_workload, options, warmup=True, peers=shared)
            samples = _run_pair(run_dir, turns, workload, options, warmup=False, peers=shared)
            runs.append(samples)
            check = _verify(run_dir / "session-store.db", turns)
            if verification.get("ok", True):  # keep the first failure, else the latest run
                verification = check
            for spec in peers:
                if not spec.isolated:
                    continue
                limit = commit_report.peer_turns(spec, turns)
                progress(verbose, f"commit: run {number}/{repeat}: {spec.label} in its own pass, {limit:,} turns")
                prefix = f"{spec.key}-pass-"
                if warmup_turns:
                    _run_pair(run_dir, warmup_turns, warmup_workload, options, warmup=True, peers=[spec], prefix=prefix)
                own_pass[spec.key].append(
                    _run_pair(run_dir, limit, workload, options, warmup=False, peers=[spec], prefix=prefix)
                )
            if base_dir is None:
                for file in run_dir.iterdir():
                    file.unlink()
        directory_used = str(directory)
    elapsed = time.perf_counter() - started

    rows = [commit_report.checkpoint_row(turn, window, runs, RATIO_TARGET, spread=False) for turn in checkpoints]
    growth = commit_report.growth_figures(rows, to_last_turn=False)
    if series is not None:
        series.update(_per_turn_series(runs, peers, own_pass))
    return {
        "benchmark": "commit",
        "config": {
            "turns": turns,
            "checkpoints": checkpoints,
            "window": window,
            "repeat": repeat,
            "warmup_turns": warmup_turns,
            "blob_profile": options.blob_profile.value,
            "durability": options.durability.value,
            "dir": directory_used if base_dir is not None else None,
        },
        "bytes_per_turn": _bytes_per_turn(workload, max(1, turns // 2), blob_profile),
        "checkpoints": rows,
        "growth": growth,
        "all_turns": commit_report.all_turns_totals(runs),
        "targets_met": all(row["pass"] for row in rows) and growth["pass"],
        "verification": verification,
        "peers": _peer_report(runs, own_pass, peers, checkpoints, window, options) if peers else None,
        "elapsed_s": elapsed,
    }


def _per_turn_series(
    runs: Sequence[RunSamples], peers: Sequence[PeerSpec], own_pass: dict[str, list[RunSamples]]
) -> dict[str, list[float]]:
    """Per-turn latency (us) of every side: for each turn, the median over runs."""

    def per_turn(samples: Sequence[Sequence[int]]) -> list[float]:
        length = min(len(s) for s in samples)
        return [statistics.median(s[i] for s in samples) / 1000 for i in range(length)]

    result = {
        STORE_LABEL: per_turn([r.store_ns for r in runs]),
        FLOOR_LABEL: per_turn([r.floor_ns for r in runs]),
    }
    for spec in peers:
        label = f"{spec.label} (own pass)" if spec.key in own_pass else spec.label
        result[label] = per_turn([r.peer_ns[spec.key] for r in own_pass.get(spec.key) or runs])
    return result


def _peer_report(
    runs: Sequence[RunSamples],
    own_pass: dict[str, list[RunSamples]],
    peers: Sequence[PeerSpec],
    checkpoints: Sequence[int],
    window: int,
    options: StoreOptions,
) -> dict[str, Any]:
    """Per peer and checkpoint: the window median, and its ratio to the floor and to lash-store of the same pass."""
    sides = []
    for spec in peers:
        source = commit_report.peer_source(spec, runs, own_pass)
        points = [commit_report.peer_point(spec, source, turn, window, spread=False) for turn in checkpoints]
        sides.append(
            {
                **commit_report.peer_heading(spec, own_pass),
                "checkpoints": points,
                "verification": commit_report.peer_verification(spec, source),
            }
        )
    return {"store_synchronous": options.durability.value, "sides": sides}


def format_report(report: dict[str, Any]) -> str:
    """The plain-text rendering of :func:`run`'s report."""
    config, sizes = report["config"], report["bytes_per_turn"]
    lines = [
        f"lash-store commit benchmark: {config['turns']:,} turns, one session, "
        f"{config['blob_profile']} blobs, synchronous={config['durability']}",
        f"window: median of the {config['window']} turns ending at each checkpoint; "
        f"{config['repeat']} run(s), median of run medians; warm-up {config['warmup_turns']} turns per run",
        f"bytes per turn: user node {sizes['user_node']:,} B, assistant node {sizes['assistant_node']:,} B, "
        f"tool state {sizes['tool_state']:,} B (lash-store stores {sizes['tool_state_stored_by_lash_store'] or '?'} B)",
        "",
    ]
    lines += [
        commit_report.checkpoint_table(report["checkpoints"], FLOOR_LABEL, spread=False),
        "",
        commit_report.growth_line(report["growth"]),
        commit_report.all_turns_line(report["all_turns"], "all turns (WAL checkpoints included)"),
        commit_report.verification_line(report["verification"], read="load_session active path"),
    ]
    if report.get("peers"):
        lines += ["", *_format_peers(report)]
    lines.append(commit_report.targets_line(report))
    return "\n".join(lines)


def _format_peers(report: dict[str, Any]) -> list[str]:
    """The peers table (ratios to the floor), then what each peer writes and read back."""
    peers = report["peers"]
    lines = [
        "peers on the same workload, interleaved turn by turn with lash-store and the floor: "
        "per-turn latency (x sqlite3 floor)",
        *commit_report.peer_table(report, FLOOR_LABEL, versus="floor"),
        "",
    ]
    for side in peers["sides"]:
        check = side["verification"]
        limit = f"; stops after {side['max_turns']:,} turns" if side["max_turns"] is not None else ""
        if side["pass"] == "own":
            limit += "; own pass"
        lines.append(
            f"{side['label']}: {side['library']} {side['version']}, synchronous={side['synchronous']}{limit}; "
            f"read back: {check.get('detail', '?')}  {'ok' if check['ok'] else 'FAILED'}"
        )
        lines.append(f"  per turn: {side['per_turn']}")
        if side.get("tool_state"):
            lines.append(f"  tool state: {side['tool_state']}")
    lines.append(f"lash-store and the floor: synchronous={peers['store_synchronous']}")
    return lines
