"""The dispatcher, a switchboard: decoded supervisor messages in, protocol terms out.

It knows nothing of file descriptors or gRPC and runs no call itself: it
checks each message, admits calls into the ``CallTable`` or refuses them, and
cancels, times out and drains them. The ``CallRunner`` runs them, ``Health``
reports. A transport hands it decoded messages (``handle``), which returns a
sync call the transport's own thread should now run (``run_sync``): the Port
transport runs it on the thread that read it (leader/followers).
"""

from __future__ import annotations

import itertools
import os

from . import _state, _wire
from ._calls import CallRunner
from ._context import DONE, QUEUED, CallContext, ChunkOutlet
from ._health import Health
from ._methods import NO_KWARGS
from ._metrics import Metrics, clock
from ._table import CallTable
from ._timers import Deadlines
from ._tracing import TRACEPARENT, trace
from ._wire import NUMBERS, call_problem, check_opts, error_map, int_or_none, short
from .codec import Atom
from .errors import BadArguments, MethodNotFound

A = Atom

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ._registry import Registry


__all__ = ["Dispatcher", "beam_calls"]

# The ``beam_calls`` of every dispatcher serving now (the last one is asked first).
_BEAM_SOURCES: list[Callable[[bool], Any]] = []


def beam_calls() -> Any:
    """The ``BeamCalls`` of the connection serving this process, or None when not serving."""
    for source in reversed(_BEAM_SOURCES):
        found = source(False)  # (one that was announced functions, if any)
        if found is not None:
            return found
    return _BEAM_SOURCES[-1](True) if _BEAM_SOURCES else None


class Dispatcher:
    """Serves one supervisor connection.

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
        max_frame: a result or chunk frame larger than this is ``:unencodable``.
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
        self.encode = codec.encode
        self._write = write
        self.lazy_deadlines = lazy_deadlines
        self.threads = threads
        self.max_inflight = max_inflight
        self.worker_id = worker_id or str(os.getpid())
        self.on_exit = on_exit or (lambda: None)
        self.default_grace_ms = default_grace_ms
        self.table = table = CallTable(threads)
        self._calls = table.calls  # (the same dict: one attribute lookup less per call)
        self._outlet = ChunkOutlet(codec, write_soon or write, max_frame)
        self.metrics = metrics = Metrics(list(registry.methods), table)
        self._runner = runner = CallRunner(table, codec, write, max_frame, metrics)
        self.health = health = Health(registry, table, self.worker_id, threads, max_inflight,
                                      metrics)  # fmt: skip
        # The runner's and the reports' own methods, not wrappers: run_sync is
        # on every call's path, and a wrapper would add a call to each.
        self.run_sync = runner.run_sync
        self.run_one = runner.run_one
        self.health_report = health.report
        self.describe = health.describe
        self.stats = health.stats
        self._deadlines = Deadlines(self._expire, self._live_deadlines)
        self._serials = itertools.count(1)
        self._exiting = False
        self.aborted = False
        self._handlers = {
            _wire.T_CALL: self._on_call,
            _wire.T_CANCEL: self._on_cancel,
            _wire.T_CREDIT: self._on_credit,
            _wire.T_HEALTH: self._on_health,
            _wire.T_DESCRIBE: self._on_describe,
            _wire.T_SHUTDOWN: self._on_shutdown,
            _wire.T_BEAM_FUNCTIONS: self._on_beam_functions,
            _wire.T_BEAM_REPLY: self._on_beam_reply,
        }
        # (1.1) Calls into the BEAM (_beam.BeamCalls), made on first use: a worker
        # that never calls the BEAM never imports it. ``on_beam_wait`` is the
        # transport's: how a thread waits for a beam reply (see BeamCalls).
        self._beam: Any = None
        self.on_beam_wait: Callable[[Any, float | None, Any], bool] | None = None
        _state.serving(self.publish)
        _BEAM_SOURCES.append(self.beam_calls)
        metrics.serving()

    # --- output ---------------------------------------------------------------------------

    def send(self, term: Any) -> None:
        """Encode and write one term; a vanished peer is ignored (end of input follows)."""
        try:
            self._write(self.encode(term))
        except OSError:
            pass

    def send_ready(self) -> None:
        """Send the ``{:ready, info}`` frame."""
        self.send((_wire.READY, self.health.ready()))

    def publish(self, name: str, data: Any) -> None:
        """Push an ``{:event, name, data}`` frame."""
        self.send((_wire.EVENT, name, data))

    # --- refusals -------------------------------------------------------------------------

    def bad_request(self, call_id: int | None, message: str) -> None:
        """Answer a malformed frame or envelope."""
        if call_id is not None and call_id in self._calls:
            self._violation(call_id, message)
            return
        self.table.failed += 1
        self.metrics.refuse("bad_request")
        self.send((_wire.ERROR, call_id, error_map("bad_request", "BadRequest", message)))

    def _violation(self, call_id: int, message: str) -> None:
        """A refusal naming an id in flight: reported out of band, never as a second terminal.

        The call in flight keeps its one terminal; the supervisor learns of the
        protocol violation from a ``:log`` frame at ``:error``.
        """
        self.table.failed += 1
        text = f"refused a frame naming a call id in flight (meta call_id): {message}"
        self.send((_wire.LOG, A("error"), text, {A("logger"): "snakepit", A("call_id"): call_id}))

    def _reject(self, cid: int, kind: str, type_: str, message: str, **details: Any) -> None:
        if cid in self._calls:  # never a second terminal for an id in flight
            self._violation(cid, f"{kind}: {message}")
            return
        self.table.failed += 1
        self.metrics.refuse(kind)
        self.send((_wire.ERROR, cid, error_map(kind, type_, message, **details)))

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
            self.bad_request(*call_problem(cid, name, args, kwargs, opts))
            return None
        timeout_ms = credit = meta = beam_ref = None
        if opts:
            timeout_ms = opts.get("timeout_ms")
            credit = opts.get("credit")
            meta = opts.get("meta")
            beam_ref = opts.get("beam_call")
            if not (
                (timeout_ms is None or (type(timeout_ms) in NUMBERS and timeout_ms > 0))
                and (credit is None or (type(credit) is int and credit >= 0))
                and (meta is None or type(meta) is dict)
            ):
                self.bad_request(cid, check_opts(opts) or "bad opts")
                return None
        return self.accept_call(cid, name, args, kwargs, timeout_ms, credit, meta, beam_ref)

    def accept_call(
        self, cid: int, name: str, args: list, kwargs: dict,
        timeout_ms: float | None, credit: int | None, meta: dict | None,
        beam_ref: int | None = None,
    ) -> CallContext | None:  # fmt: skip
        """Act on a well-formed call (its shape and opts checked), as ``handle`` does.

        The Port transport calls it straight from the codec's ``call_fields``
        when the frame is a plain call envelope; every other call comes
        through ``handle``, which checks the envelope first. ``beam_ref`` (1.1,
        ``opts.beam_call``): the call was made by the BEAM function serving
        this worker's beam call ``beam_ref`` (see ``_refuse_reentry``).
        """
        spec = self.registry.methods.get(name)
        if spec is None:
            exc = MethodNotFound(name, sorted(self.registry.methods))
            self._reject(cid, "unknown_method", "MethodNotFound", str(exc), known=exc.known)
            return None
        plain = spec.plain_arity  # (fewest, most) positional args when a length check binds them
        exact = spec.exact_types  # {n args: their types} when their types alone check them
        if not kwargs and (
            (plain is not None and plain[0] <= len(args) <= plain[1])
            or (exact is not None and exact.get(len(args)) == tuple(map(type, args)))
        ):
            bargs: Any = args  # (a list: the call spreads it cheaper than a tuple() of it)
            bkwargs: dict = NO_KWARGS
        else:
            try:
                bargs, bkwargs = spec.bind(args, kwargs)
            except BadArguments as exc:
                self._reject(
                    cid, "bad_arguments", "BadArguments", str(exc), signature=exc.signature
                )
                return None
        if spec.timeout is not None:
            spec_ms = spec.timeout * 1000.0
            timeout_ms = spec_ms if timeout_ms is None else min(timeout_ms, spec_ms)
        now = clock()  # (time.monotonic()) the call's start for its metrics, its deadline's base
        deadline = None if timeout_ms is None else now + timeout_ms / 1000.0
        if beam_ref is not None and self._refuse_reentry(cid, spec, beam_ref):
            return None
        ctx = CallContext(
            self._outlet, cid, spec, bargs, bkwargs, meta or {}, deadline, credit, now
        )
        if meta and TRACEPARENT in meta:  # W3C trace context from the caller: a server span
            trace(ctx)
        table = self.table
        calls = self._calls
        run_now = False
        # Admission, inline on the table's fields (see _table). acquire/release,
        # not `with`: this runs for every call, and on CPython 3.11 a with-block
        # costs twice the pair (nothing here can raise).
        table.lock.acquire()
        if table.draining:
            refusal: str | None = "draining"
        elif cid in calls:
            refusal = "duplicate"
        elif len(calls) >= self.max_inflight:
            refusal = "overloaded"
        else:
            refusal = None
            calls[cid] = ctx
            if not spec.is_async:
                if table.sync_free > 0:
                    table.sync_free -= 1
                    run_now = True
                else:
                    table.sync_queue.append(ctx)
        table.lock.release()
        if refusal is not None:
            self._refuse_call(cid, refusal)
            return None
        if deadline is not None:
            ctx.serial = next(self._serials)
            # A call the reading thread runs at once mostly ends long before its
            # deadline: with lazy_deadlines the transport arms it only once the
            # call has run a while (arm_deadlines), saving the heap on every call.
            if not (run_now and self.lazy_deadlines):
                self._deadlines.add(deadline, ctx.serial, cid)
                ctx.armed = True
        if spec.is_async:
            self._runner.start_async(ctx)
        return ctx if run_now else None

    def _on_cancel(self, msg: tuple) -> None:
        if len(msg) != 2:
            self.bad_request(None, "a cancel is {:cancel, id}")
            return
        ctx = self._calls.get(msg[1])
        if ctx is not None:
            self.cancel(ctx, "cancelled")

    def _on_credit(self, msg: tuple) -> None:
        if len(msg) != 3 or type(msg[2]) is not int or msg[2] < 0:
            self.bad_request(None, "a credit is {:credit, id, n} with n >= 0")
            return
        ctx = self._calls.get(msg[1])
        if ctx is not None:
            ctx.add_credit(msg[2])

    def _on_health(self, msg: tuple) -> None:
        self._answer(msg, _wire.HEALTH, "a health request is {:health, id}", self.health_report)

    def _on_describe(self, msg: tuple) -> None:
        self._answer(msg, _wire.DESCRIBE, "a describe request is {:describe, id}", self.describe)

    def _answer(self, msg: tuple, tag: Atom, shape: str, report: Callable[[], dict]) -> None:
        if len(msg) != 2 or type(msg[1]) is not int or msg[1] < 0:
            self.bad_request(None, f"{shape}, id a non-negative integer")
            return
        self.send((tag, msg[1], report()))

    # --- calls into the BEAM (1.1, protocol.md §9) ----------------------------------------

    def beam_calls(self, make: bool = True) -> Any:
        """This connection's ``BeamCalls``, made on first use (unless not ``make``: None then)."""
        beam = self._beam
        if beam is None and make:
            from ._beam import BeamCalls

            with self.table.lock:
                if self._beam is None:
                    self._beam = BeamCalls(self.send, self.on_beam_wait)
                beam = self._beam
        return beam

    def _on_beam_functions(self, msg: tuple) -> None:
        names = msg[1] if len(msg) == 2 else None
        if type(names) is not list or not all(type(n) is str for n in names):
            self.bad_request(None, "a beam_functions is {:beam_functions, names}, names binaries")
            return
        self.beam_calls().announce(names)

    def _on_beam_reply(self, msg: tuple) -> None:
        ref, outcome = (msg[1], msg[2]) if len(msg) == 3 else (None, None)
        if not (
            type(ref) is int and ref >= 0 and type(outcome) is tuple and len(outcome) == 2
            and (outcome[0] == "ok" or outcome[0] == "error")
        ):  # fmt: skip
            self.bad_request(
                None, "a beam reply is {:beam_reply, ref, {:ok, result} | {:error, error}}"
            )
            return
        beam = self._beam
        if beam is not None:
            beam.reply(ref, (outcome[0] == "ok", outcome[1]))

    def _refuse_reentry(self, cid: int, spec: Any, beam_ref: Any) -> bool:
        """Refuse a sync call from a BEAM function that could never get a sync slot.

        The supervisor marks a call made by the BEAM function serving this
        worker's beam call ``beam_ref``. If that beam call is waited for by a
        sync call that holds a slot, and every slot is so held, the new call
        would queue behind calls that wait for it: a deadlock. It is refused at
        once with ``:would_deadlock`` (docs/protocol.md §9).
        """
        beam = self._beam
        if spec.is_async or beam is None or self.table.sync_free > 0:
            return False
        if not beam.would_deadlock(beam_ref, self.threads):
            return False
        held = (
            "its only sync thread"
            if self.threads == 1
            else f"one of its {self.threads} sync threads, all waiting for the BEAM"
        )
        self._reject(
            cid, "would_deadlock", "WouldDeadlock",
            f"call {spec.name!r} would wait for ever: it comes from the BEAM function serving "
            f"beam call {beam_ref}, which the worker waits for in a sync call holding {held}; "
            "make the method async, give the worker more --threads, or call another worker",
        )  # fmt: skip
        return True

    def _on_shutdown(self, msg: tuple) -> None:
        grace: Any = msg[1] if len(msg) == 2 else None
        if type(grace) not in (int, float) or grace < 0:
            self.bad_request(None, "a shutdown is {:shutdown, grace_ms}")
            return
        self.shutdown(grace)

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
            self._runner.finish_cancelled(ctx)
        else:
            ctx.interrupt()

    def _expire(self, serial: int, call_id: int) -> None:
        ctx = self._calls.get(call_id)
        if ctx is not None and ctx.serial == serial and ctx.state != DONE:
            self.cancel(ctx, "timeout")

    def _live_deadlines(self) -> list[tuple[float, int, int]]:
        # (an armed call has a deadline)
        return [(c.deadline, c.serial, c.id) for c in self.table.snapshot() if c.armed]  # type: ignore[misc]

    def arm_deadlines(self) -> None:
        """Arm the deadlines of calls that were run at once without one (``lazy_deadlines``)."""
        pending = [c for c in self.table.snapshot() if c.serial and not c.armed]
        for ctx in pending:
            ctx.armed = True
            self._deadlines.add(ctx.deadline, ctx.serial, ctx.id)  # type: ignore[arg-type]

    # --- shutdown -------------------------------------------------------------------------

    def shutdown(self, grace_ms: float | None = None) -> None:
        """Drain (refuse new calls, let running ones finish within the grace), ``:bye``, exit."""
        table = self.table
        with table.lock:
            if table.draining:
                return
            table.draining = True
        grace = (self.default_grace_ms if grace_ms is None else grace_ms) / 1000.0
        import threading

        threading.Thread(target=self._drain, args=(grace,), name="snakepit-drain",
                         daemon=True).start()  # fmt: skip

    def _drain(self, grace: float) -> None:
        self.table.wait_idle(grace)
        self.cancel_all("shutdown")
        self.table.wait_idle(1.0)
        self.send((_wire.BYE, self.stats()))
        self.exit()

    def cancel_all(self, reason: str) -> None:
        """Cancel every call in flight."""
        for ctx in self.table.snapshot():
            self.cancel(ctx, reason)

    def abort(self, wait: float = 0.2) -> None:
        """End of input: cancel everything, give it ``wait`` seconds, and exit."""
        self.aborted = True
        self.table.draining = True
        if self._beam is not None:
            self._beam.withdraw("the supervisor went away")
        self.cancel_all("shutdown")
        self.table.wait_idle(wait)
        self.exit()

    def warm_up(self) -> None:
        """Start the event loop in the background, after ``:ready``, if any method is async."""
        if self.registry.has_async:
            self._runner.warm_up()

    def exit(self) -> None:
        """Tell the transport to exit (once)."""
        with self.table.lock:
            if self._exiting:
                return
            self._exiting = True
        _state.stopped(self.publish)
        self.metrics.stopped()
        if self.beam_calls in _BEAM_SOURCES:
            _BEAM_SOURCES.remove(self.beam_calls)
        self.on_exit()
