"""What only the gRPC transport has: its own process lifecycle, security, the unary and
streaming convenience RPCs, grpc.health.v1, and the generated code."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, pid_alive, worker_path

grpc = pytest.importorskip("grpc")

from snakepit_py.client import GrpcClient  # noqa: E402
from snakepit_py.errors import CallError  # noqa: E402
from snakepit_py.testing import GrpcSupervisor  # noqa: E402

BASIC = worker_path("basic.py")


class Worker:
    """A gRPC worker started by hand, for tests that watch the process itself."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "snakepit_py", "worker", BASIC, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
        )  # fmt: skip
        self.line = self.proc.stdout.readline().decode()
        self.address = self.line.split()[-1] if self.line.startswith("SNAKEPIT_READY") else None

    def client(self, **kwargs) -> GrpcClient:
        assert self.address, self.finish()[1]
        return GrpcClient(self.address, **kwargs)

    def finish(self, timeout: float = 5.0) -> tuple[int, str]:
        """Close stdin, wait for the exit; (exit code, stderr). The rest of stdout: ``rest``."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        self.rest = out
        return self.proc.returncode, err.decode()


@pytest.fixture
def worker(reap_pids):
    started = []

    def start(*args, **kwargs) -> Worker:
        w = Worker(*args, **kwargs)
        reap_pids.append(w.proc.pid)
        started.append(w)
        return w

    yield start
    for w in started:
        w.finish()


@pytest.fixture(scope="module")
def client():
    with GrpcSupervisor(BASIC) as sup, GrpcClient(sup.address) as c:
        c.sup = sup
        yield c


def _code(err: grpc.RpcError) -> grpc.StatusCode:
    return err.code()


# --- start and stop -------------------------------------------------------------------------


def test_ready_line_format_and_a_free_port(worker):
    w = worker("--grpc", "127.0.0.1:0")
    assert re.fullmatch(r"SNAKEPIT_READY grpc 127\.0\.0\.1:\d+\n", w.line)
    assert int(w.address.rsplit(":", 1)[1]) > 0
    assert w.client().call("add", 1, 2) == 3
    code, _ = w.finish()
    assert code == 0
    assert b"SNAKEPIT_READY" not in w.rest  # printed once


def test_bad_address_is_refused_with_a_message(worker):
    w = worker("--grpc", "nowhere")
    code, err = w.finish()
    assert code == 2 and "HOST:PORT" in err


def test_public_bind_without_token_or_tls_is_refused(worker):
    w = worker("--grpc", "0.0.0.0:0")
    code, err = w.finish()
    assert code == 2 and "--grpc-token" in err and "0.0.0.0" in err
    assert w.address is None


def test_public_bind_with_a_token_is_allowed(worker):
    w = worker("--grpc", "0.0.0.0:0", "--grpc-token", "s3cret")
    assert w.address is not None and w.address.startswith("0.0.0.0:")
    port = w.address.rsplit(":", 1)[1]
    with GrpcClient(f"127.0.0.1:{port}", token="s3cret") as c:
        assert c.call("add", 2, 2) == 4


def test_exits_when_the_parent_pid_dies(worker):
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    w = worker("--grpc", "127.0.0.1:0", "--parent-pid", str(parent.pid))
    w.proc.stdin.close()  # (a pipe nobody closes would do; only the pid matters here)
    w.proc.stdin = None
    parent.kill()
    parent.wait()
    t0 = time.monotonic()
    code, _ = w.finish(timeout=5)
    assert code == 0 and time.monotonic() - t0 < 1.5


def test_parent_pid_alone_keeps_it_alive(worker):
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        env = {}
        w = Worker("--grpc", "127.0.0.1:0", "--parent-pid", str(parent.pid), env=env)
        time.sleep(0.5)
        assert w.proc.poll() is None
        with w.client() as c:
            assert c.call("add", 1, 1) == 2
        w.finish()
    finally:
        parent.kill()
        parent.wait()


def test_sigterm_drains_health_not_serving_in_flight_finish_new_refused(worker):
    # Given a worker with a call in flight
    w = worker("--grpc", "127.0.0.1:0", "--grace-ms", "3000")
    c = w.client()
    assert c.serving_status() == "SERVING"
    running = c.start_call("sleep", 0.8)
    time.sleep(0.2)
    # When it gets SIGTERM
    w.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    # Then health says NOT_SERVING and new calls are refused with shutting_down...
    assert c.serving_status() == "NOT_SERVING"
    assert c.health()["status"] == "draining"
    with pytest.raises(CallError) as info:
        c.call("add", 1, 2)
    assert info.value.kind == "shutting_down"
    # ...while the call in flight finishes, and the worker exits 0
    assert running.result(5) == "slept"
    code, _ = w.finish()
    assert code == 0
    c.close()


def test_sigint_is_ignored(worker):
    w = worker("--grpc", "127.0.0.1:0")
    w.proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    with w.client() as c:
        assert c.call("add", 1, 2) == 3
    assert w.finish()[0] == 0


def test_killing_the_worker_kills_its_stubborn_children(worker):
    w = worker("--grpc", "127.0.0.1:0")
    with w.client() as c:
        child = c.call("spawn_stubborn_child")
    code, _ = w.finish()
    assert code == 0
    deadline = time.monotonic() + 3
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child)


# --- security -------------------------------------------------------------------------------


def test_token_missing_wrong_right_on_every_rpc(worker):
    w = worker("--grpc", "127.0.0.1:0", env={"SNAKEPIT_GRPC_TOKEN": "s3cret"})
    for token in (None, "wrong", "s3cre"):
        with w.client(token=token) as c:
            for attempt in (lambda: c.call("add", 1, 2), c.describe, c.health,
                            c.serving_status, lambda: list(c.stream("count", 2))):  # fmt: skip
                with pytest.raises(grpc.RpcError) as info:
                    attempt()
                assert _code(info.value) == grpc.StatusCode.UNAUTHENTICATED
            session = c.session(iter(()))
            with pytest.raises(grpc.RpcError) as info:
                next(session)
            assert _code(info.value) == grpc.StatusCode.UNAUTHENTICATED
    with w.client(token="s3cret") as c:
        assert c.call("add", 1, 2) == 3 and c.serving_status() == "SERVING"


def test_tls_with_a_self_signed_certificate(worker, tmp_path):
    # Given a certificate for localhost (openssl is the only way to make one here)
    if subprocess.run(["openssl", "version"], capture_output=True).returncode != 0:
        pytest.skip("no openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    # When the worker serves TLS (a public bind is then allowed without a token)
    w = worker("--grpc", "0.0.0.0:0", "--tls-cert", str(cert), "--tls-key", str(key))
    assert w.address is not None, w.finish()[1]
    port = w.address.rsplit(":", 1)[1]
    # Then a client trusting the certificate can call, and a plaintext client cannot
    with GrpcClient(f"localhost:{port}", root_certificates=cert.read_bytes()) as c:
        assert c.call("add", 1, 2) == 3
    with GrpcClient(f"127.0.0.1:{port}") as plain:
        with pytest.raises(grpc.RpcError):
            plain.call("add", 1, 2, timeout=2)


def test_frames_over_max_frame_are_refused(worker):
    w = worker("--grpc", "127.0.0.1:0", "--max-frame", "100000")
    with w.client() as c:
        with pytest.raises(grpc.RpcError) as info:
            c.call("echo", "x" * 3_000_000)
        assert _code(info.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert c.call("add", 1, 2) == 3


def test_session_frame_over_max_frame_is_a_bad_request():
    with GrpcSupervisor(BASIC, max_frame=1000) as sup:
        call = sup.start_call("echo", "x" * 5000)
        with pytest.raises(CallError) as info:
            call.wait(5)
        assert info.value.kind == "bad_request" and "over the limit" in info.value.message
        assert sup.call("add", 1, 2) == 3


def test_loopback_is_decided_by_the_resolved_addresses_not_the_spelling(monkeypatch):
    from snakepit_py.transport import grpc as transport

    answers = {
        "127.x.example": ["93.184.216.34"],
        "local.example": ["127.0.0.1", "::1"],
        "mixed.example": ["127.0.0.1", "10.0.0.1"],
    }

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, 0)) for a in answers[host]]  # fmt: skip

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    # A name is loopback only if every address it resolves to is; one that does not resolve is not
    assert not transport.is_loopback("127.x.example")
    assert transport.is_loopback("local.example")
    assert not transport.is_loopback("mixed.example")
    assert not transport.is_loopback("127.nowhere.invalid")
    # IP literals need no DNS (the fake above knows none of them)
    for host in ("127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"):
        assert transport.is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "::ffff:10.0.0.1"):
        assert not transport.is_loopback(host), host


def test_a_bind_host_that_does_not_resolve_is_refused_with_a_message(worker):
    w = worker("--grpc", "127.snakepit.invalid:0")
    code, err = w.finish()
    assert code == 2 and w.address is None
    assert "cannot resolve" in err and "127.snakepit.invalid" in err


# --- streams cannot take the server ---------------------------------------------------------


def _idle(stop: threading.Event):
    """A Session's request stream that sends nothing until ``stop`` is set."""
    stop.wait()
    yield from ()


