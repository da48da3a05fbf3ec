"""Serving a worker over an Erlang Port: process setup, leader/followers, exit.

Threads: ``threads + 1`` reader threads take turns in a leader/followers
arrangement. The one holding the reading role reads frames and answers
control messages (health, describe, cancel, credit) inline. A sync call it
reads and may run, it runs itself, on the thread that read it: no hand-over
to another thread and back, which on one CPU costs more than the whole call.
While it runs, a standby thread takes the reading role over if the call lasts
longer than about a millisecond (see ``_Readers``). The main thread only waits
for the exit signal and handles SIGTERM; async methods run on one event-loop
thread.
"""

from __future__ import annotations

import _thread
import os
import sys
import time

from . import _lifecycle, _logging, _state
from ._context import prepare_interrupts
from ._dispatcher import Dispatcher
from ._options import WorkerOptions
from ._registry import Registry
from .codec import get_codec
from .codec.etf import peek_call_id  # (importable from here too, as before)
from .errors import DecodeError
from .transport.port import FrameReader, FrameTooLarge, FrameWriter, protect_stdio

try:  # the C module: `signal` adds enums on top, and `enum` is not free to import
    import _signal as signal
except ImportError:  # pragma: no cover - other interpreters
    import signal

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

    from ._context import CallContext


__all__ = ["serve", "peek_call_id"]


def _die_loudly() -> None:
    """A reading thread failed: print why and exit, so the supervisor sees a crash.

    A worker whose reader is gone would stay alive and answer nothing; its
    supervisor could only find out by timeouts. Exit status 70 (EX_SOFTWARE).
    """
    import traceback

    try:
        traceback.print_exc()
        print("snakepit-py: a reading thread failed; the worker exits", file=sys.stderr)
        sys.stderr.flush()
    finally:
        os._exit(70)


def _with_thread_hooks(run: Callable[[Any], None], arg: Any) -> None:
    """Run ``run(arg)`` under the trace and profile hooks set for new threads.

    As a ``threading.Thread`` does: the runtime's own threads are
    ``_thread``'s (``threading`` costs start-up time), so without this a
    debugger, a profiler or coverage.py set with ``threading.settrace`` /
    ``setprofile`` would never see what they run: the reading loop and every
    sync call run in place. (A hook applies to frames entered after it is
    set: hence a wrapper around ``run``.)
    """
    threading = sys.modules.get("threading")
    # (hasattr: another thread may be importing it right now, e.g. at shutdown,
    # and a module half imported has set no hooks yet)
    if hasattr(threading, "gettrace") and hasattr(threading, "getprofile"):
        trace, profile = threading.gettrace(), threading.getprofile()  # type: ignore[union-attr]
        if trace is not None:
            sys.settrace(trace)
        if profile is not None:
            sys.setprofile(profile)
    run(arg)


def _abort(dispatcher: Dispatcher) -> None:
    dispatcher.abort()


def _general_road(_frame: bytes) -> None:
    """No envelope shortcut: every frame is decoded whole."""
    return None


def _no_beam_road(_frame: bytes) -> bool:
    """No beam reply shortcut: every frame is decoded whole."""
    return False


