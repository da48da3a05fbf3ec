"""The dispatcher: decoded supervisor messages in, protocol terms out.

It knows nothing of file descriptors or gRPC: a transport hands it decoded
messages (``handle``) and gives it a function that writes one encoded frame.
Sync calls are handed back to the transport (``handle`` returns the call when
the transport's thread should run it, see ``run_sync``) so that the Port
transport can run them on the thread that read them (leader/followers);
``SyncPool`` runs them on plain threads for transports that cannot.
"""

from __future__ import annotations

import _thread
import itertools
import os
import sys
import time
from _collections import deque  # collections.deque itself, without importing collections

from . import __version__
from ._context import DONE, QUEUED, RUNNING, CallContext, _current, _set_async_exc
from ._registry import _NO_KWARGS, Registry
from ._timers import Deadlines
from ._wire import (
    BYE,
    CHUNK,
    DESCRIBE,
    ERROR,
    EVENT,
    HEALTH,
    K_DETAILS,
    LOG,
    NUMBERS,
    OK,
    READY,
    T_CALL,
    T_CANCEL,
    T_CREDIT,
    T_DESCRIBE,
    T_HEALTH,
    T_SHUTDOWN,
    ChunkUnencodable,
    atom_keys,
    check_opts,
    error_map,
    format_traceback,
    int_or_none,
    short,
    unencodable_error,
)
from .codec import Atom
from .errors import BadArguments, CallCancelled, EncodeError, MethodNotFound

A = Atom

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    import asyncio
    import queue
    import threading
    from collections.abc import Callable
    from typing import Any


get_ident = _thread.get_ident

__all__ = ["Dispatcher", "SyncPool", "active_dispatchers"]

# Every dispatcher serving right now (publish/report_loaded reach all of them).
_active: list[Dispatcher] = []
_loaded_models: list[Any] = []


def active_dispatchers() -> list[Dispatcher]:
    """The dispatchers currently serving in this process."""
    return list(_active)


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return 0.0