def _first(responses) -> object:
    """The first response of a streaming RPC, or the status code that ended it."""
    try:
        return next(responses)
    except grpc.RpcError as err:
        return err


def _refused(outcomes: list) -> list:
    return [o for o in outcomes if isinstance(o, grpc.RpcError)]


def test_a_flood_of_idle_sessions_leaves_call_and_health_check_answering(worker):
    # Given a worker with the defaults (64 streams at most)
    w = worker("--grpc", "127.0.0.1:0")
    stop = threading.Event()
    try:
        with w.client() as c:
            # When a client opens 150 Sessions and sends nothing on them
            sessions = [c.session(_idle(stop), timeout=30) for _ in range(150)]
            outcomes = [_first(s) for s in sessions]
            # Then 64 are served and the rest are refused at once, saying why
            refused = _refused(outcomes)
            assert len(refused) == 150 - 64
            for err in refused:
                assert _code(err) == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "--grpc-max-streams" in err.details()
            # ...and the unary RPCs still answer
            assert c.call("add", 1, 2, timeout=5) == 3
            assert c.serving_status(timeout=5) == "SERVING"
            assert c.health(timeout=5)["status"] == "healthy"
    finally:
        stop.set()


def test_a_flood_of_authenticated_watch_streams_leaves_health_check_answering(worker):
    from snakepit_py.transport._grpc_health import decode_response, encode_request

    # Given a worker with a token, and a client that has it
    w = worker("--grpc", "127.0.0.1:0", env={"SNAKEPIT_GRPC_TOKEN": "s3cret"})
    with w.client(token="s3cret") as c:
        watch = c.channel.unary_stream("/grpc.health.v1.Health/Watch", encode_request,
                                       decode_response)  # fmt: skip
        # When it opens 120 Watch streams
        watches = [watch("", timeout=30, metadata=c.metadata) for _ in range(120)]
        outcomes = [_first(s) for s in watches]
        # Then those over the limit are refused, and Check and Call still answer
        assert outcomes.count("SERVING") == 64
        assert {_code(e) for e in _refused(outcomes)} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert c.serving_status(timeout=5) == "SERVING"
        assert c.call("add", 1, 2, timeout=5) == 3
        # A client without the token is told so, not that the server is full
        with pytest.raises(grpc.RpcError) as info:
            next(watch("", timeout=5))
        assert _code(info.value) == grpc.StatusCode.UNAUTHENTICATED
        for s in watches:
            s.cancel()


