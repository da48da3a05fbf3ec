"""GrpcClient and the Port's test client (FakeSupervisor) share one API and one error tree:
the same code starts, waits for, cancels and streams calls on either, and catches the
same errors; the grpc exceptions the client raised before still catch them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import worker_path

grpc = pytest.importorskip("grpc")

from snakepit_py.client import GrpcClient  # noqa: E402
from snakepit_py.errors import CallError, SnakepitError, TransportError  # noqa: E402
from snakepit_py.testing import FakeSupervisor, GrpcSupervisor  # noqa: E402

BASIC = worker_path("basic.py")


@pytest.fixture(scope="module")
def grpc_sup() -> Iterator[GrpcSupervisor]:
    with GrpcSupervisor(BASIC, threads=2) as sup:
        yield sup


@pytest.fixture(scope="module")
def port_sup() -> Iterator[FakeSupervisor]:
    with FakeSupervisor(BASIC, threads=2) as sup:
        yield sup


@pytest.fixture(params=["port", "grpc"])
def caller(request: Any, grpc_sup: GrpcSupervisor, port_sup: FakeSupervisor) -> Iterator[Any]:
    """FakeSupervisor over pipes, or a GrpcClient on a gRPC worker: one API."""
    if request.param == "port":
        yield port_sup
    else:
        with GrpcClient(grpc_sup.address or "") as client:
            yield client


def test_start_call_then_wait(caller: Any) -> None:
    assert caller.start_call("add", 1, 2).wait(10) == 3
    assert caller.call("add", 2, 2) == 4


def test_the_grpc_result_method_is_an_alias_of_wait(grpc_sup: GrpcSupervisor) -> None:
    with GrpcClient(grpc_sup.address or "") as client:
        assert client.start_call("add", 1, 2).result(10) == 3


def test_a_worker_error_is_a_call_error(caller: Any) -> None:
    with pytest.raises(CallError) as info:
        caller.start_call("fail", "nope").wait(10)
    assert (info.value.kind, info.value.type, info.value.message) == (
        "exception",
        "ValueError",
        "nope",
    )


def test_a_cancelled_call_raises_a_cancelled_call_error(caller: Any) -> None:
    # Given a call that runs until cancelled
    call = caller.start_call("busy", 30)
    # When the caller cancels it through the client, by its handle
    caller.cancel(call)
    # Then waiting raises CallError(kind="cancelled"), on either transport
    with pytest.raises(CallError) as info:
        call.wait(10)
    assert info.value.kind == "cancelled" and isinstance(info.value, SnakepitError)


def test_a_cancelled_stream_raises_a_cancelled_call_error(caller: Any) -> None:
    stream = caller.stream("count_forever")
    assert next(stream) == 0
    stream.cancel()
    with pytest.raises(CallError) as info:
        for _ in stream:
            pass
    assert info.value.kind == "cancelled" and stream.finished


def test_a_stream_ends_with_its_result(caller: Any) -> None:
    stream = caller.stream("count", 3, "end")
    assert list(stream) == [0, 1, 2] and stream.result == "end" and stream.seqs == [0, 1, 2]


def test_waiting_too_little_is_a_timeout_error(caller: Any) -> None:
    call = caller.start_call("sleep", 0.5)
    with pytest.raises(TimeoutError):
        call.wait(0.05)
    assert call.wait(10) == "slept"


def test_a_bad_token_is_a_transport_error(reap_pids: list[int]) -> None:
    # Given a worker that wants a token, and a client with the wrong one
    with GrpcSupervisor(BASIC, token="s3cret") as sup:
        with GrpcClient(sup.address or "", token="wrong") as client:
            # Then every RPC raises TransportError (a SnakepitError), not a raw grpc error
            for attempt in (
                lambda: client.call("add", 1, 2),
                lambda: client.start_call("add", 1, 2).wait(10),
                lambda: list(client.stream("count", 2)),
                client.health,
                client.describe,
                client.serving_status,
            ):
                with pytest.raises(TransportError) as info:
                    attempt()
                assert info.value.status == "UNAUTHENTICATED"
                assert isinstance(info.value, SnakepitError)


def test_the_grpc_exceptions_raised_before_still_catch(grpc_sup: GrpcSupervisor) -> None:
    with GrpcClient(grpc_sup.address or "") as client:
        call = client.start_call("busy", 30)
        call.cancel()
        with pytest.raises(grpc.FutureCancelledError):
            call.wait(10)
        with pytest.raises(grpc.RpcError) as info:
            client.serving_status("no.such.Service")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.FutureTimeoutError):
            client.start_call("sleep", 0.3).wait(0.01)