class Dispatcher:
    """Runs calls for one supervisor connection.

    Args:
        registry: the worker's methods.
        codec: a codec module (``encode``/``decode``).
        write: writes one encoded frame; raises OSError when the peer is gone.
        write_soon: like ``write`` but may hold the frame back briefly to
            coalesce it with others (used for chunks); defaults to ``write``.
        lazy_deadlines: the transport calls ``arm_deadlines`` when a call it
            runs in place lasts (the Port's sentinel does); until then such a
            call's deadline is not armed.
        threads: how many sync calls may run at once.
        max_inflight: calls accepted at once.
        worker_id: name used in health reports and logs.
        on_exit: called once (from any thread) when the worker should exit.
    """

    def __init__(
        self,
        registry: Registry,
        codec: Any,
        write: Callable[[bytes], None],
        *,
        threads: int = 1,
        max_inflight: int = 64,
        worker_id: str | None = None,
        on_exit: Callable[[], None] | None = None,
        default_grace_ms: int = 5000,
        write_soon: Callable[[bytes], None] | None = None,
        lazy_deadlines: bool = False,
        max_frame: int = 64 * 2**20,
    ) -> None:
        self.registry = registry
        self.max_frame = max_frame  # a result or chunk frame larger than this is :unencodable
        self.encode = codec.encode
        self._encode_ok = getattr(codec, "encode_ok", None) or (
            lambda call_id, result: codec.encode((OK, call_id, result))
        )
        self.codec = codec
        self._write = write
        self._write_soon = write_soon or write
        self.lazy_deadlines = lazy_deadlines
        self.threads = threads
        self.max_inflight = max_inflight
        self.worker_id = worker_id or str(os.getpid())
        self.on_exit = on_exit or (lambda: None)
        self.default_grace_ms = default_grace_ms
        self._lock = _thread.allocate_lock()
        self._idle: threading.Condition | None = None  # made by the first _wait_idle
        self._calls: dict[int, CallContext] = {}
        self._sync_free = threads
        self._sync_queue: deque[CallContext] = deque()
        self._deadlines = Deadlines(self._expire, self._live_deadlines)
        self._serials = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.served = 0
        self.failed = 0
        self.draining = False
        self.started = time.monotonic()
        self._exiting = False
        self.aborted = False
        self._handlers = {
            T_CALL: self._on_call,
            T_CANCEL: self._on_cancel,
            T_CREDIT: self._on_credit,
            T_HEALTH: self._on_health,
            T_DESCRIBE: self._on_describe,
            T_SHUTDOWN: self._on_shutdown,
        }
        self._loop_lock = _thread.allocate_lock()
        _active.append(self)

    # --- output ---------------------------------------------------------------------------

    def send(self, term: Any) -> None:
        """Encode and write one term; a vanished peer is ignored (end of input follows)."""
        try:
            self._write(self.encode(term))
        except OSError:
            pass

    def send_ready(self) -> None:
        """Send the ``{:ready, info}`` frame."""
        self.send(
            (
                READY,
                {
                    A("protocol"): 1,
                    A("pid"): os.getpid(),
                    A("worker_id"): self.worker_id,
                    A("python"): sys.version.split()[0],
                    A("version"): __version__,
                    A("methods"): sorted(self.registry.methods),
                    A("threads"): self.threads,
                    A("max_inflight"): self.max_inflight,
                },
            )
        )

    def bad_request(self, call_id: int | None, message: str) -> None:
        """Answer a malformed frame or envelope."""
        if call_id is not None and call_id in self._calls:
            self._violation(call_id, message)
            return
        self.failed += 1
        self.send((ERROR, call_id, error_map("bad_request", "BadRequest", message)))

    def _violation(self, call_id: int, message: str) -> None:
        """A refusal naming an id in flight: reported out of band, never as a second terminal.

        The call in flight keeps its one terminal; the supervisor learns of the
        protocol violation from a ``:log`` frame at ``:error``.
        """
        self.failed += 1
        text = f"refused a frame naming a call id in flight (meta call_id): {message}"
        self.send((LOG, A("error"), text, {A("logger"): "snakepit", A("call_id"): call_id}))

    def publish(self, name: str, data: Any) -> None:
        """Push an ``{:event, name, data}`` frame."""
        self.send((EVENT, name, data))

    # --- input ----------------------------------------------------------------------------

    def handle(self, msg: Any) -> CallContext | None:
        """Act on one decoded supervisor message.

        Returns:
            A sync call the caller must now run with ``run_sync`` (it holds a
            sync slot), or None.
        """
        if type(msg) is tuple and msg and type(msg[0]) is Atom:
            handler = self._handlers.get(msg[0])
            if handler is not None:
                return handler(msg)
        call_id = msg[1] if type(msg) is tuple and len(msg) > 1 and type(msg[1]) is int else None
        self.bad_request(call_id, f"not a protocol message: {short(msg)}")
        return None

    def _on_call(self, msg: tuple) -> CallContext | None:
        if len(msg) != 6:
            self.bad_request(
                int_or_none(msg[1]) if len(msg) > 1 else None,
                "a call is {:call, id, method, args, kwargs, opts}",
            )
            return None
        _, cid, name, args, kwargs, opts = msg
        if not (
            type(cid) is int and cid >= 0 and type(name) is str and type(args) is list
            and type(kwargs) is dict and type(opts) is dict
        ):  # fmt: skip
            self._malformed_call(cid, name, args, kwargs, opts)
            return None
        timeout_ms = credit = meta = None
        if opts:
            timeout_ms = opts.get("timeout_ms")
            credit = opts.get("credit")
            meta = opts.get("meta")
            if not (
                (timeout_ms is None or (type(timeout_ms) in NUMBERS and timeout_ms > 0))
                and (credit is None or (type(credit) is int and credit >= 0))
                and (meta is None or type(meta) is dict)
            ):
                self.bad_request(cid, check_opts(opts) or "bad opts")
                return None
        return self.accept_call(cid, name, args, kwargs, timeout_ms, credit, meta)

    def accept_call(
        self, cid: int, name: str, args: list, kwargs: dict,
        timeout_ms: float | None, credit: int | None, meta: dict | None,
    ) -> CallContext | None:  # fmt: skip
        """Act on a well-formed call (its shape and opts checked), as ``handle`` does.

        The Port transport calls it straight from the codec's ``call_fields``
        when the frame is a plain call envelope; every other call comes
        through ``handle``, which checks the envelope first.
        """
        spec = self.registry.methods.get(name)
        if spec is None:
            exc = MethodNotFound(name, sorted(self.registry.methods))
            return self._refuse(cid, "unknown_method", "MethodNotFound", str(exc), known=exc.known)
        plain = spec.plain_arity  # (fewest, most) positional args when a length check binds them
        if plain is not None and not kwargs and plain[0] <= len(args) <= plain[1]:
            bargs: Any = args  # (a list: the call spreads it cheaper than a tuple() of it)
            bkwargs: dict = _NO_KWARGS
        else:
            try:
                bargs, bkwargs = spec.bind(args, kwargs)
            except BadArguments as exc:
                return self._refuse(
                    cid, "bad_arguments", "BadArguments", str(exc), signature=exc.signature
                )
        if spec.timeout is not None:
            spec_ms = spec.timeout * 1000.0
            timeout_ms = spec_ms if timeout_ms is None else min(timeout_ms, spec_ms)
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000.0
        ctx = CallContext(self, cid, spec, bargs, bkwargs, meta or {}, deadline, credit)
        calls = self._calls
        run_now = False
        # acquire/release, not `with`: this runs for every call, and on CPython
        # 3.11 a with-block costs twice the pair (nothing here can raise).
        self._lock.acquire()
        if self.draining:
            refusal: str | None = "draining"
        elif cid in calls:
            refusal = "duplicate"
        elif len(calls) >= self.max_inflight:
            refusal = "overloaded"
        else:
            refusal = None
            calls[cid] = ctx
            if not spec.is_async:
                if self._sync_free > 0:
                    self._sync_free -= 1
                    run_now = True
                else:
                    self._sync_queue.append(ctx)
        self._lock.release()
        if refusal is not None:
            return self._refuse_call(cid, refusal)
        if deadline is not None:
            ctx.serial = next(self._serials)
            # A call the reading thread runs at once mostly ends long before its
            # deadline: with lazy_deadlines the transport arms it only once the
            # call has run a while (arm_deadlines), saving the heap on every call.
            if not (run_now and self.lazy_deadlines):
                self._deadlines.add(deadline, ctx.serial, cid)
                ctx.armed = True
        if spec.is_async:
            self._start_async(ctx)
        return ctx if run_now else None

    def _refuse(self, cid: int, kind: str, type_: str, message: str, **details: Any) -> None:
        self._reject(cid, kind, type_, message, **details)
        return None

    def _refuse_call(self, cid: int, refusal: str) -> None:
        if refusal == "draining":
            self._reject(cid, "shutting_down", "ShuttingDown", "the worker is shutting down")
        elif refusal == "duplicate":
            self.bad_request(cid, f"call id {cid} is already in flight")
        else:
            self._reject(
                cid, "overloaded", "Overloaded",
                f"{self.max_inflight} calls already in flight", max_inflight=self.max_inflight,
            )  # fmt: skip

    def _malformed_call(self, cid: Any, name: Any, args: Any, kwargs: Any, opts: Any) -> None:
        if type(cid) is not int or cid < 0:
            problem, cid = f"call id must be a non-negative integer, got: {short(cid)}", None
        elif type(name) is not str:
            problem = f"method must be a UTF-8 binary, got: {short(name)}"
        elif type(args) is not list:
            problem = f"args must be a list, got: {short(args)}"
        elif type(kwargs) is not dict:
            problem = f"kwargs must be a map, got: {short(kwargs)}"
        else:
            problem = f"opts must be a map, got: {short(opts)}"
        self.bad_request(cid, problem)

    def _on_cancel(self, msg: tuple) -> None:
        if len(msg) != 2:
            self.bad_request(None, "a cancel is {:cancel, id}")
            return
        ctx = self._calls.get(msg[1])  # type: ignore[arg-type]
        if ctx is not None:
            self.cancel(ctx, "cancelled")

    def _on_credit(self, msg: tuple) -> None:
        if len(msg) != 3 or type(msg[2]) is not int or msg[2] < 0:
            self.bad_request(None, "a credit is {:credit, id, n} with n >= 0")
            return
        ctx = self._calls.get(msg[1])  # type: ignore[arg-type]
        if ctx is not None:
            ctx.add_credit(msg[2])

    def _on_health(self, msg: tuple) -> None:
        if len(msg) != 2 or type(msg[1]) is not int or msg[1] < 0:
            self.bad_request(None, "a health request is {:health, id}, id a non-negative integer")
            return
        self.send((HEALTH, msg[1], self.health_report()))

    def _on_describe(self, msg: tuple) -> None:
        if len(msg) != 2 or type(msg[1]) is not int or msg[1] < 0:
            self.bad_request(
                None, "a describe request is {:describe, id}, id a non-negative integer"
            )
            return
        self.send((DESCRIBE, msg[1], self.describe()))

    def _on_shutdown(self, msg: tuple) -> None:
        grace = msg[1] if len(msg) == 2 else None
        if type(grace) not in (int, float) or grace < 0:
            self.bad_request(None, "a shutdown is {:shutdown, grace_ms}")
            return
        self.shutdown(grace)

    # --- reports --------------------------------------------------------------------------

    def describe(self) -> dict:
        """The method catalogue with atom keys, as sent on the wire."""
        return atom_keys(self.registry.describe())

    def health_report(self) -> dict:
        """The health report (PROTOCOL.md §4), with the user's hook merged in."""
        extra: dict[Any, Any] = {}
        loaded = list(_loaded_models)
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
        if self.draining:
            status = "draining"
        elif len(self._calls) >= self.max_inflight or self._running_sync() >= self.threads:
            status = "busy"
        else:
            status = "healthy"
        return {
            A("status"): A(status),
            A("worker_id"): self.worker_id,
            A("pid"): os.getpid(),
            A("uptime_ms"): int((time.monotonic() - self.started) * 1000),
            A("memory_mb"): _rss_mb(),
            A("inflight"): len(self._calls),
            A("served"): self.served,
            A("failed"): self.failed,
            A("loaded_models"): loaded,
            A("extra"): extra,
        }

    def _running_sync(self) -> int:
        # Counted from the calls in flight (not from free slots), so a call whose
        # terminal was just sent never counts, even before its thread moves on.
        with self._lock:
            return sum(
                1 for c in self._calls.values() if c.state == RUNNING and not c.spec.is_async
            )

    # --- running sync calls ---------------------------------------------------------------

    def run_sync(self, ctx: CallContext | None) -> None:
        """Run ``ctx`` (a call ``handle`` returned), then queued sync calls, on this thread."""
        execute, next_sync = self._execute_sync, self._next_sync
        while ctx is not None:
            execute(ctx)
            ctx = next_sync()

    def run_one(self, ctx: CallContext) -> CallContext | None:
        """Run one sync call on this thread; returns the next queued one (its slot kept) or None."""
        self._execute_sync(ctx)
        return self._next_sync()

    def _next_sync(self) -> CallContext | None:
        lock = self._lock
        lock.acquire()  # (see _on_call: nothing here raises)
        queue = self._sync_queue
        while queue:
            ctx = queue.popleft()
            if ctx.state == QUEUED:
                lock.release()
                return ctx
        self._sync_free += 1
        lock.release()
        return None

    def _execute_sync(self, ctx: CallContext) -> None:
        # A ContextVar, not a per-thread table: code the call hands its context
        # to (asyncio.to_thread, contextvars.copy_context().run) finds it too.
        token = _current.set(ctx)
        spec = ctx.spec
        try:
            try:
                # Only from here on (inside the try) may an interrupt land in this thread.
                lock = ctx._lock
                lock.acquire()
                if ctx.state != QUEUED:
                    lock.release()
                    return  # answered already (cancelled while queued)
                if ctx.cancel_reason is not None:
                    lock.release()
                    raise CallCancelled(ctx.cancel_reason)
                ctx.state = RUNNING
                ctx._thread_id = get_ident()
                ctx._in_user = True
                lock.release()
                kwargs = ctx.kwargs
                result = spec.fn(*ctx.args, **kwargs) if kwargs else spec.fn(*ctx.args)
                if spec.is_generator:
                    result = self._drive_generator(ctx, result)
            except BaseException:
                ctx._leave_user()  # before anything else: no interrupt while it is handled
                raise
            # Still interruptible while the result is encoded: an interrupt landing
            # here is caught below; _finish leaves user code under the call's lock.
            self._finish_ok(ctx, result, True)
        except CallCancelled:
            ctx._leave_user()
            self._finish_cancelled(ctx)
        except BaseException as exc:
            ctx._leave_user()
            self._finish_exception(ctx, exc)
        finally:
            _current.reset(token)

    def _drive_generator(self, ctx: CallContext, gen: Any) -> Any:
        step = gen.__next__
        try:
            while True:
                try:
                    item = step()
                except StopIteration as stop:
                    return stop.value
                ctx.emit(item)
        finally:
            ctx._leave_user()
            gen.close()

    def write_chunk_locked(self, ctx: CallContext, data: Any) -> None:
        """Write one ``{:chunk, id, seq, data}``; the caller holds ``ctx._lock``.

        Chunks go through ``write_soon`` when the transport has it: frames are
        coalesced into fewer writes (and flushed within a few milliseconds, or
        before any other frame), which is most of a fast stream's cost.

        Raises:
            CallCancelled: the call already ended.
        """
        if ctx.state == DONE:
            raise CallCancelled(ctx.cancel_reason or "cancelled")
        encode_chunk = ctx.encode_chunk
        if encode_chunk is None:
            encode_chunk = ctx.encode_chunk = self._chunk_encoder(ctx.id)
        try:
            frame = encode_chunk(ctx._seq, data)
        except EncodeError as exc:
            raise ChunkUnencodable(exc) from None
        if len(frame) > self.max_frame:
            raise ChunkUnencodable(self._oversize(frame, data)) from None
        ctx._seq += 1
        if ctx._credit is not None:
            ctx._credit -= 1
        try:
            self._write_soon(frame)
        except OSError:
            pass

    def _chunk_encoder(self, call_id: int) -> Callable[[int, Any], bytes]:
        make = getattr(self.codec, "chunk_encoder", None)
        if make is not None:
            return make(call_id)
        encode = self.encode
        return lambda seq, data: encode((CHUNK, call_id, seq, data))

    # --- running async calls --------------------------------------------------------------

    def warm_up(self) -> None:
        """Start the event loop in the background when the worker has async methods.

        Called after ``:ready``: importing asyncio costs more than the rest of
        a worker's start, and sync calls, health and describe need none of it.
        """
        if self.registry.has_async and self._loop is None:
            import threading

            threading.Thread(target=self._ensure_loop, name="snakepit-warm-up", daemon=True).start()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._loop is None:
                self._loop = self._start_loop()
            return self._loop

    def _start_loop(self) -> asyncio.AbstractEventLoop:
        import asyncio
        import threading

        loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            loop.run_forever()

        threading.Thread(target=run, name="snakepit-asyncio", daemon=True).start()
        started.wait()
        return loop

    def _start_async(self, ctx: CallContext) -> None:
        loop = self._ensure_loop()
        ctx.loop = loop
        loop.call_soon_threadsafe(self._spawn_task, ctx)

    def _spawn_task(self, ctx: CallContext) -> None:
        if ctx.state == DONE:
            return
        if ctx.cancel_reason is not None:
            self._finish_cancelled(ctx)
            return
        task = ctx.loop.create_task(self._run_async(ctx))  # type: ignore[union-attr]
        ctx.task = task
        # A task cancelled before its first step never runs its body, so the
        # terminal for that case is sent from here (``_finish`` sends only one).
        task.add_done_callback(lambda t: t.cancelled() and self._finish_cancelled(ctx))

    async def _run_async(self, ctx: CallContext) -> None:
        import asyncio

        _current.set(ctx)
        spec = ctx.spec
        with ctx._lock:
            if ctx.state == QUEUED:
                ctx.state = RUNNING
        try:
            ctx.check_cancelled()
            if spec.is_async_generator:
                result = await self._drive_async_generator(ctx, spec.fn(*ctx.args, **ctx.kwargs))
            else:
                result = await spec.fn(*ctx.args, **ctx.kwargs)
        except (asyncio.CancelledError, CallCancelled):
            self._finish_cancelled(ctx)
        except BaseException as exc:
            self._finish_exception(ctx, exc)
        else:
            self._finish_ok(ctx, result)

    async def _drive_async_generator(self, ctx: CallContext, agen: Any) -> None:
        step = agen.__anext__
        try:
            while True:
                try:
                    item = await step()
                except StopAsyncIteration:
                    return None
                await ctx.asend(item)
        finally:
            await agen.aclose()

    # --- cancellation and deadlines -------------------------------------------------------

    def cancel(self, ctx: CallContext, reason: str) -> None:
        """Stop a call as soon as possible; its terminal follows when it has stopped."""
        state = ctx.request_cancel(reason)
        if state == DONE:
            return
        if ctx.spec.is_async:
            task, loop = ctx.task, ctx.loop
            if task is not None and loop is not None:
                loop.call_soon_threadsafe(task.cancel)
        elif state == QUEUED:
            self._finish_cancelled(ctx)
        else:
            ctx.interrupt()

    def _expire(self, serial: int, call_id: int) -> None:
        ctx = self._calls.get(call_id)
        if ctx is not None and ctx.serial == serial and ctx.state != DONE:
            self.cancel(ctx, "timeout")

    def _live_deadlines(self) -> list[tuple[float, int, int]]:
        with self._lock:
            return [(c.deadline, c.serial, c.id) for c in self._calls.values() if c.armed]

    def arm_deadlines(self) -> None:
        """Arm the deadlines of calls that were run at once without one (``lazy_deadlines``)."""
        with self._lock:
            pending = [c for c in self._calls.values() if c.serial and not c.armed]
        for ctx in pending:
            ctx.armed = True
            self._deadlines.add(ctx.deadline, ctx.serial, ctx.id)  # type: ignore[arg-type]

    # --- terminals ------------------------------------------------------------------------

    def _finish(self, ctx: CallContext, frame: bytes, ok: bool, leave_user: bool = False) -> None:
        lock = ctx._lock
        lock.acquire()  # acquire/release rather than `with`: see _on_call
        try:
            if leave_user:  # the same as ctx._leave_user(), in this one locked section
                ctx._in_user = False
                if ctx._interrupted and ctx._thread_id:
                    _set_async_exc(ctx._thread_id, None)
            if ctx.state == DONE:
                return
            ctx.state = DONE
        finally:
            lock.release()
        lock = self._lock
        lock.acquire()
        self._calls.pop(ctx.id, None)
        if ok:
            self.served += 1
        else:
            self.failed += 1
        if self.draining and not self._calls and self._idle is not None:
            self._idle.notify_all()
        lock.release()
        try:
            self._write(frame)
        except OSError:
            pass

    def _finish_ok(self, ctx: CallContext, result: Any, leave_user: bool = False) -> None:
        try:
            frame = self._encode_ok(ctx.id, result)
            if len(frame) > self.max_frame:
                raise self._oversize(frame, result)
        except EncodeError as exc:
            if leave_user:
                ctx._leave_user()
            self._finish_error(ctx, unencodable_error(exc, "result"))
            return
        self._finish(ctx, frame, True, leave_user)

    def _oversize(self, frame: bytes, value: Any) -> EncodeError:
        """The error for a reply the peer would refuse: over ``max_frame`` (``--max-frame``)."""
        exc = EncodeError(
            f"its frame of {len(frame)} bytes is over the limit of {self.max_frame} bytes",
            type(value).__qualname__,
        )
        exc.details = {"size": len(frame), "max_frame": self.max_frame}  # type: ignore[attr-defined]
        return exc

    def _finish_error(self, ctx: CallContext, error: dict) -> None:
        self._finish(ctx, self.encode((ERROR, ctx.id, error)), False)

    def _finish_exception(self, ctx: CallContext, exc: BaseException) -> None:
        if isinstance(exc, ChunkUnencodable):
            self._finish_error(ctx, unencodable_error(exc.error, "chunk"))
            return
        try:
            message = str(exc)
        except Exception:
            message = f"<unprintable {type(exc).__name__}>"
        error = error_map("exception", type(exc).__name__, message, format_traceback(exc))
        details = getattr(exc, "details", None)
        if isinstance(details, dict):
            # The exception's own data, keys as the user wrote them (binaries, not atoms).
            error[K_DETAILS] = dict(details)
        self._finish_error(ctx, error)

    def _finish_cancelled(self, ctx: CallContext) -> None:
        reason = ctx.cancel_reason or "cancelled"
        if reason == "timeout":
            error = error_map(
                "timeout", "TimeoutError", f"call {ctx.method!r} ran past its deadline"
            )
        else:
            error = error_map("cancelled", "CallCancelled", f"call {ctx.method!r} was {reason}"
                              if reason != "cancelled" else f"call {ctx.method!r} was cancelled",
                              reason=reason)  # fmt: skip
        self._finish_error(ctx, error)

    def _reject(self, cid: int, kind: str, type_: str, message: str, **details: Any) -> None:
        if cid in self._calls:  # never a second terminal for an id in flight
            self._violation(cid, f"{kind}: {message}")
            return
        self.failed += 1
        self.send((ERROR, cid, error_map(kind, type_, message, **details)))

    # --- shutdown -------------------------------------------------------------------------

    def shutdown(self, grace_ms: float | None = None) -> None:
        """Drain (refuse new calls, let running ones finish within the grace), ``:bye``, exit."""
        with self._lock:
            if self.draining:
                return
            self.draining = True
        grace = (self.default_grace_ms if grace_ms is None else grace_ms) / 1000.0
        import threading

        threading.Thread(target=self._drain, args=(grace,), name="snakepit-drain",
                         daemon=True).start()  # fmt: skip

    def _drain(self, grace: float) -> None:
        self._wait_idle(grace)
        self.cancel_all("shutdown")
        self._wait_idle(1.0)
        self.send((BYE, self.stats()))
        self.exit()

    def _wait_idle(self, seconds: float) -> bool:
        import threading  # at shutdown only: `threading` is not free to import at start

        end = time.monotonic() + seconds
        with self._lock:
            if self._idle is None:
                self._idle = threading.Condition(self._lock)
            while self._calls:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def cancel_all(self, reason: str) -> None:
        """Cancel every call in flight."""
        with self._lock:
            ctxs = list(self._calls.values())
        for ctx in ctxs:
            self.cancel(ctx, reason)

    def abort(self, wait: float = 0.2) -> None:
        """End of input: cancel everything, give it ``wait`` seconds, and exit."""
        self.aborted = True
        self.draining = True
        self.cancel_all("shutdown")
        self._wait_idle(wait)
        self.exit()

    def stats(self) -> dict:
        """The ``:bye`` statistics."""
        return {
            A("served"): self.served,
            A("failed"): self.failed,
            A("uptime_ms"): int((time.monotonic() - self.started) * 1000),
        }

    def exit(self) -> None:
        """Tell the transport to exit (once)."""
        with self._lock:
            if self._exiting:
                return
            self._exiting = True
        if self in _active:
            _active.remove(self)
        self.on_exit()


class SyncPool:
    """Runs a dispatcher's sync calls on ``threads`` plain threads (for non-Port transports)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        import queue
        import threading

        self.dispatcher = dispatcher
        self._queue: queue.SimpleQueue[CallContext] = queue.SimpleQueue()
        for i in range(dispatcher.threads):
            threading.Thread(target=self._run, name=f"snakepit-sync-{i}", daemon=True).start()

    def handle(self, msg: Any) -> None:
        """Dispatch ``msg``; a sync call it yields runs on the pool."""
        ctx = self.dispatcher.handle(msg)
        if ctx is not None:
            self._queue.put(ctx)

    def _run(self) -> None:
        while True:
            self.dispatcher.run_sync(self._queue.get())


def set_loaded_models(models: list[Any]) -> None:
    """Remember the loaded models (for health reports) and publish them."""
    _loaded_models[:] = list(models)
    for d in active_dispatchers():
        d.publish("loaded_models", list(models))
