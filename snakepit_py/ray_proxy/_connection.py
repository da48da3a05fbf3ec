"""The proxy's one connection to Ray: started on demand, owned by one long-lived thread.

Why a thread of our own: Ray starts its local processes with
``PR_SET_PDEATHSIG`` tied to the *thread* that called ``ray.init``, so that
thread must live as long as the proxy; a call's worker thread would take the
cluster down with it. Ray refuses to install its SIGTERM handler off the main
thread (it logs a warning), so the runtime's own SIGTERM handler stays in place.
"""

from __future__ import annotations

import atexit
import glob
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from ._auth import configure_auth
from ._options import ProxyOptions
from ._procs import ProcessSet, descendants, start_time
from .errors import RayProxyError

__all__ = ["RayConnection", "unignore_sigint"]

log = logging.getLogger("snakepit_py.ray_proxy")
_PREFIX = "snakepit-ray-"
REFRESH_S = 2.0


class RayConnection:
    """Connects on first :meth:`ensure`, records Ray's processes, tears down at exit."""

    def __init__(self, opts: ProxyOptions) -> None:
        self.opts = opts
        self.procs = ProcessSet()
        self.temp_dir: str | None = None
        self.auth = "unset"
        self.snapshot: dict[str, Any] = {}
        self._ray: Any = None
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._before: set[int] = set()
        self._closed = False
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._told: set[int] = set()

    @property
    def connected(self) -> bool:
        """True once ``ray.init`` succeeded (and until exit)."""
        return self._ready.is_set() and self._error is None and not self._closed

    def ensure(self, timeout: float = 120.0) -> Any:
        """Connect if not yet connected and return the ``ray`` module.

        Raises:
            RayProxyError: Ray is not installed, or could not start or connect.
        """
        if self._ray is not None and self.connected:
            return self._ray
        with self._lock:
            if self._closed:
                raise RayProxyError("the Ray proxy is shutting down")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._own, name="snakepit-ray-owner", daemon=True
                )
                self._thread.start()
        if not self._ready.wait(timeout):
            raise RayProxyError(f"Ray did not come up within {timeout} s")
        if self._error is not None:
            raise RayProxyError(
                f"cannot connect to Ray at {self.opts.ray_address!r}: "
                f"{type(self._error).__name__}: {self._error}"
            ) from self._error
        return self._ray

    # --- the owner thread -----------------------------------------------------------------

    def _own(self) -> None:
        try:
            self._connect()
        except BaseException as exc:  # reported to every caller of ensure()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        # Stay alive (see the module docstring) and keep the health snapshot fresh.
        while not self._stop.wait(REFRESH_S):
            self._refresh()

    def _connect(self) -> None:
        opts = self.opts
        os.environ["RAY_DISABLE_USAGE_STATS"] = "1"
        # Only the command line names the cluster: never Ray's implicit RAY_ADDRESS.
        os.environ.pop("RAY_ADDRESS", None)
        self.auth = configure_auth(opts.auth_mode, opts.local, opts.auth_token_file)
        try:
            import ray
        except ImportError as exc:
            raise RayProxyError(
                "Ray is not installed; install the extra: pip install 'snakepit_py[ray]'"
            ) from exc
        self._before = set(descendants())
        kwargs: dict[str, Any] = {"namespace": opts.namespace, "log_to_driver": False}
        if opts.local:
            _remove_stale_dirs(opts.temp_dir or tempfile.gettempdir())
            self.temp_dir = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=opts.temp_dir)
            self._start_watchdog()
            kwargs.update(
                num_cpus=opts.num_cpus,
                num_gpus=opts.num_gpus,
                object_store_memory=opts.object_store_mb * 2**20,
                include_dashboard=False,
                _temp_dir=self.temp_dir,
            )
        # Registered before ray.init so that a failure half-way still sweeps.
        atexit.register(self.close)
        term_handler = signal.getsignal(signal.SIGTERM)
        ray.init(address=opts.ray_address, **kwargs)
        # Our close() replaces Ray's own exit hook: Ray's graceful shutdown takes
        # ~1.5 s, more than the runtime's exit budget.
        atexit.unregister(ray.shutdown)
        if signal.getsignal(signal.SIGTERM) is not term_handler:  # a future Ray might
            log.error("ray.init replaced the SIGTERM handler; the worker may not drain cleanly")
        self._ray = ray
        self._refresh()

    def _start_watchdog(self) -> None:
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_watchdog.py")
        self._watchdog = subprocess.Popen(
            [sys.executable, script, self.temp_dir or ""],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C or group signal must not reach it
            # the worker's guard spares it after a crash: it removes the temp dir, then exits
            env={**os.environ, "SNAKEPIT_GUARD_SPARE": "1"},
        )
        self._before.add(self._watchdog.pid)

    def _record_new(self) -> None:
        """Record Ray's processes started since the last look, and tell the watchdog."""
        self.procs.record({p: t for p, t in descendants().items() if p not in self._before})
        fresh = [p for p in self.procs.known if p not in self._told]
        if self._watchdog is not None and fresh:
            lines = "".join(f"{p} {self.procs.known[p]}\n" for p in fresh)
            try:
                assert self._watchdog.stdin is not None
                self._watchdog.stdin.write(lines.encode())
                self._watchdog.stdin.flush()
                self._told.update(fresh)
            except OSError:
                pass

    def _refresh(self) -> None:
        if self.opts.local:
            self._record_new()
        ray = self._ray
        try:
            snapshot = {
                "resources": _plain(ray.cluster_resources()),
                "available": _plain(ray.available_resources()),
                "nodes": sum(1 for n in ray.nodes() if n.get("Alive")),
            }
        except Exception as exc:  # a health snapshot must never kill the owner thread
            snapshot = {"error": f"{type(exc).__name__}: {exc}"}
        snapshot["refreshed_ms"] = int(time.time() * 1000)
        self.snapshot = snapshot

    # --- reporting and exit ---------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Cheap connection facts for health reports (no Ray call)."""
        return {
            "address": self.opts.ray_address,
            "connected": self.connected,
            "error": None if self._error is None else _describe(self._error),
            "auth": self.auth,
            "temp_dir": self.temp_dir,
            "ray_pids": sorted(self.procs.alive()) if self.opts.local else [],
            **self.snapshot,
        }

    def close(self) -> None:
        """Tear down (registered with atexit): a private Ray is killed outright and its
        temp dir removed; a remote cluster is disconnected from, within a bound."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        ray = self._ray
        if self.opts.local:
            self.procs.record({p: t for p, t in descendants().items() if p not in self._before})
            self.procs.sweep(grace=0.1)
            if self.temp_dir:
                shutil.rmtree(self.temp_dir, ignore_errors=True)
            if self._watchdog is not None and self._watchdog.stdin is not None:
                self._watchdog.stdin.close()  # nothing left for it to do: it exits
        elif ray is not None:
            t = threading.Thread(target=ray.shutdown, name="snakepit-ray-shutdown", daemon=True)
            t.start()
            t.join(1.0)


def _ignore(signum: int, frame: Any) -> None:
    """SIGINT does nothing to the proxy (the runtime's rule), as a handler, not SIG_IGN."""


def unignore_sigint() -> bool:
    """Swap an ignored SIGINT (SIG_IGN) for a handler that does nothing.

    The proxy still survives Ctrl-C, but processes it starts no longer inherit
    SIG_IGN (exec resets handlers, not ignores). Ray needs that: a plain
    ``ray.cancel`` interrupts a running task with ``_thread.interrupt_main``,
    which does nothing in a worker whose SIGINT is ignored. Main thread only;
    returns whether it swapped.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        return False
    signal.signal(signal.SIGINT, _ignore)
    return True


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _plain(resources: dict[str, Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in resources.items()}


def _remove_stale_dirs(parent: str) -> None:
    """Remove temp dirs left by proxies that were killed before they could clean up."""
    for path in glob.glob(os.path.join(parent, _PREFIX + "*")):
        m = re.match(re.escape(_PREFIX) + r"(\d+)-", os.path.basename(path))
        if m and start_time(int(m.group(1))) is None:
            shutil.rmtree(path, ignore_errors=True)
