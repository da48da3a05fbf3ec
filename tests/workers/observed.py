"""A worker for the observability tests (tests/test_observability.py, the Elixir metrics test).

With ``OBSERVED_OTEL=1`` it configures the OpenTelemetry SDK with an
in-memory exporter at import, as a user's worker would configure its own
exporter; ``finished_spans()`` returns what was exported. Without it,
OpenTelemetry is never imported.
"""

from __future__ import annotations

import logging
import os
import time

import snakepit_py as snakepit
from snakepit_py import current_call

EXPORTER = None
if os.environ.get("OBSERVED_OTEL") == "1":
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    EXPORTER = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)

log = logging.getLogger("observed")


@snakepit.method
def add(a: int, b: int) -> int:
    return a + b


@snakepit.method
def announce(name: str, data: object) -> None:
    snakepit.publish(name, data)


@snakepit.method
def sleep_ms(ms: int) -> int:
    time.sleep(ms / 1000)
    return ms


@snakepit.method
def boom() -> None:
    raise KeyError("boom")


@snakepit.method
def count(n: int):
    yield from range(n)
    return n


@snakepit.method
def traced(note: str) -> dict:
    """Opens a span of its own inside the call's and logs a warning under it."""
    tp = current_call().traceparent
    if EXPORTER is not None:
        from opentelemetry import trace

        with trace.get_tracer("observed").start_as_current_span("inner"):
            log.warning("inside %s", note)
    else:
        log.warning("inside %s", note)
    return {"traceparent": tp}


@snakepit.method
def traced_boom() -> None:
    raise ValueError("traced failure")


@snakepit.method
def loaded(names: list, seconds: float) -> int:
    from snakepit_py import _metrics

    _metrics.observe_model_load(seconds)
    snakepit.report_loaded(names)
    return len(names)


@snakepit.method
def otel_imported() -> bool:
    import sys

    return any(name.startswith("opentelemetry") for name in sys.modules)


@snakepit.method
def finished_spans() -> list:
    if EXPORTER is None:
        return []
    out = []
    for span in EXPORTER.get_finished_spans():
        ctx, parent = span.get_span_context(), span.parent
        out.append({
            "name": span.name,
            "kind": span.kind.name,
            "trace_id": f"{ctx.trace_id:032x}",
            "span_id": f"{ctx.span_id:016x}",
            "parent_span_id": f"{parent.span_id:016x}" if parent else None,
            "attributes": {k: v for k, v in (span.attributes or {}).items()},
            "status": span.status.status_code.name,
        })  # fmt: skip
    return out
