"""Metrics and traces (docs/observability.md), against the real libraries.

The worker's own endpoint (``--metrics-addr``) and the BEAM's
(``Snakepit.Metrics``) are scraped over HTTP and parsed with
``prometheus_client``'s parser; spans are read from the OpenTelemetry SDK's
in-memory exporter inside the worker (tests/workers/observed.py).
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.request

import pytest
from conftest import ROOT, worker_path
from prometheus_client.parser import text_string_to_metric_families

from snakepit_py.errors import CallError
from snakepit_py.testing import FakeSupervisor

WORKER = worker_path("observed.py")
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT}-01"


def scrape(address: str) -> dict:
    """{(sample name, frozen labels): value} of one scrape, parsed by prometheus_client."""
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def bucket_counts(samples: dict, name: str, **labels: str) -> dict[float, float]:
    return {
        float(dict(key)["le"]): v
        for (n, key), v in samples.items()
        if n == name + "_bucket" and labels.items() <= dict(key).items()
    }


@pytest.fixture(scope="module")
def exported():
    with FakeSupervisor(
        WORKER, extra_args=["--metrics-addr", "127.0.0.1:0"], env={"OBSERVED_OTEL": "1"}
    ) as sup:
        yield sup


def test_the_health_report_counts_every_call_exactly():
    with FakeSupervisor(WORKER) as sup:
        for _ in range(7):
            assert sup.call("add", 1, 2) == 3
        with pytest.raises(CallError):
            sup.call("boom")
        assert list(sup.stream("count", 4)) == [0, 1, 2, 3]
        assert sup.call("sleep_ms", 20) == 20
        metrics = sup.health()["metrics"]
    add = metrics["methods"]["add"]
    assert (add["count"], add["ok"], add["errors"]) == (7, 7, {})
    assert metrics["methods"]["boom"]["errors"] == {"exception": 1}
    assert metrics["methods"]["count"]["chunks"] == 4
    sleep = metrics["methods"]["sleep_ms"]
    # Given a 20 ms call, when its histogram is read, then it holds 20 ms and more
    assert sleep["sum_ns"] >= 20e6 and max(sleep["buckets"]) >= (20_000_000).bit_length()
    assert metrics["queue_wait"]["count"] == 10  # every call, 0 s for those that did not wait
    assert metrics["inflight"] == 0 and metrics["process"]["resident_memory_bytes"] > 0


def test_without_a_configured_sdk_nothing_imports_opentelemetry():
    with FakeSupervisor(WORKER) as sup:
        got = sup.call("traced", "x", meta={"traceparent": TRACEPARENT})
        assert got == {"traceparent": TRACEPARENT}  # the caller's, passed on
        assert sup.call("otel_imported") is False
        (log,) = [frame for frame in sup.logs if frame[2] == "inside x"]
        assert log[3]["trace_id"] == TRACE_ID and log[3]["span_id"] == PARENT
        assert log[3]["method"] == "traced"


def test_the_worker_endpoint_serves_what_was_counted(exported):
    address = exported.ready["metrics_addr"]
    before = scrape(address)
    for _ in range(5):
        exported.call("add", 2, 3)
    exported.call("sleep_ms", 30)
    after = scrape(address)
    ok = {"method": "add", "outcome": "ok"}
    delta = value(after, "snakepit_calls_total", **ok) - before.get(
        ("snakepit_calls_total", frozenset(ok.items())), 0
    )
    assert delta == 5
    sleeps = bucket_counts(after, "snakepit_call_duration_seconds", method="sleep_ms")
    assert all(n == 0 for le, n in sleeps.items() if le < 0.03)
    assert sleeps[float("inf")] == 1
    assert value(after, "snakepit_call_duration_seconds_sum", method="sleep_ms") >= 0.03
    assert value(after, "process_resident_memory_bytes") > 0  # the process collector


def test_a_traced_call_runs_in_a_server_span_continuing_the_callers_trace(exported):
    got = exported.call("traced", "y", meta={"traceparent": TRACEPARENT})
    with pytest.raises(CallError):
        exported.call("traced_boom", meta={"traceparent": TRACEPARENT})
    spans = {s["name"]: s for s in exported.call("finished_spans")}
    server, inner, failed = spans["traced"], spans["inner"], spans["traced_boom"]
    assert (server["kind"], server["trace_id"], server["parent_span_id"]) == (
        "SERVER",
        TRACE_ID,
        PARENT,
    )
    assert server["attributes"]["rpc.system"] == "snakepit"
    assert server["attributes"]["rpc.method"] == "traced"
    assert inner["parent_span_id"] == server["span_id"]  # the user's span is its child
    assert got["traceparent"] == f"00-{TRACE_ID}-{server['span_id']}-01"
    assert failed["status"] == "ERROR" and failed["attributes"]["error.type"] == "ValueError"
    (log,) = [f for f in exported.logs if f[2] == "inside y"]
    assert (log[3]["trace_id"], log[3]["span_id"]) == (TRACE_ID, inner["span_id"])


@pytest.mark.beam
@pytest.mark.skipif(shutil.which("mix") is None, reason="needs mix on PATH")
def test_across_the_bridge_the_beam_endpoint_and_the_trace():
    proc = subprocess.Popen(
        ["mix", "run", "../tests/beam/observability.exs"],
        cwd=ROOT / "elixir_harness", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line.rstrip("\n"))
            if line.startswith("READY"):
                break
        assert lines and lines[-1] == "READY", "\n".join(lines[-40:])
        port = next(x.split()[1] for x in lines if x.startswith("PORT "))
        samples = scrape(f"127.0.0.1:{port}")
    finally:
        proc.communicate("\n", timeout=60)
    pool = {"pool": "obs"}
    # The workers' own counts, from their health reports, labelled by pool
    assert value(samples, "snakepit_calls_total", **pool, method="add", outcome="ok") == 5
    assert value(samples, "snakepit_calls_total", **pool, method="boom", outcome="exception") == 2
    # The pool's, from the call events: durations as observed
    call = {**pool, "method": "sleep_ms", "outcome": "ok"}
    assert value(samples, "snakepit_pool_call_duration_seconds_count", **call) == 1
    assert value(samples, "snakepit_pool_call_duration_seconds_sum", **call) >= 0.03
    counts = bucket_counts(samples, "snakepit_pool_call_duration_seconds", **call)
    assert all(n == 0 for le, n in counts.items() if le < 0.03)
    add = {**pool, "method": "add", "outcome": "ok"}
    assert value(samples, "snakepit_pool_call_duration_seconds_count", **add) == 5
    assert value(samples, "snakepit_pool_queue_depth", **pool) == 0
    assert value(samples, "snakepit_pool_workers", **pool, state="idle") == 1
    assert value(samples, "snakepit_pool_queue_wait_seconds_count", **pool) == 10
    # The trace: the Python span continues the traceparent the Elixir caller sent
    spans = [x.split()[1:] for x in lines if x.startswith("SPAN ")]
    (server,) = [s for s in spans if s[0] == "traced"]
    assert server[1:3] == ["SERVER", "4bf92f3577b34da6a3ce929d0e0e4736"]
    assert server[4] == "00f067aa0ba902b7"
    child = next(x.split()[1] for x in lines if x.startswith("CHILD "))
    assert child == f"00-4bf92f3577b34da6a3ce929d0e0e4736-{server[3]}-01"


def test_beam_calls_are_counted_by_function_and_outcome():
    functions = {"double": lambda x: 2 * x}
    with FakeSupervisor(worker_path("beam_caller.py"), beam_functions=functions) as sup:
        for i in range(3):
            assert sup.call("ask", "double", i) == 2 * i
        beam = sup.health()["metrics"]["beam_calls"]
    assert (beam["double"]["count"], beam["double"]["ok"]) == (3, 3)
