"""One thread that fires call deadlines.

Most deadlines never fire (the call finishes first), so entries are never
removed: the callback checks whether its call is still running. The thread
is woken only when a new deadline is earlier than every pending one, which for
calls with equal timeouts is almost never; the hot path pays one heap push.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

__all__ = ["Deadlines"]


class Deadlines:
    """Calls ``fn()`` at (or soon after) ``when`` for each ``add(when, fn)``."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._count = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def add(self, when: float, fn: Callable[[], None]) -> None:
        """Schedule ``fn`` for monotonic time ``when``."""
        with self._cond:
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (when, next(self._count), fn))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="snakepit-deadlines", daemon=True
                )
                self._thread.start()
            elif earliest is None or when < earliest:
                self._cond.notify()

    def _run(self) -> None:
        heap = self._heap
        while True:
            with self._cond:
                while not heap:
                    self._cond.wait()
                when = heap[0][0]
                delay = when - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                _, _, fn = heapq.heappop(heap)
            try:
                fn()
            except Exception:  # a deadline callback must never kill the thread
                pass