def test_a_stream_gives_its_slot_back_however_it_ends(worker):
    w = worker("--grpc", "127.0.0.1:0", "--grpc-max-streams", "2")
    stop = threading.Event()
    try:
        with w.client() as c:
            # Streams that finish or fail give their slot back (more of them than slots)
            for _ in range(3):
                assert list(c.stream("count", 3)) == [0, 1, 2]
                with pytest.raises(CallError):
                    list(c.stream("gen_fail"))
            # Two open streams fill the slots; a third is refused, unary calls are not
            session = c.session(_idle(stop), timeout=30)
            assert not isinstance(_first(session), grpc.RpcError)
            endless = c.stream("async_forever")  # (async: the one sync thread stays free)
            next(endless)
            third = _first(c.stream("count", 1))
            assert _code(third) == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "at most 2 streaming RPCs" in third.details()
            assert c.call("add", 1, 2, timeout=5) == 3
            # A cancelled stream gives its slot back
            endless.cancel()
            assert _eventually(lambda: list(c.stream("count", 1)) == [0])
            # So does a Session whose client ends it: two streams fit again
            stop.set()

            def two_fit() -> bool:
                streams = [c.stream("async_forever") for _ in range(2)]
                outcomes = [_first(s) for s in streams]
                for s in streams:
                    s.cancel()
                return not _refused(outcomes)

            assert _eventually(two_fit)
    finally:
        stop.set()


