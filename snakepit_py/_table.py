"""The calls in flight on one connection: the table, its lock, the sync slots, the counts.

A plain record shared by the dispatcher (which admits calls into it and
hands them a sync slot), the call runner (which takes them out as it writes
their terminals, and passes a slot on to the next queued call) and the health
report (which counts them). Its fields are public: those hot-path sections
work on them inline under ``lock``, since a method call each would add a
few percent to every call. What is off the hot path is a method here.
"""

from __future__ import annotations

import _thread
import time
from _collections import deque  # collections.deque itself, without importing collections

from ._context import RUNNING

__all__ = ["CallTable"]

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    import threading

    from ._context import CallContext


class CallTable:
    """The calls one dispatcher has accepted and not yet answered.

    Attributes:
        lock: guards every field below.
        calls: call id -> its context, from acceptance to terminal.
        sync_free: sync slots free (``threads`` at the start).
        sync_queue: sync calls accepted while no slot was free, in arrival order.
        served: calls answered ``:ok``.
        failed: ``:error`` frames sent (refusals included).
        draining: no new calls are accepted (``:shutdown``, SIGTERM, end of input).
        idle: notified when the last call of a draining table ends (made by ``wait_idle``).
    """

    __slots__ = ("lock", "calls", "sync_free", "sync_queue", "served", "failed", "draining",
                 "idle")  # fmt: skip

    def __init__(self, threads: int) -> None:
        self.lock = _thread.allocate_lock()
        self.calls: dict[int, CallContext] = {}
        self.sync_free = threads
        self.sync_queue: deque[CallContext] = deque()
        self.served = 0
        self.failed = 0
        self.draining = False
        self.idle: threading.Condition | None = None

    def snapshot(self) -> list[CallContext]:
        """The calls in flight right now."""
        with self.lock:
            return list(self.calls.values())

    def running_sync(self) -> int:
        """How many sync calls are running user code now.

        Counted from the calls in flight (not from free slots), so a call whose
        terminal was just sent never counts, even before its thread moves on.
        """
        with self.lock:
            return sum(1 for c in self.calls.values() if c.state == RUNNING and not c.spec.is_async)

    def wait_idle(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the table to empty; True if it did."""
        import threading  # at shutdown only: `threading` is not free to import at start

        end = time.monotonic() + seconds
        with self.lock:
            if self.idle is None:
                self.idle = threading.Condition(self.lock)
            while self.calls:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.idle.wait(left)
        return True
