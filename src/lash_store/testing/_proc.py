"""Process bookkeeping shared by the throwaway-server and network-namespace harnesses.

Both harnesses leave things behind when a test run dies without running its
``finally`` blocks (SIGKILL, OOM, a CI timeout): a postmaster, a temp dir, a
network namespace.  The next run sweeps them, but only those whose *owner*
process is gone, so that two runs on one machine never tear down each other's
servers.  An owner is recorded as ``"<pid> <start time>"``: the start time
(from ``/proc/<pid>/stat``) tells a live owner from an unrelated process that
happens to have reused its pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

__all__ = [
    "cwd_of",
    "owner_alive",
    "owner_token",
    "pid_alive",
    "processes_with_cwd",
    "terminate",
    "wait_gone",
]


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None when the process is gone.

    The command name is in parentheses and may itself contain spaces and
    parentheses, so the split starts after the *last* closing parenthesis.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rfind(")") + 2 :].split()


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process; a zombie counts as gone.

    A SIGKILLed postmaster is re-parented to init and may sit as a zombie for a
    moment: ``os.kill(pid, 0)`` would still succeed on it, and a wait loop
    built on that would wait for nothing.
    """
    if pid <= 0:
        return False
    fields = _stat_fields(pid)
    if fields is not None:
        return fields[0] not in ("Z", "X")
    if Path("/proc/self/stat").exists():
        return False
    try:  # Without /proc (not Linux): the signal-0 probe is the best there is.
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_time(pid: int) -> str:
    fields = _stat_fields(pid)
    # Field 22 of stat is the start time; the list starts at field 3 (state).
    return fields[19] if fields is not None and len(fields) > 19 else "?"


def owner_token(pid: int | None = None) -> str:
    """``"<pid> <start time>"`` for ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid} {_start_time(pid)}"


def owner_alive(token: str) -> bool:
    """Whether the process that wrote ``token`` (see :func:`owner_token`) still runs."""
    parts = token.split()
    if len(parts) != 2 or not parts[0].isdigit():
        return False
    pid = int(parts[0])
    return pid_alive(pid) and _start_time(pid) == parts[1]


def cwd_of(pid: int) -> str | None:
    """The working directory of ``pid``, or None when it is gone or not ours to see."""
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def processes_with_cwd(directory: Path) -> list[int]:
    """Pids whose working directory is ``directory``.

    Every PostgreSQL server process changes into its data directory, so this
    finds a server's backends even after their postmaster was SIGKILLed and
    ``postmaster.pid`` no longer names them.
    """
    target = os.path.realpath(directory)
    found = []
    try:
        entries = os.listdir("/proc")
    except FileNotFoundError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        if cwd_of(int(name)) == target and pid_alive(int(name)):
            found.append(int(name))
    return found


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` seconds for ``pids`` to exit; return those still alive."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if pid_alive(p)]
    return alive


def terminate(pids: list[int], sig: signal.Signals, grace: float) -> None:
    """Send ``sig`` to ``pids``, wait ``grace`` seconds, then SIGKILL whatever is left (and wait for it)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    left = wait_gone(pids, grace)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_gone(left, 5.0)