def _eventually(attempt, seconds: float = 5.0) -> bool:
    """True once ``attempt()`` is true; refusals meanwhile count as not yet."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if attempt():
                return True
        except grpc.RpcError as err:
            assert _code(err) == grpc.StatusCode.RESOURCE_EXHAUSTED
        time.sleep(0.05)
    return False


# --- the unary and streaming RPCs -----------------------------------------------------------


@pytest.mark.parametrize("codec", ["json", "etf", "msgpack"])
def test_call_in_each_codec(client, codec):
    if codec == "msgpack":
        pytest.importorskip("snakepit_py.codec.msgpack")
    with GrpcClient(client.target, codec=codec) as c:
        assert c.call("add", 1, kwargs={"b": 2}) == 3
        assert c.call("echo", {"a": [1, "x", None]}) == {"a": [1, "x", None]}
        assert list(c.stream("count", 3)) == [0, 1, 2]
        err = pytest.raises(CallError, c.call, "nope").value
        assert err.kind == "unknown_method" and "add" in err.details["known"]


def test_json_cannot_carry_bytes_so_the_result_is_unencodable(client):
    with GrpcClient(client.target, codec="json") as c:
        assert c.call("raw", "abc") == {"type": "bytes", "len": 3}
        err = pytest.raises(CallError, c.call, "echo_bytes_never_exists").value
        assert err.kind == "unknown_method"
        err = pytest.raises(CallError, c.call, "unencodable").value
        assert err.kind == "unencodable"


def test_unknown_codec_is_invalid_argument(client):
    from snakepit_py._proto.snakepit.v1 import worker_pb2 as pb

    call = client.channel.unary_unary(
        "/snakepit.v1.Worker/Call", pb.CallRequest.SerializeToString, pb.CallReply.FromString
    )
    with pytest.raises(grpc.RpcError) as info:
        call(pb.CallRequest(method="add", codec="pickle"))
    assert _code(info.value) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        call(pb.CallRequest(method="add", codec="json", args=b"[1,"))
    assert _code(info.value) == grpc.StatusCode.INVALID_ARGUMENT


def _raw_json_call(client, args: bytes) -> grpc.RpcError:
    from snakepit_py._proto.snakepit.v1 import worker_pb2 as pb

    call = client.channel.unary_unary(
        "/snakepit.v1.Worker/Call", pb.CallRequest.SerializeToString, pb.CallReply.FromString
    )
    with pytest.raises(grpc.RpcError) as info:
        call(pb.CallRequest(method="echo", codec="json", args=args), timeout=10)
    return info.value


def test_deeply_nested_json_arguments_are_invalid_argument(client):
    err = _raw_json_call(client, b"[" * 100_000)
    assert _code(err) == grpc.StatusCode.INVALID_ARGUMENT
    assert "nested too deeply" in err.details()
    assert client.call("add", 1, 2) == 3


def test_json_has_no_infinity_or_nan_so_they_are_refused_both_ways(client):
    # In: a number too large for a float, and the non-standard constants
    for args in (b"[1e999999]", b"[-1e999999]", b"[NaN]", b"[Infinity]"):
        assert _code(_raw_json_call(client, args)) == grpc.StatusCode.INVALID_ARGUMENT, args
    # Out: a result that is infinite cannot be written as JSON
    with GrpcClient(client.target, codec="json") as c:
        assert c.call("scale", 1.5e300, 2.0) == 3e300
        err = pytest.raises(CallError, c.call, "scale", 1e308, 10.0).value
        assert err.kind == "unencodable"


def test_errors_map_to_status_codes_with_the_error_in_trailers(client):
    cases = {"fail": grpc.StatusCode.UNKNOWN, "nope": grpc.StatusCode.NOT_FOUND}
    for method, status in cases.items():
        future = client._call.future(client._request(method, (), None, None, None))
        with pytest.raises(grpc.RpcError) as info:
            future.result()
        assert _code(info.value) == status
        keys = [k for k, _ in info.value.trailing_metadata()]
        assert "snakepit-error-bin" in keys
    err = pytest.raises(CallError, client.call, "fail", "why").value
    assert err.type == "ValueError" and err.message == "why" and "Traceback" in err.traceback


def test_stream_rpc_seqs_result_and_errors(client):
    s = client.stream("count", 1000, {"end": True})
    assert list(s) == list(range(1000))
    assert s.seqs == list(range(1000)) and s.result == {"end": True}
    s = client.stream("gen_fail")
    assert next(s) == 1
    with pytest.raises(CallError) as info:
        next(s)
    assert info.value.message == "stream broke"


def test_worker_timeout_and_grpc_deadline(client):
    err = pytest.raises(CallError, client.call, "sleep", 5, timeout_ms=100).value
    assert err.kind == "timeout"
    # The RPC's own deadline bounds the call on the worker too.
    with pytest.raises((CallError, grpc.RpcError)):
        client.call("busy", 5, timeout=0.2)
    assert _wait_idle(client)


def _wait_idle(c: GrpcClient, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if c.health()["inflight"] == 0:
            return True
        time.sleep(0.02)
    return False


def test_client_cancel_cancels_the_call_and_closes_the_generator(client):
    call = client.start_call("busy", 30)
    time.sleep(0.2)
    call.cancel()
    assert _wait_idle(client), "the cancelled call kept running"
    s = client.stream("count_forever")
    assert next(s) == 0
    s.cancel()
    assert _wait_idle(client)
    assert "count_forever" in client.call("closed_log")
    async_stream = client.stream("async_forever")
    next(async_stream)
    async_stream.cancel()
    assert _wait_idle(client)
    assert "async_forever" in client.call("closed_log")


def test_a_killed_client_does_not_leave_a_generator_running(client):
    # Given a client process streaming from an endless generator
    script = textwrap.dedent(f"""
        from snakepit_py.client import GrpcClient
        c = GrpcClient({client.target!r})
        s = c.stream("count_forever")
        next(s)
        print("streaming", flush=True)
        import time; time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip
    try:
        assert proc.stdout.readline() == b"streaming\n"
        assert client.health()["inflight"] >= 1
        # When it is killed
        proc.kill()
        proc.wait()
    finally:
        proc.kill()
        proc.stdout.close()
    # Then the worker cancels the call and the generator's finally runs
    assert _wait_idle(client)
    assert "count_forever" in client.call("closed_log")


