"""Calls from worker code into the BEAM: one connection's side of protocol.md §9.

A ``BeamCalls`` belongs to one dispatcher. It keeps the names the supervisor
announced (``{:beam_functions, names}``) and the beam calls waiting for their
``{:beam_reply, ref, outcome}``. Nothing here blocks the reading thread: a
reply only settles its waiter (a lock released, or a future resolved through
the waiter's event loop), and the waiting thread does the rest.

A wait is tied to the call it is made under (``current_call()``): cancelling
that call wakes the wait (``CallContext.request_cancel`` calls ``wake``), the
waiter sends ``{:beam_cancel, ref}`` and raises ``CallCancelled``. A sync
call waiting in its own thread holds a sync slot while it waits; that is what
``would_deadlock`` looks at when the supervisor says a call comes from a BEAM
function serving one of these beam calls (``opts.beam_call``).
"""

from __future__ import annotations

import _thread
import itertools
import math
import struct
import time

from ._context import call_var
from .codec import Atom, etf
from .codec._etf_decode import DECODERS
from .codec._limits import DEFAULT_MAX_DEPTH
from .errors import BeamCallError, CallCancelled

_monotonic = time.monotonic
_ceil = math.ceil

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable
    from typing import Any, NoReturn

    from ._context import CallContext

__all__ = ["BeamCalls", "NOT_SERVED"]

A = Atom
BEAM_CALL, BEAM_CANCEL = A("beam_call"), A("beam_cancel")
_CALL_ID, _TIMEOUT_MS = A("call_id"), A("timeout_ms")
NOT_SERVED = "this supervisor serves no BEAM functions"
# An outcome that is not a reply: the wait was woken (its call was cancelled, or
# the connection ended) and the waiter looks at why.
_WOKEN = ("woken", None)


class _Waiter:
    """One beam call waiting for its reply: a lock for a thread, or a future for a task."""

    # (class defaults, not __slots__: one is made per beam call, and each
    # attribute left at its default is one store less)
    ref = -1
    holds_slot = False  # set by CallContext.beam_wait_begin
    lock: _thread.LockType | None = None
    future: Any = None
    loop: Any = None
    outcome: tuple[Any, Any] | None = None

    def __init__(self, ctx: CallContext | None, future: Any = None, loop: Any = None) -> None:
        self.ctx = ctx
        if future is None:
            lock = self.lock = _thread.allocate_lock()
            lock.acquire()
        else:
            self.future = future
            self.loop = loop

    def wake(self, outcome: tuple[Any, Any] = _WOKEN) -> None:
        """Let the waiter go (any thread; never blocks). A second wake does nothing."""
        lock = self.lock
        if lock is not None:
            try:
                lock.release()
            except RuntimeError:  # woken already
                pass
            return
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future, outcome)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


def _resolve(future: asyncio.Future[Any], outcome: tuple[Any, Any]) -> None:
    if not future.done():
        future.set_result(outcome)


# --- the two frames of every beam call on a short road (ETF) --------------------------------
#
# ``{:beam_call, ref, name, args, opts}`` is written from parts encoded once (the
# head, the name, the opts' keys) and the args encoded by the codec's C encoder
# (through ``encode_ok``, whose fixed head is cut off): the same bytes as
# ``etf.encode(term)`` (a test holds it to that), without encoding the envelope
# term by term in Python. ``{:beam_reply, ref, {:ok | :error, value}}`` is read
# from the bytes: its head compared, the ref and the outcome's atom read in
# place, only the value decoded. Anything else (an odd ref, another atom
# encoding, bad bytes) is left to the general road, which says what is wrong.
# Both are done in C when the codec's accelerator is built (``etf.beam_call_frame``,
# ``etf.beam_reply_fields``: whatever they leave, None, takes the Python road
# here, so the answer is the same either way; the tests hold both to the codec).

