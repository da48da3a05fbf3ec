"""Running calls: sync, generator, async and async generator, and writing their terminals.

The runner takes calls the dispatcher accepted (their ``CallContext`` is in
the ``CallTable``) and runs them: sync ones on whatever thread the transport
gives it (``run_sync``), async ones on one event-loop thread started on
demand. Each call ends with exactly one terminal, ``{:ok, id, result}`` or
``{:error, id, error}``: the first ``CallContext.close`` wins, and the call
leaves the table before its terminal is written.
"""

from __future__ import annotations

import _thread

from . import _wire
from ._context import DONE, QUEUED, call_var
from ._metrics import observe
from .errors import CallCancelled, EncodeError

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable
    from typing import Any

    from ._context import CallContext
    from ._metrics import Metrics
    from ._table import CallTable

__all__ = ["CallRunner"]


class CallRunner:
    """Runs the calls of one table and writes their terminals.

    Args:
        table: the calls in flight.
        codec: a codec module (``encode``, and ``encode_ok`` when it has a faster one).
        write: writes one encoded frame; raises OSError when the peer is gone.
        max_frame: a result frame larger than this is ``:unencodable``.
        metrics: where each call's duration, outcome and chunks are counted.
    """

    def __init__(self, table: CallTable, codec: Any, write: Callable[[bytes], None],
                 max_frame: int, metrics: Metrics) -> None:  # fmt: skip
        self._table = table
        self._calls = table.calls  # (the same dict, one attribute lookup less per call)
        self._encode = codec.encode
        self._encode_ok = codec.encode_ok
        self._write = write
        self._max_frame = max_frame
        self._metrics = metrics
        self._durations = metrics.methods  # (the same dict: one attribute lookup less per call)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = _thread.allocate_lock()

    # --- sync calls -----------------------------------------------------------------------

    def run_sync(self, ctx: CallContext | None, one: bool = False) -> CallContext | None:
        """Run ``ctx`` (a call holding a sync slot), then queued sync calls, on this thread.

        With ``one``, run only ``ctx`` and return the next queued call (its slot
        kept), or None: see ``run_one``.
        """
        # The loop body is the whole of running one call, written in place: a
        # function for it would add a call to every call.
        finish, table = self._finish, self._table
        lock, queue = table.lock, table.sync_queue
        while ctx is not None:
            token = call_var.set(ctx)
            spec = ctx.spec
            try:
                try:
                    # Only from here on (inside the try) may an interrupt land in this thread.
                    entered = ctx.enter()  # False: answered already (cancelled while queued)
                    if entered:
                        kwargs = ctx.kwargs
                        result = spec.fn(*ctx.args, **kwargs) if kwargs else spec.fn(*ctx.args)
                        if spec.is_generator:
                            result = self._drive_generator(ctx, result)
                except BaseException:
                    ctx.leave_user()  # before anything else: no interrupt while it is handled
                    raise
                # Still interruptible while the result is encoded: an interrupt landing
                # here is caught below; close() leaves user code under the call's lock.
                if entered:
                    finish(ctx, result, True, True)
            except CallCancelled:
                ctx.leave_user()
                self.finish_cancelled(ctx)
            except BaseException as exc:
                ctx.leave_user()
                self._finish_exception(ctx, exc)
            finally:
                call_var.reset(token)
            # The next queued call takes this slot over; none left: the slot is free.
            lock.acquire()
            ctx = None
            while queue:
                ctx = queue.popleft()
                if ctx.state == QUEUED:
                    break
                ctx = None
            if ctx is None:
                table.sync_free += 1
            lock.release()
            if ctx is not None:
                self._metrics.waited(ctx)  # it queued: its wait ends, its run starts
            if one:
                return ctx
        return None

    def run_one(self, ctx: CallContext) -> CallContext | None:
        """Run one sync call on this thread; returns the next queued one (its slot kept) or None."""
        return self.run_sync(ctx, True)

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
            ctx.leave_user()
            gen.close()

    # --- async calls ----------------------------------------------------------------------

    def warm_up(self) -> None:
        """Start the event loop in the background (importing asyncio is most of a start)."""
        if self._loop is None:
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

    def start_async(self, ctx: CallContext) -> None:
        """Hand an async call to the event loop (starting the loop if need be)."""
        loop = self._ensure_loop()
        ctx.loop = loop
        loop.call_soon_threadsafe(self._spawn_task, ctx)

    def _spawn_task(self, ctx: CallContext) -> None:
        if ctx.state == DONE:
            return
        if ctx.cancel_reason is not None:
            self.finish_cancelled(ctx)
            return
        task = ctx.loop.create_task(self._run_async(ctx))  # type: ignore[union-attr]
        ctx.task = task
        # A task cancelled before its first step never runs its body, so the
        # terminal for that case is sent from here (only the first one is sent).
        task.add_done_callback(lambda t: t.cancelled() and self.finish_cancelled(ctx))  # type: ignore[func-returns-value]

    async def _run_async(self, ctx: CallContext) -> None:
        import asyncio

        call_var.set(ctx)
        spec = ctx.spec
        self._metrics.waited(ctx)  # handed to the loop: its wait ends, its run starts
        ctx.started()
        try:
            ctx.check_cancelled()
            if spec.is_async_generator:
                await self._drive_async_generator(ctx, spec.fn(*ctx.args, **ctx.kwargs))
                result = None  # (an async generator returns nothing)
            else:
                result = await spec.fn(*ctx.args, **ctx.kwargs)
        except (asyncio.CancelledError, CallCancelled):
            self.finish_cancelled(ctx)
        except BaseException as exc:
            self._finish_exception(ctx, exc)
        else:
            self._finish(ctx, result, True)

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

    # --- terminals ------------------------------------------------------------------------

    def _finish(self, ctx: CallContext, value: Any, ok: bool = False,
                leave_user: bool = False) -> None:  # fmt: skip
        """Write the call's terminal, unless it has one: ``value`` is its result when ``ok``,
        else its error map. With ``leave_user`` the call's thread leaves user code first."""
        if ok:
            try:
                frame = self._encode_ok(ctx.id, value)
                if len(frame) > self._max_frame:
                    raise _wire.oversize_error(frame, value, self._max_frame)
            except EncodeError as exc:
                if leave_user:
                    ctx.leave_user()
                self._finish(ctx, _wire.unencodable_error(exc, "result"))
                return
        else:
            frame = self._encode((_wire.ERROR, ctx.id, value))
        if not ctx.close(leave_user):
            return  # answered already: never a second terminal
        observe(self._durations[ctx.method], ctx.t0)  # (its duration: _metrics)
        table = self._table
        lock = table.lock
        lock.acquire()  # acquire/release rather than `with`: once per call, nothing here raises
        self._calls.pop(ctx.id, None)
        if ok:
            table.served += 1
        else:
            table.failed += 1
            self._metrics.failed(ctx.method, value[_wire.K_KIND])
        if ctx._seq:  # a stream: its chunks
            self._metrics.add_chunks(ctx.method, ctx._seq)
        if table.draining and not self._calls and table.idle is not None:
            table.idle.notify_all()
        lock.release()
        try:
            self._write(frame)
        except OSError:
            pass

    def _finish_exception(self, ctx: CallContext, exc: BaseException) -> None:
        if isinstance(exc, _wire.ChunkUnencodable):
            self._finish(ctx, _wire.unencodable_error(exc.error, "chunk"))
            return
        try:
            message = str(exc)
        except Exception:
            message = f"<unprintable {type(exc).__name__}>"
        tb = _wire.format_traceback(exc)
        error = _wire.error_map("exception", type(exc).__name__, message, tb)
        details = getattr(exc, "details", None)
        if isinstance(details, dict):
            # The exception's own data, keys as the user wrote them (binaries, not atoms).
            error[_wire.K_DETAILS] = dict(details)
        self._finish(ctx, error)

    def finish_cancelled(self, ctx: CallContext) -> None:
        """Answer a cancelled (or timed-out) call, unless it was answered already."""
        reason = ctx.cancel_reason or "cancelled"
        if reason == "timeout":
            message = f"call {ctx.method!r} ran past its deadline"
            error = _wire.error_map("timeout", "TimeoutError", message)
        else:
            message = f"call {ctx.method!r} was {reason}"
            error = _wire.error_map("cancelled", "CallCancelled", message, reason=reason)
        self._finish(ctx, error)
