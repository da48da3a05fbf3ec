"""The handles a test holds for a call it sent: PendingCall (one answer) and Stream (chunks)."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any, NoReturn, Protocol

from ..codec import Atom as _A
from ..errors import CallError


class Sender(Protocol):
    """What a call handle needs from its supervisor."""

    timeout: float

    def cancel(self, call_id: int) -> None: ...

    def credit(self, call_id: int, n: int) -> None: ...


class PendingCall:
    """A call that has been sent; ``wait()`` returns its result or raises CallError."""

    def __init__(self, sup: Sender, call_id: int, credit: int | None = None) -> None:
        self.sup = sup
        self.id = call_id
        self.events: queue.SimpleQueue[tuple[str, Any, Any]] = queue.SimpleQueue()
        self.outcome: tuple[str, Any] | None = None
        # Chunks the worker may send in all (the first grant plus every :credit);
        # None: unbounded. Kept by the supervisor, read by Stream.
        self.granted: int | None = credit
        self.timeout_ms: int | None = None  # the call's deadline on the worker, if any
        self._answered = False

    def done(self) -> bool:
        """True once the terminal message (``:ok`` or ``:error``) has arrived."""
        return self._answered or self.outcome is not None

    def _answer(self, kind: str) -> None:
        """Called by the supervisor's reader for each message of this call."""
        if kind != "chunk":
            self._answered = True

    def lost(self, code: int | None) -> None:
        """The worker exited (status ``code``) before answering: end with ``worker_crashed``."""
        self._answered = True
        error: dict[Any, Any] = {
            _A("kind"): _A("worker_crashed"),
            _A("type"): "WorkerExited",
            _A("message"): f"the worker exited (status {code}) before answering",
            _A("traceback"): None,
            _A("details"): {},
        }
        self.events.put(("error", error, None))

    def next_event(self, timeout: float | None = 30.0) -> tuple[str, Any, Any]:
        """The next ``("chunk", seq, data)``, ``("ok", result, None)`` or ``("error", map, None)``.

        Raises:
            TimeoutError: nothing arrived in time.
        """
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"call {self.id}: nothing arrived within {timeout} s") from None

    def wait(self, timeout: float | None = 30.0) -> Any:
        """Wait for the terminal message (skipping chunks) and return the result.

        Raises:
            CallError: the call ended with an error.
            TimeoutError: no terminal message in time.
        """
        end = None if timeout is None else time.monotonic() + timeout
        while self.outcome is None:
            left = None if end is None else max(0.0, end - time.monotonic())
            kind, value, _ = self.next_event(left)
            if kind != "chunk":
                self.outcome = (kind, value)
        kind, value = self.outcome
        if kind == "error":
            raise CallError(value)
        return value


# How long iterating a stream whose credit is used up waits for its terminal
# message before saying that the worker is waiting for credit.
CREDIT_WAIT_S = 10.0  # (generous: a loaded machine is slow to send a terminal too)


class Stream:
    """Iterates the chunks of a streaming call; ``result`` holds the return value at the end.

    ``credit=N`` alone is the first grant, not a window: after N chunks the worker
    waits until ``credit(n)`` grants more. With ``auto_credit`` the stream grants
    credit back as chunks are consumed, like a real consumer would. Iterating a
    stream whose credit is used up fails after ``CREDIT_WAIT_S`` (10 s) with a
    TimeoutError that says so, instead of waiting out the supervisor's timeout.
    """

    def __init__(self, call: PendingCall, credit: int | None, auto_credit: bool) -> None:
        self.call = call
        self.id = call.id
        self.result: Any = None
        self.finished = False
        self._window = credit if auto_credit and credit else 0
        self._consumed = 0
        self.seqs: list[int] = []

    def __iter__(self) -> Iterator[Any]:
        return self

    def _starved(self) -> bool:
        """True when the worker has sent every chunk it was granted."""
        granted = self.call.granted
        return granted is not None and len(self.seqs) >= granted

    def _next_event(self, timeout: float | None) -> tuple[str, Any, Any]:
        starved = self._starved()
        if starved and timeout is not None and self._window == 0:
            # (a call with a deadline ends by then: wait for its terminal that long)
            timeout = min(timeout, CREDIT_WAIT_S + (self.call.timeout_ms or 0) / 1000)
        try:
            return self.call.next_event(timeout)
        except TimeoutError:
            if not self._starved():
                raise
            raise TimeoutError(
                f"call {self.id}: the stream has received all {self.call.granted} chunks of "
                f"credit it was granted, and the worker sent nothing more within {timeout} s: "
                "it is waiting for credit. `credit=N` is the first grant, not a window: "
                "grant more with stream.credit(n), or pass auto_credit=True to stream()"
            ) from None

    def __next__(self) -> Any:
        if self.finished:
            raise StopIteration
        kind, value, data = self._next_event(self.call.sup.timeout)
        if kind != "chunk":
            self._end(kind, value)
        self.seqs.append(value)
        if self._window:
            self._consumed += 1
            if self._consumed >= max(1, self._window // 2):
                self.credit(self._consumed)
                self._consumed = 0
        return data

    def next_chunk(self, timeout: float) -> Any:
        """The next chunk, waiting at most ``timeout`` seconds.

        Raises:
            TimeoutError: nothing arrived in time (the message says when the
                stream's credit is used up).
            CallError: the call ended with an error.
        """
        kind, value, data = self._next_event(timeout)
        if kind != "chunk":
            self._end(kind, value)
        self.seqs.append(value)
        return data

    def _end(self, kind: str, value: Any) -> NoReturn:
        """Keep the terminal message, then stop the iteration (or raise its CallError)."""
        self.finished = True
        self.call.outcome = (kind, value)
        if kind == "error":
            raise CallError(value)
        self.result = value
        raise StopIteration

    def cancel(self) -> None:
        """Send ``{:cancel, id}``; the stream then ends with a ``cancelled`` CallError."""
        self.call.sup.cancel(self.id)

    def credit(self, n: int) -> None:
        """Grant ``n`` more chunks."""
        self.call.sup.credit(self.id, n)
