"""examples/elixir/http_service.exs: an :inets HTTP service in front of a real pool.

The script runs under ``mix run`` (the real BEAM, real Python workers of
examples/http_worker.py) and is talked to over real HTTP with ``http.client``:
every route, every error status, the chunked stream, the body size bound and
the JSON encoder and decoder written in the example.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import ROOT

pytestmark = [
    pytest.mark.beam,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("mix") is None, reason="needs mix on PATH"),
]

SCRIPT = "../examples/elixir/http_service.exs"
MAX_BODY = 4096


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "SNAKEPIT_PYTHON": sys.executable, "MIX_ENV": "dev", **extra}


class Service:
    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, body: bytes | str | None = None):
        """(status, headers, raw body bytes) of one request on a fresh connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            if isinstance(body, str):
                body = body.encode()
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body=None):
        if body is not None and not isinstance(body, (str, bytes)):
            body = json.dumps(body)
        status, headers, raw = self.request(method, path, body)
        assert headers.get("Content-Type", "").startswith("application/json"), (status, raw)
        return status, json.loads(raw)


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    # One worker and a queue of one: the overload test fills both.
    env = _env(HTTP_SERVICE_SERVE="1", HTTP_SERVICE_PORT="0", HTTP_SERVICE_POOL_SIZE="1",
               HTTP_SERVICE_MAX_QUEUE="1", HTTP_SERVICE_MAX_BODY=str(MAX_BODY))  # fmt: skip
    proc = subprocess.Popen(
        ["mix", "run", SCRIPT], cwd=ROOT / "elixir_harness", env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    drain = threading.Thread(target=lambda: proc.stdout.read(), daemon=True)
    try:
        port = None
        seen = []
        deadline = time.monotonic() + 300
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "the service ended before serving:\n" + "".join(seen)
            seen.append(line)
            if m := re.search(r"serving on http://127\.0\.0\.1:(\d+)", line):
                port = int(m[1])
        assert port, "".join(seen)
        # keep draining its output so the BEAM never blocks on a full pipe
        drain.start()
        yield Service(port)
    finally:
        proc.terminate()  # `mix run` execs the BEAM: SIGTERM stops the node, and the pool
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if drain.is_alive():
            drain.join(10)
        proc.stdout.close()


def test_health_reports_the_pool(service):
    status, body = service.json("GET", "/health")
    assert status == 200
    assert body["ready"] == 1 and body["max_queue"] == 1
    [worker] = body["workers"]
    assert worker["status"] in ("idle", "busy") and isinstance(worker["os_pid"], int)


def test_predict(service):
    status, body = service.json("POST", "/predict", {"text": "I love this, great stuff"})
    assert (status, body) == (200, {"result": {"label": "positive", "score": 3.5}})


def test_predict_with_bad_arguments_is_400(service):
    status, body = service.json("POST", "/predict", {"txt": "a typo"})
    assert status == 400 and body["error"] == "bad_arguments"
    assert "text" in body["details"]["signature"]
    assert "traceback" not in body


@pytest.mark.parametrize("raw", ["not json", "{", '{"a": 1,}', "[1] 2", '{"a": "\x01"}', ""])
def test_a_body_that_is_not_json_is_400(service, raw):
    status, body = service.json("POST", "/predict", raw)
    assert status == 400 and body["error"] == "bad_request", body


@pytest.mark.parametrize(
    "payload",
    [[1, 2], {"args": 1}, {"kwargs": []}, {"args": [], "extra": True}],
)
def test_a_call_body_of_the_wrong_shape_is_400(service, payload):
    status, body = service.json("POST", "/call/echo", payload)
    assert status == 400 and body["error"] == "bad_request", body


def test_json_round_trips_through_the_beam_and_python(service):
    value = {
        "text": 'quote " backslash \\ newline \n tab \t bell \x07 slash /',
        "unicode": "naïve café 日本 🐍",
        "numbers": [0, -1, 2**62, -(2**40), 1.5, -0.25, 1e300, 6.02e-23],
        "nested": {"a": [{"b": [None, True, False, []]}, {}], "empty": ""},
    }
    status, body = service.json("POST", "/call/echo", {"args": [value]})
    assert (status, body) == (200, {"result": value})
    # escapes the decoder must undo: \u with a surrogate pair, \/ and \b
    raw = '{"args": ["\\ud83d\\udc0d \\u00e9 \\/ \\b"]}'
    assert service.json("POST", "/call/echo", raw) == (200, {"result": "🐍 é / \b"})
    assert service.json("POST", "/call/echo", "")[1] == {"result": None}  # empty body: no args
    kw = {"kwargs": {"value": [1, {"x": "y"}]}}
    assert service.json("POST", "/call/echo", kw) == (200, {"result": [1, {"x": "y"}]})


def test_unknown_method_is_404(service):
    status, body = service.json("POST", "/call/nope")
    assert status == 404 and body["error"] == "unknown_method"
    assert "predict" in body["details"]["known"]


def test_unknown_route_is_404_and_wrong_verb_405(service):
    status, body = service.json("GET", "/nope")
    assert status == 404 and body["error"] == "not_found"
    status, body = service.json("GET", "/predict")
    assert status == 405 and body["error"] == "method_not_allowed"
    assert service.json("DELETE", "/call/echo")[0] == 405


def test_an_exception_is_500_without_its_traceback(service):
    status, body = service.json("POST", "/call/fail", {"args": ["it broke"]})
    assert status == 500
    assert (body["error"], body["type"], body["message"]) == ("exception", "ValueError", "it broke")
    assert "traceback" not in body and "Traceback" not in json.dumps(body)


def test_a_timeout_is_504(service):
    status, body = service.json("POST", "/call/sleep?timeout_ms=300", {"args": [60]})
    assert status == 504 and body["error"] == "timeout"
    # the sleep was cancelled in Python: the worker takes calls again
    assert service.json("POST", "/call/echo", {"args": [1]}) == (200, {"result": 1})


@pytest.mark.parametrize("value", ["0", "-5", "abc", "99999999"])
def test_a_bad_timeout_is_400(service, value):
    status, body = service.json("POST", f"/call/echo?timeout_ms={value}")
    assert status == 400 and "timeout_ms" in body["message"]


def test_a_body_over_the_bound_is_refused_413(service):
    status, _headers, _raw = service.request("POST", "/call/echo", b"[" + b"1," * MAX_BODY + b"1]")
    assert status == 413
    assert service.json("POST", "/call/echo", {"args": ["x" * 100]})[0] == 200


def test_overloaded_is_503(service):
    # The one worker busy, the queue of one full: the next call is refused.
    results = {}

    def call(name, path, payload):
        results[name] = service.json("POST", path, payload)

    # holds the worker until its timeout runs out (then it is cancelled)
    holder = threading.Thread(
        target=call, args=("holder", "/call/sleep?timeout_ms=20000", {"args": [600]})
    )
    holder.start()
    _wait_health(service, lambda h: h["busy"] == 1 and h["queue_depth"] == 0)
    queued = threading.Thread(
        target=call, args=("queued", "/call/echo?timeout_ms=60000", {"args": ["q"]})
    )
    queued.start()
    _wait_health(service, lambda h: h["queue_depth"] == 1)

    status, body = service.json("POST", "/predict", {"text": "good"})
    assert status == 503 and body["error"] == "overloaded"
    assert body["details"] == {"queue_depth": 1, "max_queue": 1}
    assert service.json("GET", "/health")[1]["shed"] >= 1

    holder.join(120)
    queued.join(120)
    assert results["holder"][0] == 504
    assert results["queued"] == (200, {"result": "q"})


def _wait_health(service, ready, timeout=120):
    deadline = time.monotonic() + timeout
    health = None
    while time.monotonic() < deadline:
        health = service.json("GET", "/health")[1]
        if ready(health):
            return health
        time.sleep(0.02)
    raise AssertionError(f"pool never got there: {health}")


def test_a_stream_is_chunked_json_lines(service):
    status, headers, raw = service.request("GET", "/stream/count?n=5&delay=0")
    assert status == 200
    assert headers["Transfer-Encoding"] == "chunked"
    assert headers["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(x) for x in raw.decode().splitlines()]
    assert lines == [{"data": {"i": i}} for i in range(1, 6)] + [{"result": {"sum": 15}}]


def test_a_stream_is_read_as_it_comes(service):
    # the first line is readable before the generator has finished
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=120)
    try:
        conn.request("GET", "/stream/count?n=50&delay=0.05")
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.readline()) == {"data": {"i": 1}}
        rest = [json.loads(x) for x in resp.read().decode().splitlines()]
        assert rest[-1] == {"result": {"sum": 1275}} and len(rest) == 50
    finally:
        conn.close()


