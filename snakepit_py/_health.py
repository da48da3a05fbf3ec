"""What a worker says about itself: ``:ready`` info, health, ``describe``, ``:bye`` stats."""

from __future__ import annotations

import os
import sys
import time

from . import _metrics, _state
from ._version import __version__
from ._wire import atom_keys
from .codec import Atom

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from typing import Any

    from ._metrics import Metrics
    from ._registry import Registry
    from ._table import CallTable

__all__ = ["Health", "accelerators", "rss_mb"]

A = Atom

# (1.1) What this worker can do beyond protocol 1.0, listed in :ready only to a
# supervisor that says it reads protocol 1.1 (SNAKEPIT_PROTOCOL): a 1.0
# supervisor decodes with [:safe], and these atoms are not in its atom table.
FEATURES = ("beam_call",)


def peer_minor(env: dict | None = None) -> int:
    """The protocol 1 minor version the supervisor reads (``SNAKEPIT_PROTOCOL=1.1``; 0 if unset)."""
    value = (os.environ if env is None else env).get("SNAKEPIT_PROTOCOL", "")
    major, _, minor = value.strip().partition(".")
    if major != "1" or not minor.isdigit():
        return 0
    return int(minor)


def rss_mb() -> float:
    """This process's resident memory in MiB (0.0 where /proc cannot tell)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return 0.0


# The optional C accelerators (setup.py), by what they speed up; each is in use
# when the runtime imported it (it falls back to Python when it is missing).
_ACCELERATORS = (
    ("codec", "snakepit_py.codec._cetf"),
    ("process_controls", "snakepit_py._cproc"),
    ("metrics", "snakepit_py._cmetrics"),
)


def accelerators() -> dict[str, bool]:
    """Which C accelerators this worker runs with (``snakepit-py doctor`` says why not)."""
    return {what: module in sys.modules for what, module in _ACCELERATORS}


class Health:
    """The reports of one connection's worker.

    Args:
        registry: the worker's methods (and its ``health_check`` hook).
        table: the connection's calls in flight and counts.
        worker_id: name used in reports.
        threads: sync slots.
        max_inflight: calls accepted at once.
        metrics: the connection's call metrics (the report's ``"metrics"``).
    """

    def __init__(self, registry: Registry, table: CallTable, worker_id: str, threads: int,
                 max_inflight: int, metrics: Metrics | None = None) -> None:  # fmt: skip
        self.registry = registry
        self.table = table
        self.worker_id = worker_id
        self.threads = threads
        self.max_inflight = max_inflight
        self.metrics = metrics
        self.started = time.monotonic()

    def ready(self) -> dict:
        """The ``{:ready, info}`` map."""
        return {
            A("protocol"): 1,
            A("pid"): os.getpid(),
            A("worker_id"): self.worker_id,
            A("python"): sys.version.split()[0],
            A("version"): __version__,
            A("methods"): sorted(self.registry.methods),
            A("threads"): self.threads,
            A("max_inflight"): self.max_inflight,
            **({A("features"): [A(f) for f in FEATURES]} if peer_minor() >= 1 else {}),
            # (1.x) A binary key: every supervisor decodes it (docs/observability.md).
            **({"metrics_addr": _metrics.exporter} if _metrics.exporter else {}),
            "accelerators": accelerators(),  # (1.x) binary keys, booleans
        }

    def report(self) -> dict:
        """The health report (docs/protocol.md §4), with the user's hook merged in."""
        extra: dict[Any, Any] = {}
        loaded = _state.loaded_models()
        hook = self.registry.health_hook
        if hook is not None:
            try:
                got = hook()
                if isinstance(got, dict):
                    extra = dict(got)
                    if "loaded_models" in extra:
                        loaded = list(extra.pop("loaded_models") or [])
            except Exception as exc:  # a broken hook must not break health checks
                extra = {"health_check_error": f"{type(exc).__name__}: {exc}"}
        table = self.table
        if table.draining:
            status = "draining"
        elif len(table.calls) >= self.max_inflight or table.running_sync() >= self.threads:
            status = "busy"
        else:
            status = "healthy"
        return {
            A("status"): A(status),
            A("worker_id"): self.worker_id,
            A("pid"): os.getpid(),
            A("uptime_ms"): self.uptime_ms(),
            A("memory_mb"): rss_mb(),
            A("inflight"): len(table.calls),
            A("served"): table.served,
            A("failed"): table.failed,
            A("loaded_models"): loaded,
            A("extra"): extra,
            # (1.x) A binary key, binary keys inside: every supervisor decodes them.
            **({"metrics": self.metrics.snapshot()} if self.metrics is not None else {}),
            "accelerators": accelerators(),
        }

    def describe(self) -> dict:
        """The method catalogue with atom keys, as sent on the wire."""
        return atom_keys(self.registry.describe())

    def stats(self) -> dict:
        """The ``:bye`` statistics."""
        return {
            A("served"): self.table.served,
            A("failed"): self.table.failed,
            A("uptime_ms"): self.uptime_ms(),
        }

    def uptime_ms(self) -> int:
        """Milliseconds since this connection started."""
        return int((time.monotonic() - self.started) * 1000)
