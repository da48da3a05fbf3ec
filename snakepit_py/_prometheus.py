"""``--metrics-addr HOST:PORT``: the worker's metrics as a Prometheus endpoint (prometheus_client).

For a worker that no BEAM aggregates (a gRPC deployment: one pod, one
worker). Imported only when the option is given; needs the ``metrics``
extra (``pip install 'snakepit_py[metrics]'``). The families are built at
scrape time from the same plain data a health report carries (``_metrics``),
so a call costs nothing more than it does without the endpoint; the
process collector adds memory, CPU and descriptors. Names and units:
docs/observability.md.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from . import _metrics

__all__ = ["start", "families", "BUCKET_BITS", "parse_address"]

# Exposed bucket bounds: 2**k ns for these k, ~1 us to ~275 s, a factor of 4 apart
# (the counts are kept by bit length: any power of two is an exact bound).
BUCKET_BITS = tuple(range(10, 39, 2))


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` / ``PORT`` (loopback).

    Raises:
        ValueError: no port, or a port that is not a number in 0..65535.
    """
    host, sep, port = text.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--metrics-addr expects HOST:PORT (port 0 picks one), got: {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return (host if sep and host else "127.0.0.1"), int(port)


def buckets(hist: dict[str, Any]) -> list[tuple[str, int]]:
    """Cumulative ``(le, count)`` pairs of a plain-data histogram (``_metrics.histogram``)."""
    counts = hist["buckets"]
    out, seen, ks = [], 0, sorted(counts)
    i = 0
    for k in BUCKET_BITS:
        while i < len(ks) and ks[i] <= k:
            seen += counts[ks[i]]
            i += 1
        out.append((repr(2**k / 1e9), seen))
    out.append(("+Inf", hist["count"]))
    return out


def families(snap: dict[str, Any]) -> list[Any]:
    """The Prometheus metric families of one worker's metrics snapshot."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    calls = CounterMetricFamily(
        "snakepit_calls", "Calls answered, by method and outcome (ok or the error kind).",
        labels=["method", "outcome"],
    )  # fmt: skip
    duration = HistogramMetricFamily(
        "snakepit_call_duration_seconds",
        "Time from a call starting to run to its terminal being sent.", labels=["method"],
    )  # fmt: skip
    chunks = CounterMetricFamily(
        "snakepit_stream_chunks", "Chunks streamed, by method.", labels=["method"]
    )
    for method, entry in sorted(snap["methods"].items()):
        calls.add_metric([method, "ok"], entry["ok"])
        for kind, n in sorted(entry["errors"].items()):
            calls.add_metric([method, str(kind)], n)
        duration.add_metric([method], buckets(entry), entry["sum_ns"] / 1e9)
        chunks.add_metric([method], entry["chunks"])
    wait = snap["queue_wait"]
    queue = HistogramMetricFamily(
        "snakepit_queue_wait_seconds", "Time calls waited in the worker before running."
    )
    queue.add_metric([], buckets(wait), wait["sum_ns"] / 1e9)
    refused = CounterMetricFamily(
        "snakepit_refused_calls", "Calls refused before they ran, by error kind.", labels=["kind"]
    )
    for kind, n in sorted(snap["refused"].items()):
        refused.add_metric([str(kind)], n)
    loads = snap["model_loads"]
    model_load = HistogramMetricFamily("snakepit_model_load_seconds", "Time models took to load.")
    model_load.add_metric([], buckets(loads), loads["sum_ns"] / 1e9)
    beam = CounterMetricFamily(
        "snakepit_beam_calls", "Calls from this worker into the BEAM, by function and outcome.",
        labels=["function", "outcome"],
    )  # fmt: skip
    beam_duration = HistogramMetricFamily(
        "snakepit_beam_call_duration_seconds", "Time calls into the BEAM took.",
        labels=["function"],
    )  # fmt: skip
    for name, entry in sorted(snap["beam_calls"].items()):
        beam.add_metric([name, "ok"], entry["ok"])
        for kind, n in sorted(entry["errors"].items()):
            beam.add_metric([name, str(kind)], n)
        beam_duration.add_metric([name], buckets(entry), entry["sum_ns"] / 1e9)
    return [
        calls, duration, queue, chunks, refused,
        GaugeMetricFamily("snakepit_inflight_calls", "Calls in flight now.", snap["inflight"]),
        GaugeMetricFamily("snakepit_loaded_models", "Models loaded now.", snap["loaded_models"]),
        model_load, beam, beam_duration,
    ]  # fmt: skip


def merged_snapshot() -> dict[str, Any]:
    """The metrics of every connection this process serves, summed (usually just one)."""
    snaps = [m.snapshot() for m in _metrics.sources()]
    if len(snaps) == 1:
        return snaps[0]
    out: dict[str, Any] = {
        "methods": {}, "queue_wait": {"count": 0, "sum_ns": 0, "buckets": {}}, "refused": {},
        "inflight": 0, "loaded_models": 0, "model_loads": _metrics.histogram(
            [0] * _metrics.SLOTS), "beam_calls": {},
    }  # fmt: skip
    for snap in snaps:
        out["inflight"] += snap["inflight"]
        out["loaded_models"] = snap["loaded_models"]
        out["model_loads"] = snap["model_loads"]
        out["beam_calls"] = snap["beam_calls"]
        _add_hist(out["queue_wait"], snap["queue_wait"])
        for kind, n in snap["refused"].items():
            out["refused"][kind] = out["refused"].get(kind, 0) + n
        for name, entry in snap["methods"].items():
            mine = out["methods"].setdefault(
                name, {"count": 0, "sum_ns": 0, "buckets": {}, "ok": 0, "errors": {}, "chunks": 0}
            )
            _add_hist(mine, entry)
            mine["ok"] += entry["ok"]
            mine["chunks"] += entry["chunks"]
            for kind, n in entry["errors"].items():
                mine["errors"][kind] = mine["errors"].get(kind, 0) + n
    return out


def _add_hist(into: dict[str, Any], hist: dict[str, Any]) -> None:
    into["count"] += hist["count"]
    into["sum_ns"] += hist["sum_ns"]
    for k, n in hist["buckets"].items():
        into["buckets"][k] = into["buckets"].get(k, 0) + n


class _Collector:
    """Reads the worker's metrics at each scrape."""

    def collect(self) -> Any:
        yield from families(merged_snapshot())


def start(text: str) -> str:
    """Serve ``/metrics`` on ``text`` (``HOST:PORT``) in a daemon thread; returns the bound address.

    Exits the process (status 2) when the option is malformed, the extra is
    not installed or the address cannot be bound: a deployment that asked for
    metrics should not run without them unnoticed.
    """
    try:
        host, port = parse_address(text)
    except ValueError as exc:
        _refuse(str(exc))
    try:
        from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
    except ImportError:
        _refuse("--metrics-addr needs prometheus_client: pip install 'snakepit_py[metrics]'")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    ProcessCollector(registry=registry)
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        _refuse(f"cannot serve metrics on {text!r}: {exc}")
    bound: Any = server.server_address  # (host, port, ...): a str host, whatever typeshed allows
    bound_host, bound_port = bound[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    address = f"{shown}:{bound_port}"
    _metrics.exporter = address
    print(f"SNAKEPIT_METRICS http://{address}/metrics", file=sys.stderr, flush=True)
    return address


def _refuse(message: str) -> NoReturn:
    import os

    print(f"snakepit-py: {message}", file=sys.stderr, flush=True)
    os._exit(2)
