"""A worker that starts descendants of every kind and then dies in a chosen way."""

import os
import subprocess
import sys

import snakepit_py as snakepit

_SLEEP = ["sleep", "600"]
# A grandchild in a session of its own whose parent exits at once (a daemon's double fork).
_DAEMON = (
    "import subprocess, sys; "
    "p = subprocess.Popen(['sleep', '600'], start_new_session=True, "
    "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)"
)


@snakepit.method
def spawn(kind: str) -> int:
    """Start a descendant that sleeps; returns its pid.

    ``plain``: a child; ``setsid``: a child in a new session; ``daemon``: a
    double-forked grandchild in a new session, re-parented away from us.
    """
    if kind == "plain":
        return subprocess.Popen(_SLEEP).pid
    if kind == "setsid":
        return subprocess.Popen(_SLEEP, start_new_session=True).pid
    if kind == "daemon":
        out = subprocess.run([sys.executable, "-c", _DAEMON], capture_output=True, text=True)
        return int(out.stdout)
    raise ValueError(f"unknown kind {kind!r}")


@snakepit.method
def die(how: str) -> None:
    """End this process abruptly: ``sigkill``, ``segfault``, ``exit`` (``os._exit(7)``) or
    ``oom`` (allocate until the kernel's OOM killer ends it: run it in a memory cgroup)."""
    if how == "sigkill":
        os.kill(os.getpid(), 9)
    elif how == "segfault":
        import ctypes

        ctypes.string_at(0)
    elif how == "exit":
        os._exit(7)
    elif how == "oom":
        hoard = []
        while True:
            hoard.append(b"x" * (16 << 20))  # written, so every page is really used
    raise ValueError(f"unknown way to die {how!r}")
