"""The per-call context user code sees through ``current_call()``.

A ``CallContext`` is one call in flight: its identity, deadline, credit and
cancellation, which thread runs its user code (for interrupts), and its
chunks, which it writes itself through the ``ChunkOutlet`` it was built with.
"""

from __future__ import annotations

import _thread
from contextvars import ContextVar

from ._wire import ChunkUnencodable, oversize_error
from .errors import CallCancelled, EncodeError

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    import asyncio
    import threading
    from collections.abc import Callable
    from typing import Any

    from ._methods import Method


__all__ = ["CallContext", "ChunkOutlet", "current_call", "call_var", "prepare_interrupts", "QUEUED",
           "RUNNING", "DONE"]  # fmt: skip

# The call running in this thread or task. A ContextVar, not a per-thread
# table: code the call hands its context to (asyncio.to_thread,
# contextvars.copy_context().run) finds it too.
call_var: ContextVar[CallContext | None] = ContextVar("snakepit_current_call", default=None)

# Call states.
QUEUED, RUNNING, DONE = 0, 1, 2

get_ident = _thread.get_ident

_async_exc_api: Any = None


def _set_async_exc(thread_id: int, exc: type[BaseException]) -> int:
    """Raise ``exc`` in thread ``thread_id`` at its next bytecode.

    It runs under the call's lock, so it must be quick: never an import there.
    Importing ctypes (milliseconds) while holding the lock let the call's
    thread, blocked on that lock on its way out of user code, take the
    interrupt in runtime code and lose its terminal. The C process controls
    have the call; without them, ctypes is imported at set-up, before any call
    runs (``prepare_interrupts``).
    """
    global _async_exc_api
    if _async_exc_api is None:
        prepare_interrupts()
    changed: int = _async_exc_api(thread_id, exc)
    return changed


def prepare_interrupts() -> None:
    """Make ``_set_async_exc`` ready (the C call, or ctypes imported now, outside any lock)."""
    global _async_exc_api
    if _async_exc_api is not None:
        return
    try:
        from ._cproc import set_async_exc
    except ImportError:  # built without the C process controls
        import ctypes

        api = ctypes.pythonapi.PyThreadState_SetAsyncExc
        api.restype = ctypes.c_int

        def set_async_exc(thread_id: int, exc: type[BaseException]) -> int:
            return int(api(ctypes.c_ulong(thread_id), ctypes.py_object(exc)))

    _async_exc_api = set_async_exc


class _Dropped(BaseException):
    """Takes the place of a pending interrupt, to be taken at once (see ``_drop_interrupt``)."""


def _take() -> None:
    """Nothing: entering it runs the eval loop's check, where a pending exception lands."""


def _drop_interrupt() -> None:
    """In the call's own thread: make sure no interrupt is pending in it, and leave no trace.

    Not ``PyThreadState_SetAsyncExc(id, NULL)``: on CPython 3.11 (at least) that sets the
    interpreter-wide "asynchronous exception pending" flag, which only a thread
    taking an exception resets. Left set, it sends every thread of the process
    through the eval loop's slow path at each check, and a thread running under
    a tracer or profiler (coverage, a debugger) loops for ever on entering its
    next function: the deadline thread, and with it every later interrupt. So
    the pending exception (if any) is replaced by one of our own, taken here.
    """
    try:
        _set_async_exc(get_ident(), _Dropped)
        _take()  # it lands on return from the C call, at the latest on entering _take
    except _Dropped:
        pass


def current_call() -> CallContext:
    """Return the context of the call running in this thread or task.

    Raises:
        RuntimeError: outside a call.
    """
    ctx = call_var.get()
    if ctx is None:
        raise RuntimeError("current_call() used outside a snakepit method call")
    return ctx