def test_ending_a_session_cancels_its_calls():
    with GrpcSupervisor(BASIC) as sup, GrpcClient(sup.address) as c:
        sup.start_call("busy", 30)
        time.sleep(0.1)
        assert c.health()["inflight"] == 1
        sup.end_session()
        assert _wait_idle(c)


def test_session_and_unary_calls_share_one_worker():
    with GrpcSupervisor(BASIC) as sup, GrpcClient(sup.address) as c:
        running = sup.start_call("sleep", 0.5)
        time.sleep(0.1)
        # --threads 1 holds across RPCs: the unary call waits for the session's call
        report = c.health()
        assert report["status"] == "busy" and report["inflight"] == 1
        assert c.call("add", 1, 2) == 3
        assert running.wait() == "slept"
        assert sup.health()["served"] >= 2


def test_describe_and_health_rpcs(client):
    methods = {m["name"]: m for m in client.describe()["methods"]}
    assert methods["add"]["doc"] == "Add two numbers." and methods["count"]["streaming"]
    report = client.health()
    assert report["status"] == "healthy" and report["pid"] == client.sup.pid
    assert client.serving_status("snakepit.v1.Worker") == "SERVING"
    with pytest.raises(grpc.RpcError) as info:
        client.serving_status("no.such.Service")
    assert _code(info.value) == grpc.StatusCode.NOT_FOUND


# --- generated code -------------------------------------------------------------------------


def test_generated_code_is_up_to_date(tmp_path):
    pytest.importorskip("grpc_tools")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from gen_protos import generate
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    committed = ROOT / "snakepit_py" / "_proto"
    for fresh in generate(tmp_path):
        rel = fresh.relative_to(tmp_path)
        old = committed / rel
        assert old.exists(), f"{rel} is not committed; run python scripts/gen_protos.py"
        assert old.read_text() == fresh.read_text(), (
            f"{rel} is stale: run python scripts/gen_protos.py and commit the result"
        )


def test_every_proto_field_is_commented():
    text = (ROOT / "protos" / "snakepit" / "v1" / "worker.proto").read_text()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*(repeated |optional )?[\w.]+ \w+ = \d+;", line):
            assert lines[i - 1].strip().startswith("//"), f"field without a comment: {line}"


def test_hand_written_health_messages_match_the_standard_proto():
    from snakepit_py.transport import _grpc_health as h

    assert h.encode_request("") == b"" and h.decode_request(b"") == ""
    assert h.decode_request(h.encode_request("snakepit.v1.Worker")) == "snakepit.v1.Worker"
    long = "s" * 300
    assert h.decode_request(h.encode_request(long)) == long
    assert h.decode_response(h.encode_response(h.SERVING)) == "SERVING"
    assert h.decode_response(h.encode_response(h.NOT_SERVING)) == "NOT_SERVING"
    assert h.decode_response(b"") == "UNKNOWN"


def test_port_mode_never_imports_grpc():
    code = (
        "import snakepit_py, snakepit_py.testing, snakepit_py._server, sys; "
        "print('grpc' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(ROOT), check=True)  # fmt: skip
    assert out.stdout.strip() == "False"


def test_proto_has_no_snakepit_import_outside_the_package():
    text = Path(ROOT / "snakepit_py/_proto/snakepit/v1/worker_pb2_grpc.py").read_text()
    assert "from snakepit.v1" not in text and "from . import worker_pb2" in text