_CALL_HEAD = b"\x83h\x05" + etf.encode(BEAM_CALL)[1:]
_SMALL_INTS = [bytes((97, i)) for i in range(256)]
_NIL = etf.encode(None)[1:]
_OPTS_ID = b"t\x00\x00\x00\x01" + etf.encode(_CALL_ID)[1:]
_OPTS_ID_TIMEOUT = b"t\x00\x00\x00\x02" + etf.encode(_CALL_ID)[1:]
_TIMEOUT_KEY = etf.encode(_TIMEOUT_MS)[1:]
# (encode_ok is a codec hook, not in etf's __all__; the C one when the accelerator is built)
_encode_ok: Callable[[int, Any], bytes] = etf.encode_ok  # type: ignore[attr-defined]
_ARGS_AT = len(_encode_ok(0, [])) - 1  # where encode_ok(0, args) has the args
_pack_i32 = struct.Struct(">Bi").pack
_i32 = struct.Struct(">i").unpack_from
_I32 = 2**31  # INTEGER_EXT holds up to 2**31 - 1


def _int(n: int) -> bytes:
    """``etf.encode(n)`` without its version byte."""
    if type(n) is int:
        if 0 <= n < 256:
            return _SMALL_INTS[n]
        if -2147483648 <= n <= 2147483647:
            return _pack_i32(98, n)  # INTEGER_EXT
    return etf.encode(n)[1:]


# term_to_binary's head of {:beam_reply, ...}: OTP 25 writes atoms as ATOM_EXT, OTP 26
# as SMALL_ATOM_UTF8_EXT; then the ref, and the outcome tuple's head with its atom.
_REPLY_HEAD_25 = b"\x83h\x03d\x00\nbeam_reply"
_REPLY_HEAD_26 = b"\x83h\x03w\nbeam_reply"
_OUTCOME_HEADS = {
    b"h\x02d\x00\x02ok": True, b"h\x02w\x02ok": True,
    b"h\x02d\x00\x05error": False, b"h\x02w\x05error": False,
}  # fmt: skip
_VALUE_DEPTH = DEFAULT_MAX_DEPTH - 2  # the two tuples take two levels


def reply_fields(frame: bytes) -> tuple[int, bool, Any] | None:
    """``(ref, ok, value)`` of a well-formed ETF ``{:beam_reply, ...}`` frame, else None."""
    if frame[:16] == _REPLY_HEAD_25:
        pos = 16
    elif frame[:15] == _REPLY_HEAD_26:
        pos = 15
    else:
        return None
    try:
        tag = frame[pos]
        if tag == 97:  # SMALL_INTEGER_EXT
            ref = frame[pos + 1]
            pos += 2
        elif tag == 98:  # INTEGER_EXT
            ref = _i32(frame, pos + 1)[0]
            if ref < 0:  # (the general road refuses it)
                return None
            pos += 5
        else:
            return None
        # {:ok, _} or {:error, _}: the tuple head and the atom, 6 to 10 bytes
        if frame[pos + 2] == 100:  # ATOM_EXT
            size = 5 + frame[pos + 4]
        else:
            size = 4 + frame[pos + 3]
        ok = _OUTCOME_HEADS.get(frame[pos : pos + size])
        if ok is None:
            return None
        pos += size
        value, end = DECODERS[frame[pos]](frame, pos, _VALUE_DEPTH)
    except Exception:  # the general road says what is wrong with these bytes
        return None
    return (ref, ok, value) if end == len(frame) else None


# The C ones (the codec's accelerator: the same answer, or None to leave it to
# Python): the {:beam_call} frame (None without the accelerator: BeamCalls._frame),
# and reply_fields (else reply_fields itself).
_call_frame: Callable[[int, str, tuple[Any, ...], Any, int | None], bytes | None] | None = (
    etf.beam_call_frame
)
_reply_fields: Callable[[bytes], tuple[int, bool, Any] | None] = (
    etf.beam_reply_fields or reply_fields
)


