"""The guard: a small parent that outlives the worker and kills what it leaves behind.

A worker that dies on SIGKILL, a segfault, ``os._exit`` or the OOM killer
cannot sweep its own descendants. So on Linux the process the supervisor
starts forks before anything else happens (before user code is imported, no
threads yet) and splits in two:

- the parent becomes the *guard*: a child subreaper (every process the worker
  leaves behind, ``setsid`` and double-forked ones included, is re-parented to
  it), with the protocol descriptors closed, forwarding SIGTERM, SIGINT,
  SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the worker. It waits for the worker,
  then kills every descendant left (SIGKILL at once after a crash; SIGTERM
  and 0.2 s of grace after a clean exit, which swept its own already) and
  exits with the worker's status: its exit code, or 128 + the signal that
  killed it, as a shell reports it;
- the child is the *worker* and runs everything else. It asks the kernel for
  SIGKILL should the guard die first (``PR_SET_PDEATHSIG``).

The guard is what the supervisor's OS pid names; the worker's own pid is in
``:ready`` (``pid``) next to ``guard_pid``. Kill the worker, never the guard
alone: a guard killed first cannot sweep. Costs: one ``fork`` (~0.4 ms) before
``:ready``; the guard shares the worker's pages as they were at the fork (a
few MB of its own). ``SNAKEPIT_GUARD=0`` turns it off (then the worker is its
own subreaper and sweeps only on a clean exit). It is also off when threads
already run at the fork (a script that started threads before
``snakepit.run()``): the guard would carry a copy of them. A descendant
started with ``SNAKEPIT_GUARD_SPARE=1`` in its environment is not killed after
a crash (a sweeper that must finish its own clean-up and then ends by itself).
"""

from __future__ import annotations

import os
import sys
import time

from . import _lifecycle

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["guard_pid", "start"]

_PR_SET_CHILD_SUBREAPER, _PR_SET_PDEATHSIG = 36, 1
_SIGKILL = 9
_FORWARDED = (1, 2, 3, 10, 12, 15)  # HUP INT QUIT USR1 USR2 TERM

# The guard's pid as the worker sees it; None when the worker runs unguarded.
guard_pid: int | None = None


def _prctl(option: int, value: int) -> bool:
    try:
        from ._cproc import set_child_subreaper, set_parent_death_signal

        if option == _PR_SET_CHILD_SUBREAPER:
            return bool(set_child_subreaper(value))
        return bool(set_parent_death_signal(value))
    except ImportError:
        pass
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def start() -> int | None:
    """Split into guard and worker (see the module docstring); returns in the worker only.

    Returns:
        The guard's pid, or None when the worker runs unguarded (not Linux,
        ``SNAKEPIT_GUARD=0``, threads already running, or the kernel refused).
    """
    global guard_pid
    if guard_pid is not None:
        return guard_pid
    if not sys.platform.startswith("linux") or os.environ.get("SNAKEPIT_GUARD", "1") == "0":
        return None
    if len(sys._current_frames()) > 1:
        print(
            "snakepit-py: threads were started before the worker: running without the guard "
            "process (descendants may outlive a worker killed with SIGKILL; see docs/runtime.md)",
            file=sys.stderr,
        )
        return None
    if not _prctl(_PR_SET_CHILD_SUBREAPER, 1):
        return None
    parent = os.getpid()
    for stream in (sys.stdout, sys.stderr):  # nothing buffered may be written twice
        try:
            stream.flush()
        except Exception:
            pass
    worker = os.fork()
    if worker == 0:
        # A subreaper mark is not inherited; the parent-death signal covers the guard dying.
        _prctl(_PR_SET_PDEATHSIG, _SIGKILL)
        if os.getppid() != parent:  # the guard died before the line above
            os._exit(1)
        guard_pid = parent
        return parent
    _guard(worker)


def _guard(worker: int) -> NoReturn:
    """The guard's whole life: forward signals, wait for the worker, sweep, exit. Never returns."""
    try:
        import _signal as signal
    except ImportError:  # pragma: no cover - other interpreters
        import signal

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(worker, signum)
        except OSError:
            pass

    for signum in _FORWARDED:
        signal.signal(signum, forward)
    # The protocol descriptors are the worker's alone: when it dies, the
    # supervisor must see its pipes close, not wait for the guard.
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.closerange(3, _max_fd())
    status = 0
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:  # pragma: no cover - the worker is our child
            break
        if pid == worker:
            break
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        _lifecycle.kill_descendants(0.2)
    else:
        _kill_all()
    os._exit(code if code >= 0 else 128 - code)


def _kill_all() -> None:
    """SIGKILL every descendant until none is left (one may fork while we look), for 1 s at most.

    A process started with ``SNAKEPIT_GUARD_SPARE=1`` in its environment is
    spared: a crash sweeper of the worker's own that must outlive it briefly
    and ends by itself (the Ray proxy's watchdog, which removes Ray's temp dir).
    """
    end = time.monotonic() + 1.0
    spared: set[int] = set()
    while True:
        pids = [p for p in _lifecycle.descendants() if p not in spared]
        spared.update(p for p in pids if _spared(p))
        pids = [p for p in pids if p not in spared]
        if not pids or time.monotonic() > end:
            break
        for pid in pids:
            try:
                os.kill(pid, _SIGKILL)
            except OSError:
                pass
        _lifecycle.reap()
        time.sleep(0.001)
    _lifecycle.reap()


def _spared(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return b"SNAKEPIT_GUARD_SPARE=1" in f.read().split(b"\0")
    except OSError:
        return False


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):  # pragma: no cover
        return 4096