def test_an_http_1_0_client_gets_the_stream_unchunked(service):
    with socket.create_connection(("127.0.0.1", service.port), timeout=120) as sock:
        sock.sendall(b"GET /stream/count?n=3&delay=0 HTTP/1.0\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):  # the server closes the connection at the end
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and b"chunked" not in head.lower()
    lines = [json.loads(x) for x in body.decode().splitlines()]
    assert lines == [{"data": {"i": 1}}, {"data": {"i": 2}}, {"data": {"i": 3}},
                     {"result": {"sum": 6}}]  # fmt: skip


def test_stream_errors_before_the_first_chunk_are_statuses(service):
    status, body = service.json("GET", "/stream/nope")
    assert status == 404 and body["error"] == "unknown_method"
    status, body = service.json("GET", "/stream/count?bogus=1")
    assert status == 400 and body["error"] == "bad_arguments"
    status, body = service.json("GET", "/stream/fail?message=oops")
    assert status == 500 and (body["type"], body["message"]) == ("ValueError", "oops")


def test_a_stream_timeout_after_chunks_ends_with_an_error_line(service):
    status, _headers, raw = service.request(
        "GET", "/stream/count?n=1000&delay=0.01&timeout_ms=1000"
    )
    lines = [json.loads(x) for x in raw.decode().splitlines()]
    if status == 200:  # chunks came first: the status is sent, the error is the last line
        assert lines[0] == {"data": {"i": 1}}
        assert lines[-1]["error"]["error"] == "timeout"
    else:
        assert status == 504


def test_the_example_runs_its_own_requests_and_stops():
    run = subprocess.run(["mix", "run", SCRIPT], cwd=ROOT / "elixir_harness", env=_env(),
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "every request answered with the expected status" in run.stdout
    assert "-> 504" in run.stdout and '{"data":{"i":3}}' in run.stdout
    assert run.stderr.strip() == "", run.stderr  # no compiler warnings, no crash reports


def test_the_guide_matches_the_example():
    # docs/http_service.md's commands are the ones run above, its settings the script's
    guide = (ROOT / "docs/http_service.md").read_text()
    script = (ROOT / "examples/elixir/http_service.exs").read_text()
    assert f"cd elixir_harness && mix run {SCRIPT}" in guide
    named = set(re.findall(r"HTTP_SERVICE_([A-Z_]+)", guide))
    read = set(re.findall(r'(?:env|int)\.\("([A-Z_]+)"', script))
    assert named == read
    for status in ("400", "404", "405", "413", "500", "502", "503", "504"):
        assert f"| {status} |" in guide