def _timeout_ms(timeout: float | None, ctx: CallContext | None) -> int | None:
    """The ``timeout_ms`` to send: the timeout given, cut to the enclosing call's deadline."""
    deadline = None if ctx is None else ctx.deadline
    if timeout is None:
        if deadline is None:
            return None
        ms = (deadline - _monotonic()) * 1000.0
    else:
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(
                f"timeout must be a positive number of seconds or None, got: {timeout!r}"
            )
        ms = timeout * 1000.0
        if deadline is not None:
            left = (deadline - _monotonic()) * 1000.0
            if left < ms:
                ms = left
    whole = _ceil(ms)  # rounded up, at least 1
    return whole if whole > 1 else 1


class BeamCalls:
    """The beam calls of one connection.

    Args:
        send: writes one term to the supervisor; raises ``EncodeError`` when the
            term cannot be encoded (the call then fails before anything is sent).
        on_wait: how a thread waits for a reply: ``on_wait(lock, timeout, ctx)``
            returns once ``lock`` is released (True) or ``timeout`` seconds
            passed (False), and makes sure someone reads the reply meanwhile
            (the Port's waiting thread reads it itself, or hurries the
            sentinel). ``ctx`` is the waiting call's context when the wait is
            that sync call's own, in its own thread (it holds its sync slot),
            else None. None: the lock is simply waited for.
    """

    def __init__(
        self,
        send: Callable[[Any], None],
        on_wait: Callable[[Any, float | None, Any], bool] | None = None,
    ) -> None:
        self._send = send
        self.on_wait = on_wait
        self._lock = _thread.allocate_lock()
        self._names: frozenset[str] | None = None
        self._order: list[str] = []
        self._pending: dict[int, _Waiter] = {}
        self._refs = itertools.count()
        self._closed: str | None = None
        # The short road for {:beam_call}: when ``send`` is a dispatcher's over the
        # ETF codec (``send(term)`` is ``write(encode(term))``), ``_begin`` makes
        # the frame from its parts and hands it to the same ``write``; else ``send``.
        owner = getattr(send, "__self__", None)
        write = getattr(owner, "_write", None)
        etf_road = getattr(owner, "encode", None) is etf.encode and callable(write)
        self._write = write if etf_road else None
        self._heads: dict[str, bytes] = {}  # name -> its encoding (the Python builder's)

    # --- what the supervisor says ---------------------------------------------------------

    def announce(self, names: list[str]) -> None:
        """``{:beam_functions, names}``: these are the functions served now (replaces the list)."""
        with self._lock:
            self._names = frozenset(names)
            self._order = list(dict.fromkeys(names))

    def reply_frame(self, frame: bytes) -> bool:
        """A ``{:beam_reply}`` frame settled here on the short road; False: not one it reads.

        (ETF only: the transport calls it only with that codec.) A frame that is
        not a well-formed beam reply is left to the general road.
        """
        fields = _reply_fields(frame)
        if fields is None:  # (the C one leaves the odd ones to Python)
            if _reply_fields is reply_fields:
                return False
            fields = reply_fields(frame)
            if fields is None:
                return False
        ref, ok, value = fields
        lock = self._lock
        lock.acquire()  # (acquire/release: half the cost of `with`, on every reply)
        waiter = self._pending.pop(ref, None)
        if waiter is not None:
            waiter.outcome = outcome = (ok, value)
        lock.release()
        if waiter is not None:
            wake = waiter.lock
            if wake is None:
                waiter.wake(outcome)
            else:
                try:
                    wake.release()
                except RuntimeError:  # woken already
                    pass
        return True

    def reply(self, ref: int, outcome: tuple[Any, Any]) -> None:
        """``{:beam_reply, ref, outcome}``: settle the waiter; an unknown ref is ignored."""
        with self._lock:
            waiter = self._pending.pop(ref, None)
            if waiter is None:
                return
            waiter.outcome = outcome
        waiter.wake(outcome)

    def withdraw(self, why: str) -> None:
        """The supervisor serving the functions is gone: no more calls; waiting ones fail."""
        with self._lock:
            self._names = None
            self._order = []
            self._closed = why
            waiters = list(self._pending.values())
            self._pending.clear()
        outcome = (False, {"kind": "cancelled", "type": "CallCancelled", "message": why})
        for waiter in waiters:
            waiter.outcome = outcome
            waiter.wake(outcome)

    # --- what user code sees --------------------------------------------------------------

    def functions(self) -> list[str]:
        """The names announced, in the supervisor's order ([] when none were)."""
        return list(self._order)

    def call(self, name: str, args: tuple[Any, ...], timeout: float | None) -> Any:
        """Call ``name`` in the BEAM and block for its reply (see ``snakepit_py.beam.call``)."""
        ctx = call_var.get()
        waiter = _Waiter(ctx)
        if ctx is not None:
            token = ctx.beam_wait_begin(waiter)  # raises CallCancelled if cancelled already
        try:
            ref = self._begin(name, args, timeout, waiter)
            wait = self.on_wait
            if wait is not None:  # (the context when this thread's sync call waits: it may read)
                got = wait(waiter.lock, timeout, ctx if waiter.holds_slot else None)
            else:
                got = waiter.lock.acquire(True, -1 if timeout is None else timeout)  # type: ignore[union-attr]
            outcome = waiter.outcome  # (set before the wake, under the lock)
            if outcome is None:
                outcome = self._settle(waiter, ref)
        finally:
            if ctx is not None:
                ctx.beam_wait_end(waiter, token)
        if outcome[0] is True and (ctx is None or ctx.cancel_reason is None):
            return outcome[1]  # (the common case of _result)
        return self._result(name, timeout, ctx, outcome, got)

    async def acall(self, name: str, args: tuple[Any, ...], timeout: float | None) -> Any:
        """Call ``name`` in the BEAM from async code (see ``snakepit_py.beam.acall``)."""
        import asyncio

        loop = asyncio.get_running_loop()
        ctx = call_var.get()
        waiter = _Waiter(ctx, loop.create_future(), loop)
        if ctx is not None:
            token = ctx.beam_wait_begin(waiter)
        try:
            ref = self._begin(name, args, timeout, waiter)
            got = True
            try:
                if timeout is None:
                    await waiter.future
                else:
                    await asyncio.wait_for(waiter.future, timeout)
            except asyncio.TimeoutError:
                got = False
            except asyncio.CancelledError:
                self._settle(waiter, ref)
                raise
            outcome = self._settle(waiter, ref)
        finally:
            if ctx is not None:
                ctx.beam_wait_end(waiter, token)
        return self._result(name, timeout, ctx, outcome, got)

    # --- the steps ------------------------------------------------------------------------

    def _begin(
        self, name: str, args: tuple[Any, ...], timeout: float | None, waiter: _Waiter
    ) -> int:
        """Check the name, register the waiter and send ``{:beam_call, ...}``; returns the ref."""
        names = self._names
        if names is None or type(name) is not str or name not in names:
            self._refuse(name)
        ctx = waiter.ctx
        call_id = ctx.id if ctx is not None else None
        ms = _timeout_ms(timeout, ctx)  # (a test worker replaces it: not inline)
        ref = next(self._refs)
        waiter.ref = ref
        write = self._write
        if write is not None:
            call_frame = _call_frame
            frame = None if call_frame is None else call_frame(ref, name, args, call_id, ms)
            if frame is None:  # (C left it to Python: the same bytes, or EncodeError)
                frame = self._frame(ref, name, args, call_id, ms)  # EncodeError: nothing is sent
            lock = self._lock
            lock.acquire()
            self._pending[ref] = waiter
            lock.release()
            try:
                write(frame)
            except OSError:  # as ``send``: the peer is gone, end of input follows
                pass
            except BaseException:
                with self._lock:
                    self._pending.pop(ref, None)
                raise
            return ref
        opts: dict[Any, Any] = {_CALL_ID: call_id}
        if ms is not None:
            opts[_TIMEOUT_MS] = ms
        with self._lock:
            self._pending[ref] = waiter
        try:
            self._send((BEAM_CALL, ref, name, list(args), opts))
        except BaseException:
            with self._lock:
                self._pending.pop(ref, None)
            raise
        return ref

    def _frame(
        self, ref: int, name: str, args: tuple[Any, ...], call_id: Any, ms: int | None
    ) -> bytes:
        """The ``{:beam_call}`` frame in Python: ``etf.encode`` of the term, from its parts."""
        head = self._heads.get(name)
        if head is None:
            head = self._heads[name] = etf.encode(name)[1:]
        # (_int inline for the refs, call ids and timeouts of every day)
        return b"".join((
            _CALL_HEAD,
            _SMALL_INTS[ref] if ref < 256 else _pack_i32(98, ref) if ref < _I32 else _int(ref),
            head,
            _encode_ok(0, list(args))[_ARGS_AT:],  # EncodeError: nothing is sent
            _OPTS_ID if ms is None else _OPTS_ID_TIMEOUT,
            _NIL if call_id is None else _pack_i32(98, call_id)
            if type(call_id) is int and 255 < call_id < _I32 else _int(call_id),
            b"" if ms is None else _TIMEOUT_KEY + (
                _pack_i32(98, ms) if 255 < ms < _I32 else _int(ms)),
        ))  # fmt: skip

    def _refuse(self, name: Any) -> NoReturn:
        """``name`` cannot be called: none are served, or not this one."""
        names = self._names
        if names is None:
            why = self._closed or NOT_SERVED
            raise BeamCallError(
                "unknown_function", "UnknownFunction", f"{why}: cannot call {name!r}"
            )
        served = ", ".join(self._order) or "(none)"
        raise BeamCallError(
            "unknown_function", "UnknownFunction",
            f"the BEAM serves no function {name!r}; it serves: {served}",
        )  # fmt: skip

    def _settle(self, waiter: _Waiter, ref: int) -> tuple[Any, Any]:
        """After the wait: the reply, or ``_WOKEN`` (then ``{:beam_cancel, ref}`` was sent)."""
        outcome = waiter.outcome
        if outcome is not None:  # (set once, under the lock, by whoever took the ref)
            return outcome
        with self._lock:
            outcome = waiter.outcome
            if outcome is None:
                del self._pending[ref]
        if outcome is None:
            try:
                self._send((BEAM_CANCEL, ref))
            except Exception:  # the connection is going: nothing more will come for it
                pass
            return _WOKEN
        return outcome

    def _result(self, name: str, timeout: float | None, ctx: CallContext | None,
                outcome: tuple[Any, Any], got: bool) -> Any:  # fmt: skip
        # A cancelled call stops here even when the reply came: its interrupt was
        # held back while it waited and will not come again.
        if ctx is not None and ctx.cancel_reason is not None:
            raise CallCancelled(ctx.cancel_reason)
        if outcome is _WOKEN:
            if not got:
                raise BeamCallError(
                    "timeout",
                    "TimeoutError",
                    f"BEAM function {name!r} did not reply within {timeout} s",
                )
            raise BeamCallError(
                "cancelled", "CallCancelled", f"the wait for {name!r} was cancelled"
            )
        ok, value = outcome
        if ok is True:
            return value
        raise BeamCallError.from_wire(value)

    # --- re-entrancy ----------------------------------------------------------------------

    def would_deadlock(self, ref: Any, threads: int) -> bool:
        """Would a sync call made from the BEAM function serving ``ref`` wait for ever?

        True when ``ref`` is waited for by a sync call in its own thread (it
        holds a sync slot until the function returns) and every sync slot is
        held by such a waiting call: the new call could only run once one of
        them returns, and this one cannot return before the new call has run.
        """
        with self._lock:
            waiter = self._pending.get(ref)
            if waiter is None or not waiter.holds_slot:
                return False
            blocked = {id(w.ctx) for w in self._pending.values() if w.holds_slot}
        return len(blocked) >= threads
