"""What a worker counts about its calls, kept cheaply, read as plain data (docs/observability.md).

Every call adds one observation to its method's duration histogram; that is
all the hot path does (``CallRunner._finish``): ``observe(hist, ctx.t0)``, in
C when ``_cmetrics`` was built (one clock read and two additions: in Python
the same costs 4.5 % of a small call), from ``t0``, the clock read the call's
deadline is computed from anyway. The rest is derived when someone reads:

- a histogram is a bytearray of 65 int64: counts by the duration's bit
  length in nanoseconds (bucket ``k`` holds durations below ``2**k`` ns),
  then their sum, so observing is ``hist[took.bit_length()] += 1``: no
  search, no float;
- a method's call count is the sum of its buckets, its ``ok`` count that sum
  minus its errors (counted by kind, off the hot path);
- the queue-wait histogram is observed only for calls that actually waited
  (a sync call queued behind another, an async call handed to the event
  loop); every other call waited 0 s, and is added to its first bucket when
  read;
- chunks streamed are the call's own sequence number at its end.

``snapshot`` is the plain data a health report carries under ``"metrics"``
(binary keys: every supervisor decodes them); ``transport/_metrics_http.py``
turns the same data into Prometheus metric families.
"""

from __future__ import annotations

import _thread
import os
from time import monotonic

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from typing import Any

    from ._table import CallTable

__all__ = [
    "Metrics", "clock", "SUM", "SLOTS", "observe_beam_call", "observe_model_load",
    "process_snapshot", "sources",
]  # fmt: skip

# time.monotonic(): a call's deadline and its start share one read of it (its t0).
clock = monotonic

# A histogram: counts 0..63 by bit length (bucket k: below 2**k ns), then the sum (ns).
SUM = 64
SLOTS = 65


def new_histogram() -> bytearray:
    """An empty histogram: ``SLOTS`` native int64."""
    return bytearray(8 * SLOTS)


def _observe(hist: bytearray, t0: float) -> None:
    """Add the time since ``t0`` (``clock()``, seconds) to ``hist``, in ns."""
    took = max(int((clock() - t0) * 1e9), 0)
    view = memoryview(hist).cast("q")
    view[min(took.bit_length(), SUM - 1)] += 1
    view[SUM] += took


try:  # the C version of _observe (optional: see _cmetrics.c)
    from ._cmetrics import observe
except ImportError:  # pragma: no cover - built without a C compiler
    observe = _observe


def _counts(hist: bytearray) -> list[int]:
    return memoryview(bytes(hist)).cast("q").tolist()


# The Metrics of every dispatcher serving now (a worker process usually has one).
_SOURCES: list[Metrics] = []
# Process-wide: beam calls (function -> histogram + {kind: n}) and model loads.
_lock = _thread.allocate_lock()
_beam: dict[str, tuple[bytearray, dict[str, int]]] = {}
_model_loads = new_histogram()


# "HOST:PORT" of this process's Prometheus endpoint (--metrics-addr), once it listens.
exporter: str | None = None


def sources() -> list[Metrics]:
    """The metrics of the connections serving now."""
    return list(_SOURCES)


