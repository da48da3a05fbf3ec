"""examples/fastapi_app: the FastAPI app, run by a real uvicorn server in front of real
gRPC workers (token-protected, loopback, port 0), called over HTTP: every route, every
error status, a worker killed mid-call or mid-stream, an HTTP client that goes away."""

from __future__ import annotations

import json
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

pytest.importorskip("grpc")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from snakepit_py.client import GrpcClient  # noqa: E402

APP_DIR = ROOT / "examples" / "fastapi_app"
TOKEN = secrets.token_hex(16)
START_TIMEOUT = 60.0  # a loaded 2-core machine is slow to start Python processes


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAKEPIT_")}
    return dict(env, PYTHONPATH=str(ROOT), **extra)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


class WorkerProc:
    """``snakepit-py worker worker.py --grpc 127.0.0.1:0``, its token in the environment."""

    def __init__(self, log: Path, port: int = 0) -> None:
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "snakepit_py", "worker", "worker.py",
                 "--grpc", f"127.0.0.1:{port}", "--threads", "4"],
                cwd=APP_DIR, env=_env(SNAKEPIT_GRPC_TOKEN=TOKEN),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
            )  # fmt: skip
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        line = self.proc.stdout.readline().decode() if ready else ""
        match = re.fullmatch(r"SNAKEPIT_READY grpc (127\.0\.0\.1:\d+)\n", line)
        if match is None:
            _stop(self.proc, signal.SIGKILL)
            raise AssertionError(f"no ready line: {line!r}\n{log.read_text()}")
        self.address = match[1]

    def stop(self) -> None:
        """Close stdin (the worker exits with its parent), then make sure."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        _stop(self.proc, signal.SIGKILL)

    def inflight(self) -> int:
        """Calls in flight on the worker, from its own health report."""
        with GrpcClient(self.address, token=TOKEN, codec="json") as client:
            return int(client.health()["inflight"])


def start_app(log: Path, workers: list[str], **env: str) -> tuple[subprocess.Popen, str | None]:
    """``uvicorn app:app --port 0`` in APP_DIR; (the process, its base URL or None if it
    exited before listening)."""
    env = {
        "SNAKEPIT_WORKERS": ",".join(workers),
        "SNAKEPIT_GRPC_TOKEN": TOKEN,
        "SNAKEPIT_PROBE_INTERVAL": "0.2",
        **env,
    }
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", "0"],
            cwd=APP_DIR, env=_env(**{k: v for k, v in env.items() if v is not None}),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        match = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", log.read_text())
        if match:
            return proc, match[1]
        if proc.poll() is not None:
            return proc, None
        time.sleep(0.05)
    _stop(proc, signal.SIGKILL)
    raise AssertionError(f"uvicorn did not start:\n{log.read_text()}")


class Stack:
    """Workers, the app in front of them, and an HTTP client on it."""

    def __init__(self, workers: list[WorkerProc], url: str, app_log: Path) -> None:
        self.workers = workers
        self.url = url
        self.app_log = app_log
        self.http = httpx.Client(base_url=url, timeout=60.0)

    def by_address(self, address: str) -> WorkerProc:
        return next(w for w in self.workers if w.address == address)

    def health(self) -> tuple[int, dict[str, Any]]:
        r = self.http.get("/health")
        return r.status_code, r.json()

    def predict(self, features: list[float], **extra: Any) -> httpx.Response:
        return self.http.post("/predict", json={"features": features, **extra})


@contextmanager
def running(tmp: Path, n_workers: int = 2) -> Iterator[Stack]:
    with ExitStack() as cleanup:
        workers = []
        for i in range(n_workers):
            worker = WorkerProc(tmp / f"worker{i}.log")
            cleanup.callback(worker.stop)
            workers.append(worker)
        app_log = tmp / "uvicorn.log"
        proc, url = start_app(app_log, [w.address for w in workers])
        cleanup.callback(_stop, proc)
        assert url, app_log.read_text()
        stack = Stack(workers, url, app_log)
        cleanup.callback(stack.http.close)
        yield stack


def _eventually(check: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _busy_worker(stack: Stack) -> str | None:
    """The address of the worker with a call in flight from the app, if any."""
    busy = [w["address"] for w in stack.health()[1]["workers"] if w["inflight"]]
    return busy[0] if busy else None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running(tmp_path_factory.mktemp("fastapi")) as s:
        yield s


# --- routes ---------------------------------------------------------------------------------


def test_predict_spreads_calls_over_the_workers(stack: Stack) -> None:
    # Given two idle workers: least in flight ties, so calls go round robin
    served = []
    for _ in range(4):
        r = stack.predict([1.0, 2.0, 4.0])
        assert r.status_code == 200, r.text
        assert r.json()["score"] == 1.0 * 0.5 + 2.0 * -0.25 + 4.0 * 0.125
        assert r.json()["n_features"] == 3
        served.append(r.headers["x-snakepit-worker"])
    # Then both workers served, each one call in two
    assert set(served) == {w.address for w in stack.workers}
    assert served[0] != served[1] and served[:2] == served[2:]


def test_stream_is_ndjson_chunks_then_the_result(stack: Stack) -> None:
    with stack.http.stream("GET", "/stream/5") as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-ndjson"
        assert r.headers["x-snakepit-worker"] in {w.address for w in stack.workers}
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert lines[:5] == [{"chunk": {"i": i}} for i in range(5)]
    assert lines[5]["result"]["n"] == 5 and lines[5]["result"]["total"] == 10
    assert len(lines) == 6


def test_an_empty_stream_is_its_result_alone(stack: Stack) -> None:
    r = stack.http.get("/stream/0")
    assert r.status_code == 200
    assert [json.loads(line)["result"]["n"] for line in r.text.splitlines()] == [0]


def test_call_route_reaches_any_method(stack: Stack) -> None:
    r = stack.http.post("/call/predict", json={"args": [[2.0]], "kwargs": {"delay": 0}})
    assert r.status_code == 200 and r.json()["result"]["score"] == 1.0
    r = stack.http.post("/call/stats", json={})
    assert r.status_code == 200 and r.json()["result"]["served"] >= 1


def test_health_reports_every_worker_serving(stack: Stack) -> None:
    status, body = stack.health()
    assert status == 200 and body["status"] == "ok"
    assert {w["address"] for w in body["workers"]} == {w.address for w in stack.workers}
    assert all(w["up"] and w["status"] == "SERVING" for w in body["workers"])


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "kind", "type_"),
    [
        ("/predict", {"features": []}, 500, "exception", "ValueError"),
        ("/predict", {"features": [1], "delay": 30, "timeout_ms": 100}, 504, "timeout", None),
        ("/call/no_such_method", {}, 404, "unknown_method", "MethodNotFound"),
        ("/call/predict", {"args": [[1], 0, "extra"]}, 400, "bad_arguments", "BadArguments"),
        ("/call/predict", {"kwargs": {"features": [1], "x": 1}}, 400, "bad_arguments", None),
        ("/call/predict", {"args": [["not a number"]]}, 400, "bad_arguments", None),
    ],
    ids=["exception", "timeout", "unknown-method", "too-many-args", "unknown-kwarg", "bad-type"],
)
def test_a_worker_error_maps_to_an_http_status_with_a_json_body(
    stack: Stack, path: str, body: dict, status: int, kind: str, type_: str | None
) -> None:
    r = stack.http.post(path, json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["kind"] == kind
    assert type_ is None or error["type"] == type_
    assert error["message"] and error["worker"] in {w.address for w in stack.workers}
    assert "traceback" not in error  # logged by the app, never sent


def test_the_traceback_of_an_exception_is_logged_by_the_app(stack: Stack) -> None:
    assert stack.predict([]).status_code == 500
    assert _eventually(lambda: 'raise ValueError("features' in stack.app_log.read_text())


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/predict", {"features": "x"}),
        ("POST", "/predict", {}),
        ("POST", "/predict", {"features": [1], "delay": -1}),
        ("GET", "/stream/-1", None),
        ("GET", "/stream/3?delay=nope", None),
    ],
)
def test_a_malformed_request_is_refused_by_fastapi_with_422(
    stack: Stack, method: str, path: str, body: Any
) -> None:
    r = stack.http.request(method, path, json=body)
    assert r.status_code == 422 and "detail" in r.json()


def test_the_app_with_a_wrong_token_serves_nothing(stack: Stack, tmp_path: Path) -> None:
    # Given the app in front of the same workers, with a token they do not accept
    proc, url = start_app(
        tmp_path / "uvicorn.log", [w.address for w in stack.workers], SNAKEPIT_GRPC_TOKEN="wrong"
    )
    try:
        assert url, (tmp_path / "uvicorn.log").read_text()
        with httpx.Client(base_url=url, timeout=60.0) as http:
            # Then no worker is in the rotation: health says why, calls get 503
            r = http.get("/health")
            assert r.status_code == 503 and r.json()["status"] == "unavailable"
            assert {w["status"] for w in r.json()["workers"]} == {"UNAUTHENTICATED"}
            r = http.post("/predict", json={"features": [1]})
            assert r.status_code == 503 and r.json()["error"]["kind"] == "unavailable"
            assert "UNAUTHENTICATED" in r.json()["error"]["message"]
            r = http.get("/stream/3")
            assert r.status_code == 503 and r.json()["error"]["kind"] == "unavailable"
    finally:
        _stop(proc)


def test_the_app_refuses_to_start_without_a_token(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "uvicorn.log"
    proc, url = start_app(log, [w.address for w in stack.workers], SNAKEPIT_GRPC_TOKEN="")
    _stop(proc)
    assert url is None and proc.returncode != 0
    assert "set SNAKEPIT_GRPC_TOKEN" in log.read_text()


# --- failures -------------------------------------------------------------------------------


def test_a_worker_killed_mid_call_or_mid_stream_is_a_503_and_the_others_serve_on(
    tmp_path: Path,
) -> None:
    with running(tmp_path, n_workers=3) as s, ThreadPoolExecutor(1) as pool:
        # Given a slow call in flight on one worker
        slow = pool.submit(s.predict, [1.0], delay=60)
        assert _eventually(lambda: _busy_worker(s) is not None)
        first = s.by_address(_busy_worker(s) or "")
        # When that worker is killed
        first.proc.kill()
        # Then the call gets 503, naming the worker
        r = slow.result(60)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["type"] == "UNAVAILABLE"
        assert r.json()["error"]["worker"] == first.address
        # and every call goes to the others, the killed one out of the rotation
        others = {w.address for w in s.workers} - {first.address}
        served = set()
        for _ in range(4):
            r = s.predict([1.0])
            assert r.status_code == 200, r.text
            served.add(r.headers["x-snakepit-worker"])
        assert served == others

        # Given a stream under way on a second worker
        with s.http.stream("GET", "/stream/100000", params={"delay": 0.05}) as r:
            assert r.status_code == 200
            second = s.by_address(r.headers["x-snakepit-worker"])
            lines = r.iter_lines()
            assert json.loads(next(lines)) == {"chunk": {"i": 0}}
            # When that worker is killed
            second.proc.kill()
            # Then the stream ends with an error line (the status was sent already)
            rest = [json.loads(line) for line in lines if line]
        assert "chunk" not in rest[-1] and rest[-1]["error"]["type"] == "UNAVAILABLE"
        assert rest[-1]["error"]["worker"] == second.address

        # And the last worker serves on; health is degraded but 200
        (last,) = others - {second.address}
        for _ in range(3):
            r = s.predict([1.0])
            assert r.status_code == 200 and r.headers["x-snakepit-worker"] == last
        status, body = s.health()
        assert status == 200 and body["status"] == "degraded"
        up = {w["address"]: w["up"] for w in body["workers"]}
        assert up == {first.address: False, second.address: False, last: True}

        # When the last one is killed too, calls get 503 and health says unavailable
        s.by_address(last).proc.kill()
        s.by_address(last).proc.wait(30)
        codes = {s.predict([1.0]).status_code for _ in range(2)}
        assert codes == {503}
        status, body = s.health()
        assert status == 503 and body["status"] == "unavailable"
        r = s.http.get("/stream/3")
        assert r.status_code == 503 and r.json()["error"]["kind"] == "unavailable"


def test_a_worker_that_comes_back_rejoins_the_rotation(tmp_path: Path) -> None:
    # Given the app started before one of its workers listens (its port is free)
    live = WorkerProc(tmp_path / "live.log")
    spare = WorkerProc(tmp_path / "spare.log")
    address = spare.address
    spare.stop()
    proc, url = start_app(tmp_path / "uvicorn.log", [live.address, address])
    late = None
    try:
        assert url, (tmp_path / "uvicorn.log").read_text()
        with httpx.Client(base_url=url, timeout=60.0) as http:
            r = http.get("/health")
            assert r.status_code == 200 and r.json()["status"] == "degraded"
            # When a worker starts on that port
            late = WorkerProc(tmp_path / "late.log", port=int(address.rsplit(":", 1)[1]))
            # Then the prober puts it back, and calls reach it again
            assert _eventually(lambda: http.get("/health").json()["status"] == "ok")
            served = {http.post("/predict", json={"features": [1]}).headers.get(
                "x-snakepit-worker") for _ in range(4)}  # fmt: skip
            assert served == {live.address, address}
    finally:
        _stop(proc)
        live.stop()
        if late is not None:
            late.stop()


def test_an_http_client_that_goes_away_cancels_the_stream_on_the_worker(stack: Stack) -> None:
    # Given a long stream, read a little
    with stack.http.stream("GET", "/stream/100000", params={"delay": 0.05}) as r:
        worker = stack.by_address(r.headers["x-snakepit-worker"])
        lines = r.iter_lines()  # (kept: a dropped iterator closes the response)
        assert json.loads(next(lines)) == {"chunk": {"i": 0}}
        assert worker.inflight() == 1
        assert json.loads(next(lines)) == {"chunk": {"i": 1}}
    # When the client closes the connection: the app cancels the gRPC call, the worker
    # closes the generator, and nothing stays in flight
    assert _eventually(lambda: _busy_worker(stack) is None)
    assert _eventually(lambda: worker.inflight() == 0)


def test_the_package_never_imports_the_web_framework() -> None:
    code = (
        "import sys, snakepit_py, snakepit_py.client, snakepit_py.testing;"
        "print(sorted({'fastapi', 'starlette', 'uvicorn', 'httpx', 'anyio'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stderr