class _Readers:
    """Who reads the protocol input, and when the reading role moves (see the module docstring).

    A thread that reads a sync call runs it itself and leaves the reading role
    *vacant*; when the call ends quickly it simply takes the role back, so a
    short call costs no thread switch at all. One standby thread (the
    sentinel) looks at the vacancy every millisecond while calls are coming
    and takes the reading role over when the same vacancy lasted a whole
    period: control messages (health, cancel, credit) wait at most a couple
    of milliseconds behind a long call. When calls stop, the sentinel sleeps
    until the next vacancy wakes it.
    """

    _PERIOD = 0.001
    _MAX_PERIOD = 0.004
    _IDLE_CHECKS = 50  # ~50 ms without a vacancy: the sentinel goes to sleep

    def __init__(self, reader: FrameReader, decode: Callable[[Any], Any], dispatcher: Dispatcher,
                 peek: Callable[[bytes], int | None]) -> None:  # fmt: skip
        self.reader = reader
        self.decode = decode
        self.peek = peek
        # A plain call envelope's fields straight from the bytes (None: the general
        # road); `serve` sets the codec's.
        self.call_fields: Callable[[bytes], Any] = _general_road
        # (1.1) A {:beam_reply} frame settled from its bytes (True), or left to the
        # general road; `serve` sets the ETF codec's (beam_reply_etf).
        self.beam_reply: Callable[[bytes], bool] = _no_beam_road
        self._reply_frame: Callable[[bytes], bool] | None = None
        # The lock of a beam wait of the one sync thread while another thread
        # reads: the reader that releases it hands the reading role back.
        self._give_back: Any = None
        self.dispatcher = dispatcher
        self._state = _thread.allocate_lock()
        self._vacant = False
        self._serial = 0
        self._asleep = False
        self._wake = _thread.allocate_lock()
        self._wake.acquire()
        self._standby = _thread.allocate_lock()
        self._hurry = _thread.allocate_lock()  # released by hurry(): take over now
        self._hurry.acquire()
        self._eof = False
        self._first_frame: Callable[[], None] | None = None
        self._threads = 1
        self._poll: Any = None  # select.poll of the input, made for the first wait_reply

    def after_ready(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` (once) before the first frame is handled."""
        self._first_frame = hook

    def start(self, threads: int) -> None:
        self._threads = threads
        # Plain _thread threads: a worker that never imports `threading` (the
        # getting-started one) does not pay for it, here or before :ready.
        for i in range(threads + 1):
            _thread.start_new_thread(_with_thread_hooks, (self._main, i == 0))

    def _main(self, leading: bool) -> None:
        try:
            if leading and not self._lead():
                return
            while self._stand_by():
                if not self._lead():
                    return
        except BaseException:  # a bug in the runtime itself: never a silent, deaf worker
            _die_loudly()

    def _stand_by(self) -> bool:
        """Wait as the sentinel until the reading role is taken over; False at end of input."""
        with self._standby:  # one sentinel at a time; other standbys queue here
            seen, idle, period = -1, 0, self._PERIOD
            while not self._eof:
                sleep = False
                with self._state:
                    if self._vacant:
                        if self._serial == seen:
                            self._vacant = False
                            self.dispatcher.arm_deadlines()  # the call lasts: time it
                            return True
                        if seen >= 0:
                            # Short calls keep turning over: look less often (each
                            # look takes the GIL from them), up to _MAX_PERIOD.
                            period = min(period * 2, self._MAX_PERIOD)
                        seen, idle = self._serial, 0
                    else:
                        idle += 1
                        period = self._PERIOD
                        if idle > self._IDLE_CHECKS:
                            self._asleep = sleep = True
                if sleep:
                    self._wake.acquire()
                    seen, idle = -1, 0
                elif self._hurry.acquire(True, period):  # (a plain sleep, unless hurried)
                    with self._state:
                        if self._vacant:
                            self._vacant = False
                            self.dispatcher.arm_deadlines()
                            return True
            return False

    def hurry(self) -> None:
        """A thread is about to block for a while (a beam call): take the reading role over now.

        A reply it waits for must not wait a sentinel period to be read.
        """
        with self._state:
            if not self._vacant:
                return
            if self._asleep:
                self._asleep = False
                self._wake.release()
        try:
            self._hurry.release()
        except RuntimeError:  # hurried already
            pass

    def wait_reply(self, lock: Any, timeout: float | None, ctx: Any = None) -> bool:
        """Wait until ``lock`` is released (a beam call's reply came, or its wait was woken).

        Returns whether it was, within ``timeout`` seconds (None: no limit).
        ``ctx``: the call waiting, when it is a sync call waiting in its own
        thread (``BeamCalls`` knows: its waiter holds the call's sync slot).

        The thread that waits runs a sync call, and it left the reading role
        vacant when it started that call. With one sync thread (``--threads
        1``) nothing it would read meanwhile can run before that call ends, so
        it takes the role back and reads the frames itself until the reply
        comes: no hand-over to the sentinel and back, two thread switches that
        were about half of a beam call's time in Python. Whatever else it
        reads is handled as the reading role always handles it. If the sentinel
        took the role over while the call ran, the thread waits, and the reader
        that wakes it hands the role back (``_hand_back``): one hand-over, not
        one per beam call for the rest of the call. Otherwise (more threads, a
        thread of the user's own) the sentinel is hurried to read, and the
        thread just waits.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if ctx is not None and self._threads == 1:
            if not self._vacant:
                # The sentinel took the role over while this call ran (it lasted, or
                # the machine was busy): the reader that wakes this wait hands the
                # role back (_lead), so the next wait reads for itself again.
                self._give_back = lock
                try:
                    return lock.acquire(True, -1 if timeout is None else timeout)
                finally:
                    if self._give_back is lock:
                        self._give_back = None
            state = self._state
            state.acquire()
            take = self._vacant and not self._eof
            if take:
                self._vacant = False  # (the role is this thread's again)
            state.release()
            if take:
                # The call lasts: its deadline must be timed, as a takeover would
                # (with one sync thread the only call run in place is this one).
                if ctx.serial and not ctx.armed:
                    self.dispatcher.arm_deadlines()
                try:
                    return self._read_until(lock, deadline)
                finally:
                    state.acquire()
                    self._vacant = True  # back to the call, the role vacant as before
                    self._serial += 1
                    if self._asleep:
                        self._asleep = False
                        self._wake.release()
                    state.release()
        self.hurry()
        return lock.acquire(True, -1 if timeout is None else timeout)

    _WAIT_PERIOD = 0.005  # how often a thread reading for its reply looks whether it was woken
    # (and _read_until's poll waits 5 ms, the same period in whole milliseconds)

    def _read_until(self, lock: Any, deadline: float | None) -> bool:
        """Read and handle frames, holding the reading role, until ``lock`` can be taken.

        Returns False when the ``time.monotonic()`` ``deadline`` passed first.
        """
        if self._poll is None:
            import select

            self._poll = select.poll()
            self._poll.register(self.reader.fd, select.POLLIN)
        poll, reader, period = self._poll.poll, self.reader, self._WAIT_PERIOD
        beam_reply = self.beam_reply
        if self._reply_frame is not None:  # (beam_reply_etf's, without it in between)
            beam_reply = self._reply_frame
        while not lock.acquire(False):
            wait_ms = 5  # (period, in poll's whole milliseconds)
            if deadline is not None:
                wait = min(period, deadline - time.monotonic())
                if wait < 0.001:  # (poll counts whole milliseconds: the rest on the lock)
                    return wait > 0 and lock.acquire(True, wait)
                wait_ms = int(wait * 1000)
            # A frame already read ahead, or one to read; else look at the lock again
            # (a cancel or a deadline, from another thread, wakes the wait too).
            if not reader.has_buffered() and not poll(wait_ms):
                continue
            try:
                frame = reader.read()
            except FrameTooLarge as exc:
                self._refuse_oversize(exc)
                continue
            except OSError:
                frame = None
            if frame is None:  # end of input: the full stop runs elsewhere, the wait ends
                self._eof = True
                _thread.start_new_thread(_with_thread_hooks, (_abort, self.dispatcher))
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                return lock.acquire(True, -1 if left is None else left)
            try:
                if beam_reply(frame):  # (the reply waited for, mostly: first)
                    continue
            except Exception as exc:  # a bug here must never stop the reading
                self._refuse_frame(frame, exc)
                continue
            ctx = self._handle_frame(frame)
            if ctx is not None:  # (not with one sync thread, whose slot this call holds)
                self.dispatcher.run_sync(ctx)
        return True

    def beam_reply_etf(self, frame: bytes) -> bool:
        """An ETF ``{:beam_reply}`` settled on its short road (``BeamCalls.reply_frame``)."""
        reply_frame = self._reply_frame
        if reply_frame is None:  # (the dispatcher makes its BeamCalls once, on first use)
            beam = self.dispatcher.beam_calls(False)
            if beam is None:
                return False
            reply_frame = self._reply_frame = beam.reply_frame
        return reply_frame(frame)

    def _hand_back(self) -> bool:
        """The sync call waiting for a beam reply was woken: the reading role is its again.

        Leaves the role vacant, as when that call started (the sentinel watches
        it meanwhile); that call's next beam wait then reads for itself. True:
        this thread stands by.
        """
        waiting = self._give_back
        if waiting is None or waiting.locked():  # (not woken yet: keep reading)
            return False
        state = self._state
        state.acquire()
        self._give_back = None
        self._vacant = True
        self._serial += 1
        if self._asleep:
            self._asleep = False
            self._wake.release()
        state.release()
        return True

    def _handle_frame(self, frame: bytes) -> CallContext | None:
        """Dispatch one frame (as ``_lead`` does, inline there); a sync call to run, or None."""
        try:
            call = self.call_fields(frame)
            if call is not None:
                return self.dispatcher.accept_call(*call)
            if self.beam_reply(frame):
                return None
            return self.dispatcher.handle(self.decode(frame))
        except Exception as exc:  # a bug here must never stop the reading
            self._refuse_frame(frame, exc)
        return None

    def _refuse_oversize(self, exc: FrameTooLarge) -> None:
        """Answer a frame over ``--max-frame`` (it was skipped)."""
        self.dispatcher.bad_request(
            self.peek(exc.head),
            f"frame of {exc.size} bytes is over the limit of {self.reader.max_frame}",
        )

    def _refuse_frame(self, frame: bytes, exc: Exception) -> None:
        """Answer a frame that could not be decoded, or whose handling failed."""
        if isinstance(exc, DecodeError):
            self.dispatcher.bad_request(self.peek(frame), f"undecodable frame: {exc}")
        else:
            self.dispatcher.bad_request(self.peek(frame), f"frame not handled: {exc!r}")

    def _lead(self) -> bool:
        """Hold the reading role: read, dispatch, run sync calls in place.

        Returns True when another thread took the role over during a call (this
        one then stands by), False at end of input.
        """
        read, decode, handle = self.reader.read, self.decode, self.dispatcher.handle
        state, run_sync = self._state, self.dispatcher.run_sync
        # A plain call envelope skips the generic decode and envelope checks
        # (the C codec reads its fields straight from the bytes); None for
        # anything else, which then takes the general road.
        fields, accept = self.call_fields, self.dispatcher.accept_call
        beam_reply = self.beam_reply
        while True:
            try:
                frame = read()
            except FrameTooLarge as exc:
                self._refuse_oversize(exc)
                continue
            except OSError:
                frame = None
            if frame is None:
                self._eof = True
                self.dispatcher.abort()
                return False
            if self._first_frame is not None:
                self._first_frame()
                self._first_frame = None
            call = fields(frame)
            try:
                if call is not None:
                    ctx = accept(*call)
                elif beam_reply(frame):
                    if self._give_back is not None and self._hand_back():
                        return True
                    continue
                else:
                    ctx = handle(decode(frame))
            except Exception as exc:  # a bug here must never stop the reading
                self._refuse_frame(frame, exc)
                continue
            if ctx is None:
                continue
            # acquire/release rather than `with` (half the cost on CPython 3.11,
            # twice per call); nothing in between can raise.
            state.acquire()
            self._vacant = True
            self._serial += 1
            mine = self._serial
            if self._asleep:
                self._asleep = False
                self._wake.release()
            state.release()
            run_sync(ctx)
            state.acquire()
            taken = not self._vacant
            self._vacant = False
            # The vacancy may be another runner's (it vacated while we ran):
            # its call then never had its deadline armed by a takeover.
            others = not taken and self._serial != mine
            state.release()
            if taken:
                return True
            if others:
                self.dispatcher.arm_deadlines()


class _AfterReady:
    """Set-up run once: before :ready when it is cheap, else on the first frame or after a moment.

    Becoming a subreaper, tuning malloc and readying interrupts take
    microseconds through the C process controls (``_cproc``), so ``serve``
    runs them before :ready and the first call waits for nothing. Without
    them they cost a few milliseconds of CPU (ctypes), which :ready need not
    wait for: they then run before the first frame is handled (the
    subreaper before any call can spawn a process, and interrupts before any
    call can be cancelled; user code imported before :ready can only have
    direct children, which are ours to reap anyway), or ``delay`` seconds
    after :ready if no frame came first, whichever is earlier. Starting the event
    loop of a worker with async methods (asyncio) is only ever done in the
    background, ``delay`` seconds after :ready: an async call that arrives
    before it starts the loop itself.
    """

    def __init__(self, dispatcher: Dispatcher, delay: float = 0.2) -> None:
        self._dispatcher = dispatcher
        self._lock = _thread.allocate_lock()
        self._done = False
        _thread.start_new_thread(_with_thread_hooks, (self._later, delay))

    def __call__(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            try:  # both report failure as False; this guards the reading thread against the rest
                _lifecycle.become_subreaper()
                _lifecycle.keep_heap_memory()
                prepare_interrupts()  # (never an import under a call's lock: see _context)
            except Exception:  # pragma: no cover - e.g. an interpreter built without ctypes
                pass

    def _later(self, delay: float) -> None:
        time.sleep(delay)
        self()
        self._dispatcher.warm_up()


def serve(load: Callable[[], Registry], opts: WorkerOptions) -> NoReturn:
    """Run a worker over the Port until end of input, ``:shutdown`` or SIGTERM; never returns.

    Args:
        load: imports the user's code and returns its registry (called after
            stdout is protected, so prints at import time are harmless).
        opts: the worker options.
    """
    _state.set_worker_args(opts.worker_args)
    if opts.stdio:
        fd_in, fd_out = protect_stdio(True)
    else:
        fd_in, fd_out = opts.fd_in, opts.fd_out
        for fd in (fd_in, fd_out):
            try:
                os.set_inheritable(fd, False)
            except OSError:
                print(
                    f"snakepit-py: protocol fd {fd} is not open; launch the worker from a "
                    "Port with :nouse_stdio, or pass --stdio or --fd IN,OUT",
                    file=sys.stderr,
                )
                os._exit(2)
    # SIGINT is ignored with a do-nothing handler, not SIG_IGN: SIG_IGN would be
    # inherited by every child process (a Ray task could then not be interrupted).
    signal.signal(signal.SIGINT, _lifecycle.ignore_signal)
    codec = get_codec(opts.codec)
    writer = FrameWriter(fd_out)
    done = _thread.allocate_lock()  # released once, when the worker should exit
    done.acquire()

    def exit_soon() -> None:
        try:
            done.release()
        except RuntimeError:  # released already
            pass

    registry = load()
    dispatcher = Dispatcher(
        registry, codec, writer.write,
        threads=opts.threads, max_inflight=opts.max_inflight, worker_id=opts.worker_id,
        on_exit=exit_soon, default_grace_ms=opts.grace_ms, write_soon=writer.write_soon,
        lazy_deadlines=True, max_frame=opts.max_frame,
    )  # fmt: skip
    _logging.install(dispatcher.send, opts.log_level)
    signal.signal(signal.SIGTERM, lambda *_: dispatcher.shutdown())
    reader = FrameReader(fd_in, opts.max_frame)
    readers = _Readers(reader, codec.decode_message, dispatcher, codec.peek_call_id)
    readers.call_fields = codec.call_fields
    if opts.codec == "etf":
        readers.beam_reply = readers.beam_reply_etf
    dispatcher.on_beam_wait = readers.wait_reply  # (1.1) a beam call's reply is read at once
    set_up = _AfterReady(dispatcher)
    if _lifecycle.c_controls() is not None:
        set_up()  # microseconds in C: done before :ready, so the first call waits for nothing
    else:
        readers.after_ready(set_up)  # ctypes costs milliseconds: not before :ready
    dispatcher.send_ready()
    readers.start(opts.threads)
    while not done.acquire(timeout=3600):  # (signal handlers run meanwhile)
        pass
    _logging.uninstall()
    writer.closed = True
    _lifecycle.exit_process(dispatcher.aborted)
