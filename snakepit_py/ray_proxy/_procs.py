"""Recording and sweeping the OS processes a private Ray starts (Linux ``/proc``).

A process is identified by (pid, start time) so a recycled pid is never signalled.
"""

from __future__ import annotations

import os
import signal
import time

from .._lifecycle import reap

__all__ = ["start_time", "descendants", "ProcessSet"]


def _stat(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name sits in parentheses and may hold spaces: split after it.
    return data[data.rfind(b")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks, or None when it is gone (or a zombie)."""
    rest = _stat(pid)
    if rest is None or len(rest) < 20 or rest[0] == b"Z":
        return None
    return int(rest[19])


def descendants(root: int | None = None) -> dict[int, int]:
    """Every live descendant of ``root`` (default: this process) as {pid: start time}."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        rest = _stat(int(name))
        if rest is None or len(rest) < 20 or rest[0] == b"Z":
            continue
        pid = int(name)
        children.setdefault(int(rest[1]), []).append(pid)
        starts[pid] = int(rest[19])
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = starts[child]
            todo.append(child)
    return found


class ProcessSet:
    """The processes this proxy owns; :meth:`sweep` ends every one still alive."""

    def __init__(self) -> None:
        self.known: dict[int, int] = {}

    def record(self, procs: dict[int, int]) -> None:
        """Remember processes ({pid: start time}) so they are swept even once re-parented."""
        self.known.update(procs)

    def alive(self) -> list[int]:
        """The recorded processes that still run (same pid and same start time)."""
        return [pid for pid, st in self.known.items() if start_time(pid) == st]

    def sweep(self, grace: float = 0.2) -> list[int]:
        """SIGTERM the live ones, SIGKILL what is left after ``grace`` seconds; return the
        pids that had to be killed with SIGKILL."""
        for pid in self.alive():
            _signal(pid, signal.SIGTERM)
        end = time.monotonic() + grace
        while self.alive() and time.monotonic() < end:
            reap()
            time.sleep(0.01)
        killed = self.alive()
        for pid in killed:
            _signal(pid, signal.SIGKILL)
        end = time.monotonic() + 1.0
        while self.alive() and time.monotonic() < end:
            reap()
            time.sleep(0.01)
        reap()
        return killed


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass
