"""Trace context across the bridge: W3C ``traceparent`` in, OpenTelemetry server spans out.

A call whose ``opts.meta`` carries a ``traceparent`` (and maybe a
``tracestate``) is traced (docs/observability.md):

- when the worker's code has imported OpenTelemetry (``opentelemetry.trace``
  is in ``sys.modules``: the user configured a tracer provider and an
  exporter), the call runs inside a SERVER span that continues the caller's
  trace, named and attributed per OpenTelemetry's RPC conventions; spans the
  method opens are its children;
- either way, ``current_call().traceparent`` and the ``:log`` frames' meta
  (``trace_id``, ``span_id``) carry it.

Nothing here imports OpenTelemetry, and a call without a ``traceparent``
costs one test of its (usually empty) meta in ``Dispatcher.accept_call``.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from typing import Any, Protocol

    class CallContext(Protocol):
        """What tracing reads and sets of a call (``_context.CallContext`` has it all)."""

        id: int
        method: str
        meta: dict[Any, Any]
        spec: Any
        span: Any
        cancel_reason: str | None


__all__ = ["TRACEPARENT", "trace", "traceparent", "log_ids", "parse"]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_HEX = frozenset("0123456789abcdef")


def parse(value: Any) -> tuple[str, str, str] | None:
    """``(trace_id, parent span_id, flags)`` of a version-00 ``traceparent``, or None if invalid."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or len(value) < 55:
        return None
    version, trace_id, span_id, flags = (value[:2], value[3:35], value[36:52], value[53:55])
    if value[2] != "-" or value[35] != "-" or value[52] != "-" or version == "ff":
        return None
    if len(value) > 55 and (version == "00" or value[55] != "-"):
        return None
    if not _HEX.issuperset(version + trace_id + span_id + flags):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return trace_id, span_id, flags


def trace(ctx: CallContext) -> None:
    """The call's meta has a ``traceparent``: run it in a server span if OpenTelemetry is in use."""
    otel = sys.modules.get("opentelemetry.trace")
    if otel is None or parse(ctx.meta.get(TRACEPARENT)) is None:
        return
    ctx.spec = _Traced(ctx.spec, ctx)


def traceparent(ctx: CallContext) -> str | None:
    """The call's ``traceparent``: its server span's, else the caller's (see ``CallContext``)."""
    span = getattr(ctx, "span", None)
    if span is not None:
        sc = span.get_span_context()
        return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"
    value = ctx.meta.get(TRACEPARENT) if ctx.meta else None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value if parse(value) is not None else None


def log_ids(ctx: CallContext) -> tuple[str, str] | None:
    """``(trace_id, span_id)`` for a record logged under ``ctx`` now, or None when untraced.

    The span current in OpenTelemetry's context (a user's span inside the call,
    or the call's server span), else the caller's span from the ``traceparent``.
    """
    span = getattr(ctx, "span", None)
    if span is not None:
        otel = sys.modules.get("opentelemetry.trace")
        current = otel.get_current_span() if otel is not None else span
        sc = current.get_span_context()
        if not sc.is_valid:
            sc = span.get_span_context()
        return f"{sc.trace_id:032x}", f"{sc.span_id:016x}"
    parsed = parse(ctx.meta.get(TRACEPARENT)) if ctx.meta else None
    return None if parsed is None else (parsed[0], parsed[1])


class _Traced:
    """A method seen through a server span: ``fn`` opens it around the real one; the rest delegates.

    Only a traced call's context holds one, so untraced calls pay nothing.
    """

    __slots__ = ("_spec", "_ctx", "fn")

    def __init__(self, spec: Any, ctx: CallContext) -> None:
        self._spec = spec
        self._ctx = ctx
        if spec.is_async_generator:
            self.fn = self._async_generator
        elif spec.is_async:
            self.fn = self._async
        elif spec.is_generator:
            self.fn = self._generator
        else:
            self.fn = self._sync

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spec, name)

    def _sync(self, *args: Any, **kwargs: Any) -> Any:
        token = _start(self._ctx)
        try:
            return self._spec.fn(*args, **kwargs)
        except BaseException as exc:
            _failed(self._ctx, exc)
            raise
        finally:
            _end(self._ctx, token)

    def _generator(self, *args: Any, **kwargs: Any) -> Any:
        token = _start(self._ctx)
        try:
            return (yield from self._spec.fn(*args, **kwargs))
        except BaseException as exc:
            _failed(self._ctx, exc)
            raise
        finally:
            _end(self._ctx, token)

    async def _async(self, *args: Any, **kwargs: Any) -> Any:
        token = _start(self._ctx)
        try:
            return await self._spec.fn(*args, **kwargs)
        except BaseException as exc:
            _failed(self._ctx, exc)
            raise
        finally:
            _end(self._ctx, token)

    async def _async_generator(self, *args: Any, **kwargs: Any) -> Any:
        token = _start(self._ctx)
        try:
            async for item in self._spec.fn(*args, **kwargs):
                yield item
        except BaseException as exc:
            _failed(self._ctx, exc)
            raise
        finally:
            _end(self._ctx, token)


def _start(ctx: CallContext) -> Any:
    """Open the call's server span as a child of the caller's and make it current."""
    from opentelemetry import context, trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from ._version import __version__

    meta = ctx.meta
    carrier = {TRACEPARENT: _text(meta.get(TRACEPARENT))}
    if meta.get(TRACESTATE) is not None:
        carrier[TRACESTATE] = _text(meta.get(TRACESTATE))
    parent = TraceContextTextMapPropagator().extract(carrier)
    tracer = trace.get_tracer("snakepit_py", __version__)
    span = tracer.start_span(
        ctx.method,
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={"rpc.system": "snakepit", "rpc.method": ctx.method, "snakepit.call_id": ctx.id},
    )
    ctx.span = span
    return context.attach(trace.set_span_in_context(span, parent))


def _failed(ctx: CallContext, exc: BaseException) -> None:
    """The method raised: ``error.type`` is the exception's class, or ``timeout``/``cancelled``."""
    from opentelemetry.trace import Status, StatusCode

    from .errors import CallCancelled

    span = ctx.span
    if isinstance(exc, (CallCancelled, GeneratorExit)) or type(exc).__name__ == "CancelledError":
        kind = "timeout" if ctx.cancel_reason == "timeout" else "cancelled"
        span.set_attribute("error.type", kind)
        span.set_status(Status(StatusCode.ERROR, f"call {kind}"))
        return
    span.set_attribute("error.type", type(exc).__qualname__)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _end(ctx: CallContext, token: Any) -> None:
    from opentelemetry import context

    try:
        context.detach(token)
    finally:
        ctx.span.end()


def _text(value: Any) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