class ChunkOutlet:
    """Where a connection's calls write their chunks: the codec, the frame limit, the writer.

    Args:
        codec: a codec module; its ``chunk_encoder(call_id)`` is used when it has one.
        write_soon: writes one frame, and may hold it back briefly to coalesce
            it with others (a fast stream's writes are most of its cost).
        max_frame: a chunk frame larger than this is ``:unencodable``.
    """

    __slots__ = ("write_soon", "max_frame", "_codec")

    def __init__(self, codec: Any, write_soon: Callable[[bytes], None], max_frame: int) -> None:
        self.write_soon = write_soon
        self.max_frame = max_frame
        self._codec = codec

    def encoder(self, call_id: int) -> Callable[[int, Any], bytes]:
        """Return ``(seq, data) -> frame`` for the chunks of call ``call_id``."""
        encode: Callable[[int, Any], bytes] = self._codec.chunk_encoder(call_id)
        return encode


class CallContext:
    """One call in flight: its identity, deadline, credit and cancellation state.

    Attributes:
        id: the call id the supervisor chose.
        method: the method name.
        meta: the ``meta`` map from the call's options (``{}`` when absent).
        deadline: ``time.monotonic()`` value after which the call times out, or None.
    """

    __slots__ = (
        "id", "method", "meta", "deadline", "args", "kwargs", "spec", "state",
        "cancel_reason", "_outlet", "_lock", "_cond", "_credit", "_seq",
        "_thread_id", "_in_user", "_interrupted", "task", "loop", "_async_wake",
        "serial", "armed", "_encode_chunk", "_beam_waits", "t0", "span",
    )  # fmt: skip
    span: Any  # its OpenTelemetry server span, set only when traced (_tracing)

    def __init__(
        self,
        outlet: ChunkOutlet,
        call_id: int,
        spec: Method,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        meta: dict[Any, Any],
        deadline: float | None,
        credit: int | None,
        t0: float = 0.0,
    ) -> None:
        self.id = call_id
        self.method = spec.name
        self.meta = meta
        self.deadline = deadline
        self.args = args
        self.kwargs = kwargs
        self.spec = spec
        self.state = QUEUED
        self.cancel_reason: str | None = None
        self._outlet = outlet
        self._lock = _thread.allocate_lock()
        self._cond: threading.Condition | None = None
        self._credit = credit
        self._seq = 0
        self._thread_id = 0
        self._in_user = False
        self._interrupted = False
        self.task: asyncio.Task[Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._async_wake: asyncio.Event | None = None
        self.serial = 0  # set when the call has a deadline
        self.armed = False  # its deadline is in the timer's heap
        self._encode_chunk: Any = None  # (seq, data) -> chunk frame, made on the first chunk
        self._beam_waits: list[Any] | None = None  # beam calls waited for under this call (_beam)
        # When it was accepted, then when it started running if it waited (_metrics):
        # its duration is measured from here.
        self.t0 = t0
        # (slot ``span``: its OpenTelemetry server span, set only when traced: _tracing)

    # --- what user code uses -------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        """True once the call was cancelled, timed out, or the worker is shutting down."""
        return self.cancel_reason is not None

    def check_cancelled(self) -> None:
        """Raise :class:`CallCancelled` if the call was cancelled (or timed out)."""
        reason = self.cancel_reason
        if reason is not None:
            raise CallCancelled(reason)

    def send(self, chunk: Any) -> None:
        """Stream one chunk to the caller, waiting for credit when the caller asked for it.

        Raises:
            CallCancelled: the call was cancelled (also while waiting for credit).
            EncodeError: the chunk cannot be encoded.
            RuntimeError: called on the event loop while out of credit (use ``asend``).
        """
        self.emit(chunk)

    async def asend(self, chunk: Any) -> None:
        """Stream one chunk from async code, awaiting credit without blocking the loop."""
        import asyncio

        while True:
            self.check_cancelled()
            with self._lock:
                if self._credit is None or self._credit > 0:
                    break
                if self._async_wake is None:
                    self._async_wake = asyncio.Event()
                wake = self._async_wake
                wake.clear()
            await wake.wait()
        with self._lock:
            if self.cancel_reason is not None:
                raise CallCancelled(self.cancel_reason)
            self._write_chunk_locked(chunk)

    @property
    def traceparent(self) -> str | None:
        """The W3C ``traceparent`` of this call: its server span's when it is traced with
        OpenTelemetry, else the one its caller sent in ``meta`` (None when there is none).

        Pass it on (an HTTP header, a beam call's argument) to continue the trace.
        """
        from ._tracing import traceparent

        return traceparent(self)

    def __repr__(self) -> str:
        return f"<CallContext id={self.id} method={self.method!r} cancelled={self.cancelled}>"

    # --- runtime side: credit and chunks -------------------------------------------------

    def add_credit(self, n: int) -> None:
        """Grant ``n`` more chunks and wake a producer waiting for credit."""
        with self._lock:
            if self._credit is None:
                return
            self._credit += n
            self._wake_locked()

    def _wake_locked(self) -> None:
        if self._cond is not None:
            self._cond.notify_all()
        if self._async_wake is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self._async_wake.set)

    def emit(self, chunk: Any) -> None:
        """Send one chunk from the producing thread: wait for credit, encode, write.

        One locked section does it all; while it runs the thread is outside
        user code, so no interrupt can land in the middle of a frame.
        """
        with self._lock:
            # Only the call's own thread leaves (and re-enters) user code here; a
            # helper thread of the user's that sends must not disarm the interrupt.
            own = self._thread_id == get_ident()
            in_user = self._in_user
            if own:
                self._in_user = False
                if self._interrupted:
                    _drop_interrupt()
            while True:
                if self.cancel_reason is not None:
                    raise CallCancelled(self.cancel_reason)
                if self._credit is None or self._credit > 0:
                    break
                if self.loop is not None and self.loop.is_running() and _on_loop(self.loop):
                    raise RuntimeError(
                        "current_call().send() would block the event loop while waiting for "
                        "credit; use `await current_call().asend(chunk)` in async code"
                    )
                if self._cond is None:
                    import threading  # only a call that runs out of credit needs it

                    self._cond = threading.Condition(self._lock)
                self._cond.wait()
            self._write_chunk_locked(chunk)
            self._in_user = in_user

    def _write_chunk_locked(self, data: Any) -> None:
        """Write one ``{:chunk, id, seq, data}``; the caller holds ``_lock``.

        Raises:
            CallCancelled: the call already ended.
            ChunkUnencodable: the codec cannot carry ``data``, or its frame is too large.
        """
        if self.state == DONE:
            raise CallCancelled(self.cancel_reason or "cancelled")
        outlet = self._outlet
        encode = self._encode_chunk
        if encode is None:
            encode = self._encode_chunk = outlet.encoder(self.id)
        try:
            frame = encode(self._seq, data)
        except EncodeError as exc:
            raise ChunkUnencodable(exc) from None
        if len(frame) > outlet.max_frame:
            raise ChunkUnencodable(oversize_error(frame, data, outlet.max_frame)) from None
        self._seq += 1
        if self._credit is not None:
            self._credit -= 1
        try:
            outlet.write_soon(frame)
        except OSError:
            pass

    # --- runtime side: the call's life ---------------------------------------------------

    # Interrupting pure-Python code: an asynchronous exception raised in the
    # call's thread. It is only ever aimed at the thread while it runs user
    # code (``_in_user``), at most once per call, and cleared when the thread
    # leaves user code, so it never lands in the runtime's own bookkeeping.

    def enter(self) -> bool:
        """Start running a queued call in this thread: from now on it runs user code.

        Returns:
            False when the call was answered already (cancelled while queued).

        Raises:
            CallCancelled: it was cancelled before it started.
        """
        lock = self._lock
        lock.acquire()  # acquire/release, not `with`: see Dispatcher.accept_call
        if self.state != QUEUED:
            lock.release()
            return False
        if self.cancel_reason is not None:
            lock.release()
            raise CallCancelled(self.cancel_reason)
        self.state = RUNNING
        self._thread_id = get_ident()
        self._in_user = True
        lock.release()
        return True

    def runs_here(self) -> bool:
        """Whether this is a sync call running on the calling thread (``enter`` was called here)."""
        return self._thread_id == get_ident()

    def started(self) -> None:
        """Mark a call running whose user code runs on the event loop (never interrupted)."""
        with self._lock:
            if self.state == QUEUED:
                self.state = RUNNING

    def leave_user(self) -> bool:
        """Leave user code (dropping an interrupt still pending); returns whether it was in it.

        Called only in the call's own thread (as is ``close(leave_user=True)``).
        """
        with self._lock:
            was = self._in_user
            self._in_user = False
            if self._interrupted:
                _drop_interrupt()
            return was

    def close(self, leave_user: bool = False) -> bool:
        """Mark the call answered, leaving user code first when ``leave_user``.

        Returns:
            True for the one caller that closed it: that caller writes its terminal.
        """
        lock = self._lock
        lock.acquire()  # (see enter; nothing below raises but the async-exc call)
        try:
            if leave_user:  # the same as leave_user(), in this one locked section
                self._in_user = False
                if self._interrupted:
                    _drop_interrupt()
            if self.state == DONE:
                return False
            self.state = DONE
            return True
        finally:
            lock.release()

    def request_cancel(self, reason: str) -> int:
        """Mark the call cancelled; returns the state it was in.

        Wakes credit waiters; the dispatcher decides what else to do.
        """
        with self._lock:
            if self.cancel_reason is None and self.state != DONE:
                self.cancel_reason = reason
                self._wake_locked()
                if self._beam_waits:
                    for waiter in self._beam_waits:
                        waiter.wake()
            return self.state

    # --- runtime side: waiting for the BEAM (_beam) ---------------------------------------

    def beam_wait_begin(self, waiter: Any) -> bool:
        """A beam call is about to be waited for under this call; returns a token for ``end``.

        A cancel from now on wakes ``waiter``. In the call's own thread the wait
        is runtime code: the thread leaves user code (an interrupt already
        pending is dropped; the waiter raises ``CallCancelled`` itself), and a
        sync call's waiter is marked as holding its sync slot.

        Raises:
            CallCancelled: the call was cancelled already (nothing is sent then).
        """
        # (`with`, not acquire/release: an interrupt still pending from user code may
        # be raised in here, and must not leave the lock held)
        with self._lock:
            if self.cancel_reason is not None:
                raise CallCancelled(self.cancel_reason)
            waits = self._beam_waits
            if waits is None:
                waits = self._beam_waits = []
            waits.append(waiter)
            if self._thread_id != get_ident():
                return False
            waiter.holds_slot = not self.spec.is_async and self.state == RUNNING
            in_user = self._in_user
            self._in_user = False
            if self._interrupted:
                _drop_interrupt()
            return in_user

    def beam_wait_end(self, waiter: Any, in_user: bool) -> None:
        """The wait begun with ``beam_wait_begin`` is over: back to user code, if it was there."""
        # (acquire/release: no interrupt reaches this thread here, out of user code
        # until the end, and interrupt() waits for the lock)
        lock = self._lock
        lock.acquire()
        try:
            self._beam_waits.remove(waiter)  # type: ignore[union-attr]
        except (AttributeError, ValueError):  # (not there: nothing to take away)
            pass
        if in_user and self._thread_id == get_ident():
            self._in_user = True
        lock.release()

    def interrupt(self) -> bool:
        """Raise CallCancelled in the call's thread if it is running user code."""
        with self._lock:
            if not self._in_user or self._interrupted or not self._thread_id:
                return False
            self._interrupted = True
            exc = CallCancelled
            return _set_async_exc(self._thread_id, exc) == 1


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    import asyncio

    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
