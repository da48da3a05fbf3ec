"""One thread that fires call deadlines.

Most deadlines never fire (the call finishes first), so entries are not
removed when a call ends: an entry is only ``(when, serial, call_id)``, three
numbers the garbage collector does not track, and the owner checks on firing
whether that call is still the one running. The heap is rebuilt from the live
calls whenever stale entries dominate, so it stays small. The thread is woken
only when a new deadline is earlier than every pending one, which for calls
with equal timeouts is almost never: the hot path pays one heap push.
"""

from __future__ import annotations

import _thread
import time

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterable

__all__ = ["Deadlines"]

Entry = tuple[float, int, int]


class Deadlines:
    """Calls ``fire(serial, call_id)`` at (or soon after) each deadline added.

    Args:
        fire: called on the timer thread for each deadline reached.
        live: returns the entries of the calls still running (for compaction).
    """

    def __init__(self, fire: Callable[[int, int], None], live: Callable[[], Iterable[Entry]]):
        self._fire = fire
        self._live = live
        self._heap: list[Entry] = []
        self._lock = _thread.allocate_lock()
        # The condition and the timer thread come with the first deadline (most
        # workers never arm one, and `threading` is not free to import).
        self._cond: threading.Condition | None = None
        self._thread: threading.Thread | None = None
        self._limit = 256
        self._push: Callable[[list[Entry], Entry], None] | None = None  # heapq.heappush

    def add(self, when: float, serial: int, call_id: int) -> None:
        """Schedule a deadline at monotonic time ``when``."""
        with self._lock:  # the Condition's own lock: cheaper to enter than the Condition
            heap = self._heap
            earliest = heap[0][0] if heap else None
            push = self._push
            if push is None:  # heapq on first use: most workers never arm a deadline
                import heapq

                push = self._push = heapq.heappush
            push(heap, (when, serial, call_id))
            if len(heap) > self._limit:
                self._compact()
            if self._thread is None:
                import threading

                self._cond = threading.Condition(self._lock)
                self._thread = threading.Thread(
                    target=self._run, name="snakepit-deadlines", daemon=True
                )
                self._thread.start()
            elif earliest is None or when < earliest:
                self._cond.notify()  # type: ignore[union-attr]

    def _compact(self) -> None:
        import heapq

        heap = list(self._live())
        heapq.heapify(heap)
        self._heap[:] = heap
        self._limit = max(256, 4 * len(heap))

    def _run(self) -> None:
        from heapq import heappop

        heap = self._heap
        cond = self._cond
        assert cond is not None  # made before this thread started
        while True:
            with cond:
                while not heap:
                    cond.wait()
                delay = heap[0][0] - time.monotonic()
                if delay > 0:
                    cond.wait(delay)
                    continue
                _, serial, call_id = heappop(heap)
            try:
                self._fire(serial, call_id)
            except Exception:  # a deadline must never kill the timer thread
                pass