class Metrics:
    """One connection's call metrics.

    Attributes:
        methods: method name -> its duration histogram (``new_histogram``); made
            for every method the registry serves, so the hot path never misses.
        errors: method name -> {error kind: calls}.
        chunks: method name -> chunks streamed.
        queue_wait: the histogram of the waits observed (calls that queued).
        refused: error kind -> calls refused before they ran (unknown method,
            bad arguments, overloaded, shutting down...).
    """

    __slots__ = ("methods", "errors", "chunks", "queue_wait", "refused", "table", "_lock")

    def __init__(self, names: list[str], table: CallTable) -> None:
        self.methods: dict[str, bytearray] = {name: new_histogram() for name in names}
        self.errors: dict[str, dict[str, int]] = {}
        self.chunks: dict[str, int] = {}
        self.queue_wait = new_histogram()
        self.refused: dict[str, int] = {}
        self.table = table
        self._lock = table.lock

    def serving(self) -> None:
        """This connection serves now: the process's exporter reads it."""
        _SOURCES.append(self)

    def stopped(self) -> None:
        """This connection stopped serving."""
        if self in _SOURCES:
            _SOURCES.remove(self)

    # --- observing (off the hot path; the hot path is written into CallRunner._finish) ----

    def waited(self, ctx: Any) -> None:
        """Call ``ctx`` starts running now after waiting since its ``t0``; it runs from now on."""
        t0 = ctx.t0
        ctx.t0 = clock()
        observe(self.queue_wait, t0)

    def failed(self, method: str, kind: str) -> None:
        """A call of ``method`` ended with error ``kind``; the caller holds the table's lock."""
        errors = self.errors.get(method)
        if errors is None:
            errors = self.errors[method] = {}
        kind = f"{kind}"  # (an Atom: a plain str in the report)
        errors[kind] = errors.get(kind, 0) + 1

    def add_chunks(self, method: str, n: int) -> None:
        """A stream of ``method`` ended having sent ``n`` chunks; the caller holds the lock."""
        self.chunks[method] = self.chunks.get(method, 0) + n

    def refuse(self, kind: str) -> None:
        """A call was refused with ``kind`` before it ran."""
        with self._lock:
            self.refused[kind] = self.refused.get(kind, 0) + 1

    # --- reading ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Every count as plain data (the health report's ``"metrics"``; docs/observability.md)."""
        with self._lock:
            methods = {n: _counts(h) for n, h in self.methods.items() if any(h)}
            errors = {n: dict(e) for n, e in self.errors.items()}
            chunks = dict(self.chunks)
            waits = _counts(self.queue_wait)
            refused = dict(self.refused)
            inflight = len(self.table.calls)
        calls = 0
        by_method: dict[str, Any] = {}
        for name, hist in methods.items():
            entry = histogram(hist)
            calls += entry["count"]
            errs = errors.get(name, {})
            entry["ok"] = entry["count"] - sum(errs.values())
            entry["errors"] = errs
            entry["chunks"] = chunks.get(name, 0)
            by_method[name] = entry
        # every call that did not queue waited 0 s: the first bucket
        waits[0] += max(calls - sum(waits[:SUM]), 0)
        from . import _state

        return {
            "methods": by_method,
            "queue_wait": histogram(waits),
            "refused": refused,
            "inflight": inflight,
            "loaded_models": len(_state.loaded_models()),
            "model_loads": histogram(_counts(_model_loads)),
            "beam_calls": _beam_snapshot(),
            "process": process_snapshot(),
        }


def histogram(hist: list[int]) -> dict[str, Any]:
    """A histogram list as plain data: ``count``, ``sum_ns`` and sparse ``buckets`` {k: n}."""
    buckets = {k: n for k, n in enumerate(hist[:SUM]) if n}
    return {"count": sum(buckets.values()), "sum_ns": hist[SUM], "buckets": buckets}


def observe_beam_call(name: str, started: float, kind: str | None) -> None:
    """A beam call to ``name`` begun at ``clock()`` value ``started`` ended (``kind`` None: ok)."""
    with _lock:
        entry = _beam.get(name)
        if entry is None:
            entry = _beam[name] = (new_histogram(), {})
        hist, errors = entry
        observe(hist, started)
        if kind is not None:
            errors[kind] = errors.get(kind, 0) + 1


def observe_model_load(seconds: float) -> None:
    """A model took ``seconds`` to load (``ModelCache``, or your own loader)."""
    observe(_model_loads, clock() - max(seconds, 0.0))


def _beam_snapshot() -> dict[str, Any]:
    with _lock:
        entries = {n: (_counts(h), dict(e)) for n, (h, e) in _beam.items()}
    out = {}
    for name, (hist, errors) in entries.items():
        entry = histogram(hist)
        entry["ok"] = entry["count"] - sum(errors.values())
        entry["errors"] = errors
        out[name] = entry
    return out


_TICKS = 0


def process_snapshot() -> dict[str, Any]:
    """CPU seconds, resident memory, open descriptors and start time of this process."""
    global _TICKS
    times = os.times()
    info: dict[str, Any] = {"cpu_seconds": round(times.user + times.system, 3)}
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = f.read().split()
        size = os.sysconf("SC_PAGE_SIZE")
        info["resident_memory_bytes"] = int(pages[1]) * size
        info["virtual_memory_bytes"] = int(pages[0]) * size
        info["open_fds"] = len(os.listdir("/proc/self/fd"))
        if not _TICKS:
            _TICKS = os.sysconf("SC_CLK_TCK")
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime"))
        info["start_time_seconds"] = boot + int(fields[19]) / _TICKS
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    return info
