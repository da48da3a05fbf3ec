"""Dying with the parent and taking our children along.

Mechanism (Linux): at start the worker makes itself a *child subreaper*
(``prctl(PR_SET_CHILD_SUBREAPER)``), so processes its children leave behind
are re-parented to the worker instead of to init. On exit it walks /proc for
every descendant, sends SIGTERM, waits a short grace, then SIGKILLs whatever is
left — a child that ignores SIGTERM dies too. A worker killed with SIGKILL
cannot do this; its supervisor must (the harness kills by OS pid).
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

__all__ = [
    "become_subreaper",
    "c_controls",
    "descendants",
    "exit_process",
    "ignore_signal",
    "keep_heap_memory",
    "kill_descendants",
    "reap",
]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Ask the kernel to re-parent orphaned descendants to this process (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    controls = c_controls()
    if controls is not None:
        return bool(controls.set_child_subreaper(True))
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def c_controls() -> Any:
    """The C process controls (``snakepit_py._cproc``), or None when built without them."""
    try:
        from . import _cproc
    except ImportError:
        return None
    return _cproc


def ignore_signal(_signum: int, _frame: object) -> None:
    """A signal handler that does nothing.

    Used for SIGINT rather than ``SIG_IGN``: a disposition of ``SIG_IGN`` is
    inherited by every child process (a Ray task could then not be
    interrupted); a handler is reset to the default in a child.
    """


def keep_heap_memory(mmap_threshold: int = 16 << 20, trim_threshold: int = 32 << 20) -> bool:
    """Let glibc serve big allocations from the heap and keep freed memory around.

    A worker that decodes and encodes megabyte frames otherwise gets each
    buffer from a fresh ``mmap`` and pays a page fault per 4 KiB page on every
    call, which costs more than copying the data. Up to ``trim_threshold``
    bytes of freed heap stay with the process (RSS does not shrink right
    back after a big call). Set SNAKEPIT_MALLOC_TUNING=0 to keep glibc's defaults.
    """
    if os.environ.get("SNAKEPIT_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    controls = c_controls()
    if controls is not None:
        return bool(controls.set_malloc_thresholds(mmap_threshold, trim_threshold))
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
        return libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1 and ok
    except (OSError, AttributeError):  # not glibc
        return False


def _parents() -> dict[int, int]:
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after it.
        rest = stat[stat.rfind(b")") + 2 :].split()
        if len(rest) > 1 and rest[0] != b"Z":  # zombies are dead already
            table[int(name)] = int(rest[1])
    return table


def descendants(pid: int | None = None) -> list[int]:
    """Every live descendant of ``pid`` (default: this process), children first."""
    root = os.getpid() if pid is None else pid
    parents = _parents()
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def reap() -> None:
    """Collect every exited child (and re-parented orphan) without waiting."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def kill_descendants(grace: float = 0.3) -> None:
    """SIGTERM every descendant, then SIGKILL the ones still alive after ``grace`` seconds."""
    pids = descendants()
    if not pids:
        return
    for pid in pids:
        try:
            os.kill(pid, 15)  # SIGTERM (the `signal` module costs start-up time)
        except OSError:
            pass
    end = time.monotonic() + grace
    while time.monotonic() < end:
        reap()
        pids = descendants()
        if not pids:
            return
        time.sleep(0.01)
    for pid in descendants():
        try:
            os.kill(pid, 9)  # SIGKILL
        except OSError:
            pass
    reap()


def exit_process(aborted: bool) -> NoReturn:
    """The worker's last steps: ``atexit`` handlers, the descendant sweep, ``os._exit(0)``.

    After end of input (``aborted``) all of it must fit in the one second the
    protocol allows, so the user's ``atexit`` handlers get 0.3 s; after a clean
    shutdown they get 2 s. ``os._exit`` because threads stuck in user code
    must not keep the process alive.
    """
    import atexit
    import threading

    runner = threading.Thread(target=atexit._run_exitfuncs, name="snakepit-atexit", daemon=True)
    runner.start()
    runner.join(0.3 if aborted else 2.0)
    kill_descendants(0.2)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(0)
