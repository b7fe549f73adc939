"""The PostgreSQL *server* crashes mid-run (``pg_ctl stop -m immediate``) and restarts, several times.

A writer process commits the crash harness's stamped turns continuously and
appends an ``ack`` line to a file after each acknowledged commit.  While it
runs, the test stops the server with ``-m immediate`` (no shutdown
checkpoint: the restart runs crash recovery), keeps it down for a moment and
starts it again - three times, and once more after SIGKILLing the postmaster.  The writer must recover on its own: a
commit that fails during the outage raises a typed ``BackendError`` (never a
raw driver error), and the writer retries it with the same turn stamp until
it is acknowledged, so a commit that was durable although its reply was lost
is answered from its stamp instead of being applied twice.  At the end every
acknowledged commit is present (and replays to its acknowledged result
without writing), none is torn, none applied twice.

A second test restarts the server under a pool full of idle connections:
the first operation afterwards must get a live connection, not a dead one.

The tests run their own server: restarting the session-wide one would disturb
other tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lash_store.errors import BackendError
from lash_store.model import AttachmentIntent
from lash_store.options import StoreOptions
from lash_store.postgres import PostgresStore, close_shared_pools, shared_pool
from lash_store.testing.crash import CrashTarget, attachment_ids, turn_commit, verify_store
from lash_store.testing.pgserver import PostgresServer, PostgresUnavailable
from tests.pg import postgres_unavailable
from tests.pgproc import SPAWN

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

SEED = 77
PARTITION = "server-crash"
# Three immediate stops (every backend is SIGQUIT, no shutdown checkpoint) and one SIGKILL of the postmaster.
CRASHES = ("immediate", "immediate", "kill", "immediate")
# Longer than the writer's busy timeout (2 s): a call that starts during the outage and waits for a connection
# gives up with StoreBusy and is retried, so every outage is seen even when no statement was in flight.
OUTAGE_S = 2.5
ACKS_BETWEEN_CRASHES = 15
WRITER_DEADLINE_S = 80.0


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of this test alone (fsync off: a killed postmaster still loses nothing acknowledged)."""
    server = PostgresServer(fsync=False)
    try:
        server.start()
    except PostgresUnavailable as exc:
        postgres_unavailable(exc)
    try:
        yield server
    finally:
        close_shared_pools()
        server.cleanup()


def _line(fd: int, text: str) -> None:
    os.write(fd, (text + "\n").encode())  # one write per line (O_APPEND): a reader sees whole lines


def _retrying(fd: int, what: str, n: int, action: Any, deadline: float) -> Any:
    """Run ``action`` until it succeeds; a BackendError (the server is gone) is logged and retried."""
    while True:
        try:
            return action()
        except BackendError as exc:
            _line(fd, f"retry {what} {n} {type(exc).__name__} {' '.join(str(exc).split())[:120]}")
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _writer(dsn: str, ack_path: str, stop: Any) -> None:
    """Commit turn after turn until told to stop; every turn is retried, with its stamp, until acknowledged."""
    fd = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    deadline = time.monotonic() + WRITER_DEADLINE_S
    try:
        # A short busy timeout: while the server is down a call gives up (StoreBusy) after 2 s and is retried.
        store = PostgresStore.open(dsn, PARTITION, StoreOptions(busy_timeout_ms=2000))
        n = 1
        while not stop.is_set() and time.monotonic() < deadline:
            for attachment_id in attachment_ids(n):
                intent = AttachmentIntent(
                    attachment_id=attachment_id,
                    session_id="crash-session",
                    canonical_uri=f"blob://crash/{attachment_id}",
                    intent_at_epoch_ms=0,
                )
                _retrying(fd, "intent", n, lambda i=intent: store.record_intent(i), deadline)
            commit = turn_commit(SEED, n)  # the same stamp on every retry of this turn
            result = _retrying(fd, "commit", n, lambda c=commit: store.commit_runtime_state(c), deadline)
            _line(fd, f"ack {n} {result.head_revision} {result.checkpoint_ref}")
            n += 1
        _line(fd, f"done {n - 1}")
    except BaseException as exc:
        _line(fd, f"error {type(exc).__name__}: {' '.join(str(exc).split())}")
    finally:
        os.close(fd)
        close_shared_pools()


def _read(path: Path) -> list[list[str]]:
    try:
        return [line.split() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def _acks(path: Path) -> list[tuple[int, int, str]]:
    return [(int(w[1]), int(w[2]), w[3]) for w in _read(path) if w[0] == "ack"]


def _wait_for_acks(path: Path, count: int, timeout_s: float, writer: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while len(_acks(path)) < count:
        errors = [" ".join(w) for w in _read(path) if w[0] == "error"]
        assert not errors, errors
        assert writer.is_alive(), "the writer exited"
        assert time.monotonic() < deadline, f"the writer acknowledged {len(_acks(path))} of {count} commits in time"
        time.sleep(0.02)


def test_writer_survives_immediate_server_stops(own_server: PostgresServer, tmp_path: Path) -> None:
    started = time.monotonic()
    dsn = own_server.create_database("crashing")
    PostgresStore.open(dsn, PARTITION).close()  # the schema exists before the writer starts
    close_shared_pools()
    ack_path = tmp_path / "acks"
    stop = SPAWN.Event()
    writer = SPAWN.Process(target=_writer, args=(dsn, str(ack_path), stop), daemon=True)
    writer.start()
    try:
        _wait_for_acks(ack_path, ACKS_BETWEEN_CRASHES, 30, writer)
        for crash in CRASHES:
            before = len(_acks(ack_path))
            if crash == "kill":
                own_server.kill()  # the postmaster dies at once; its orphaned backends are killed too
            else:
                own_server.stop("immediate")
            assert not own_server.running
            time.sleep(OUTAGE_S)
            own_server.start()  # crash recovery replays the WAL
            # The writer reconnects by itself and goes on acknowledging.
            _wait_for_acks(ack_path, before + ACKS_BETWEEN_CRASHES, 30, writer)
            print(f"{crash}: {len(_acks(ack_path)) - before} acks since the crash")
    finally:
        stop.set()
        writer.join(timeout=30)
        if writer.is_alive():
            writer.kill()
            writer.join(timeout=10)
    assert writer.exitcode == 0

    lines = _read(ack_path)
    assert not [w for w in lines if w[0] == "error"], lines
    acks = _acks(ack_path)
    retries = [w for w in lines if w[0] == "retry"]
    # The outages really hit the writer, and only as the store's typed errors.
    assert retries, "no operation failed while the server was down: the test proved nothing"
    assert {w[3] for w in retries} <= {"BackendError", "StoreBusy"}, {w[3] for w in retries}
    # Turns were acknowledged in order, each as its own revision: retries applied nothing twice.
    assert [(n, revision) for n, revision, _ in acks] == [(n, n) for n in range(1, len(acks) + 1)]
    assert lines[-1] == ["done", str(len(acks))]

    # Every acknowledged commit is present, none torn, none twice (the harness's invariants) ...
    target = CrashTarget.of(dsn, PARTITION)
    assert verify_store(target, SEED) == len(acks)
    # ... and each replays, by its stamp, to the result it acknowledged, writing no row.
    observer = target.observer()
    try:
        fingerprint = observer.version()
        with PostgresStore.open(dsn, PARTITION, create=False) as store:
            for n, revision, ref in acks:
                replay = store.commit_runtime_state(turn_commit(SEED, n))
                assert (replay.head_revision, replay.checkpoint_ref) == (revision, ref)
        assert observer.version() == fingerprint
    finally:
        observer.close()
    elapsed = time.monotonic() - started
    print("\n".join(" ".join(w) for w in retries))
    print(f"{len(acks)} acknowledged commits, {len(retries)} retried operations, {elapsed:.1f} s")
    assert elapsed < 90


def test_after_a_restart_the_first_operation_gets_a_live_connection(own_server: PostgresServer) -> None:
    """A pool full of connections the crashed server left dead must not fail an operation once the server is
    back: the store retries a connection that died before its transaction began, and the pool's other idle
    connections are checked then, instead of being handed out, dead, one after another."""
    dsn = own_server.create_database("stale_pool")
    with PostgresStore.open(dsn, PARTITION) as store:
        store.commit_runtime_state(turn_commit(SEED, 1, ()))
        pool = shared_pool(dsn)
        held = [pool.getconn() for _ in range(8)]  # eight connections at once, as eight busy threads would
        for conn in held:
            pool.putconn(conn)
        own_server.stop("immediate")
        own_server.start()
        read = store.load_session()  # every idle connection of the pool is dead here
        assert read is not None and read.head_revision == 1
        assert store.commit_runtime_state(turn_commit(SEED, 2, ())).head_revision == 2
