"""A Python client for a worker served over gRPC (``snakepit-py worker T --grpc HOST:PORT``).

    from snakepit_py.client import GrpcClient

    with GrpcClient("127.0.0.1:50051", token="s3cret") as client:
        client.call("add", 1, 2)                  # -> 3
        for chunk in client.stream("train", data):
            ...
        client.health()["status"]                 # -> "healthy"

Uses the unary ``Call`` and server-streaming ``Stream`` RPCs, with arguments
and results in a codec of your choice (``etf`` keeps tuples, bytes and atoms
exactly; ``msgpack`` and ``json`` suit other languages). Its handles and
errors are those of the Port's test client (``snakepit_py.testing``):
``start_call(...).wait()``, streams with ``result``/``seqs``/``cancel()``; a
call that ends badly (an error from the worker, cancelled, past its deadline)
raises :class:`~snakepit_py.errors.CallError`, an RPC that fails before the
worker answers :class:`~snakepit_py.errors.TransportError`. Both are also
``grpc.RpcError`` (and a cancelled wait a ``grpc.FutureCancelledError``, a
timed-out one a ``grpc.FutureTimeoutError``), as this client raised before.
Needs the ``grpc`` extra.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from ._proto.snakepit.v1 import worker_pb2 as pb
from .errors import CallError, TransportError
from .transport._grpc_common import ERROR_KEY, SERVICE, error_from_proto, request_codec
from .transport._grpc_health import decode_response, encode_request

__all__ = [
    # the client and its handles
    "GrpcClient",
    "GrpcCall",
    "GrpcStream",
    # what it raises (each also the grpc exception it replaces)
    "GrpcCallError",
    "GrpcCallCancelled",
    "GrpcTransportError",
    "GrpcWaitTimeout",
]


def _channel_options(max_message: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", max_message),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


class _Rpc(grpc.RpcError):
    """Keeps the failed RPC's ``code()``/``details()``/metadata (``except grpc.RpcError``)."""

    rpc: Any = None

    def code(self) -> Any:
        """The RPC's ``grpc.StatusCode`` (None if it never ran)."""
        return None if self.rpc is None else self.rpc.code()

    def trailing_metadata(self) -> Any:
        """The RPC's trailing metadata."""
        return None if self.rpc is None else self.rpc.trailing_metadata()


# CallError's ``details`` (the error's details map) wins over grpc.RpcError's
# ``details()`` method; the gRPC status text stays at ``.rpc.details()``.
class GrpcCallError(CallError, _Rpc):  # type: ignore[misc]
    """A :class:`CallError` that is also the ``grpc.RpcError`` it came in."""


class GrpcCallCancelled(CallError, _Rpc, grpc.FutureCancelledError):  # type: ignore[misc]
    """A call cancelled here (kind ``cancelled``), as FakeSupervisor reports it."""


class GrpcTransportError(TransportError, _Rpc):
    """A :class:`TransportError` that is also the ``grpc.RpcError`` it came in."""

    def details(self) -> Any:
        """The RPC's status text (as ``message``)."""
        return self.message


class GrpcWaitTimeout(TimeoutError, grpc.FutureTimeoutError):
    """``wait(timeout)`` ran out before the call ended (the call goes on)."""


def _error_map(kind: str, type_: str, message: str) -> dict[str, Any]:
    return {"kind": kind, "type": type_, "message": message, "traceback": None, "details": {}}


def _rpc_error(err: Any, codec: Any) -> Exception:
    """The error a failed RPC raises: CallError for what the call ended with, else
    TransportError; either keeps ``err`` as ``.rpc`` (``code()``, ``details()``)."""
    exc: CallError | TransportError
    for key, value in err.trailing_metadata() or ():  # a worker's error
        if key == ERROR_KEY:
            exc = GrpcCallError(error_from_proto(pb.Error.FromString(value), codec))
            exc.rpc = err
            return exc
    code, details = err.code(), str(err.details() or "")
    if code == grpc.StatusCode.CANCELLED:
        exc = GrpcCallCancelled(_error_map("cancelled", "CallCancelled", details or "cancelled"))
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:  # the RPC's own deadline, not the worker's
        exc = GrpcCallError(_error_map("timeout", "DeadlineExceeded", details))
    else:
        exc = GrpcTransportError(getattr(code, "name", str(code)), details)
    exc.rpc = err
    return exc


def _cancelled_here() -> GrpcCallCancelled:
    return GrpcCallCancelled(_error_map("cancelled", "CallCancelled", "cancelled by the client"))


class GrpcCall:
    """A Call in flight, like FakeSupervisor's PendingCall: ``wait()`` returns its
    result, ``cancel()`` cancels it on the worker."""

    def __init__(self, future: Any, codec: Any) -> None:
        self._future = future
        self._codec = codec

    def wait(self, timeout: float | None = None) -> Any:
        """Wait for the call to end and return its result.

        Args:
            timeout: seconds to wait (None: as long as it takes); the call goes on after.

        Raises:
            CallError: the call ended with an error: the worker's, ``cancelled``
                (``cancel()`` here; also a ``grpc.FutureCancelledError``) or
                ``timeout`` (its deadline).
            TransportError: the RPC failed before the worker answered
                (unreachable, ``UNAUTHENTICATED``...).
            TimeoutError: ``timeout`` passed first (also a ``grpc.FutureTimeoutError``).
        """
        try:
            reply = self._future.result(timeout)
        except grpc.FutureCancelledError:
            raise _cancelled_here() from None
        except grpc.FutureTimeoutError:
            raise GrpcWaitTimeout(f"the call did not end within {timeout} s") from None
        except grpc.RpcError as err:
            raise _rpc_error(err, self._codec) from None
        return self._codec.decode(reply.result)

    def result(self, timeout: float | None = None) -> Any:
        """Alias of :meth:`wait` (this client's earlier name)."""
        return self.wait(timeout)

    def cancel(self) -> bool:
        """Cancel the RPC; the worker cancels the call, exactly like ``{:cancel, id}``."""
        cancelled: bool = self._future.cancel()
        return cancelled

    def done(self) -> bool:
        """True once the call has ended (answered, failed or cancelled)."""
        done: bool = self._future.done()
        return done


class GrpcStream:
    """The chunks of a streaming call, like FakeSupervisor's Stream: iterate it, then
    read ``result``; ``seqs`` holds each chunk's seq. gRPC's own flow control
    stands in for credit. Iterating raises what :meth:`GrpcCall.wait` raises."""

    def __init__(self, replies: Any, codec: Any) -> None:
        self._replies = replies
        self._codec = codec
        self._buffer: list[bytes] = []
        self._pos = 0
        self.result: Any = None
        self.finished = False
        self.seqs: list[int] = []
        self._next_seq = 0

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        while self._pos >= len(self._buffer):
            if self.finished:
                raise StopIteration
            try:
                reply = next(self._replies)
            except StopIteration:
                self.finished = True
                raise
            except grpc.RpcError as err:
                self.finished = True
                raise _rpc_error(err, self._codec) from None
            self._buffer, self._pos, self._next_seq = list(reply.chunks), 0, reply.seq
            if reply.done:
                self.finished = True
                self.result = self._codec.decode(reply.result) if reply.result else None
        data = self._buffer[self._pos]
        self._pos += 1
        self.seqs.append(self._next_seq)
        self._next_seq += 1
        return self._codec.decode(data)

    def cancel(self) -> None:
        """Cancel the RPC; the worker cancels the call and closes its generator
        (iterating on raises a ``cancelled`` CallError)."""
        self._replies.cancel()


class GrpcClient:
    """Calls a worker's methods over gRPC.

    Args:
        target: ``HOST:PORT`` of the worker.
        token: the worker's ``--grpc-token`` (sent as ``authorization: Bearer``).
        codec: ``"etf"`` (default), ``"msgpack"`` or ``"json"`` for arguments and results.
        root_certificates: PEM bytes to trust when the worker uses TLS (then TLS is used).
        max_message: largest message accepted or sent, in bytes.
        channel: an existing channel to use instead of making one.
    """

    def __init__(self, target: str, *, token: str | None = None, codec: str = "etf",
                 root_certificates: bytes | None = None, max_message: int = 66 << 20,
                 channel: grpc.Channel | None = None) -> None:  # fmt: skip
        self.target = target
        self.codec_name = codec
        self.codec = request_codec(codec)
        options = _channel_options(max_message)
        if channel is not None:
            self.channel = channel
        elif root_certificates is not None:
            creds = grpc.ssl_channel_credentials(root_certificates)
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        path = f"/{SERVICE}/"
        ch = self.channel
        self._call = ch.unary_unary(path + "Call", pb.CallRequest.SerializeToString,
                                    pb.CallReply.FromString)  # fmt: skip
        self._stream = ch.unary_stream(path + "Stream", pb.CallRequest.SerializeToString,
                                       pb.StreamReply.FromString)  # fmt: skip
        self._describe = ch.unary_unary(path + "Describe", pb.InfoRequest.SerializeToString,
                                        pb.InfoReply.FromString)  # fmt: skip
        self._health = ch.unary_unary(path + "Health", pb.InfoRequest.SerializeToString,
                                      pb.InfoReply.FromString)  # fmt: skip
        self._check = ch.unary_unary("/grpc.health.v1.Health/Check", encode_request,
                                     decode_response)  # fmt: skip
        self.session = ch.stream_stream(path + "Session", pb.Frames.SerializeToString,
                                        pb.Frames.FromString)  # fmt: skip

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel (RPCs in flight are cancelled)."""
        self.channel.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the channel is connected.

        Raises:
            TimeoutError: not connected in time (also a ``grpc.FutureTimeoutError``).
        """
        try:
            grpc.channel_ready_future(self.channel).result(timeout)
        except grpc.FutureTimeoutError:
            raise GrpcWaitTimeout(f"{self.target}: not connected within {timeout} s") from None

    def _info(self, rpc: Any, request: Any, timeout: float | None) -> Any:
        try:
            return rpc(request, timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as err:
            raise _rpc_error(err, self.codec) from None

    def _request(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None,
                 timeout_ms: int | None, meta: dict[str, Any] | None) -> Any:  # fmt: skip
        enc = self.codec.encode
        return pb.CallRequest(
            method=method, codec=self.codec_name,
            args=enc(list(args)) if args else b"", kwargs=enc(kwargs) if kwargs else b"",
            timeout_ms=timeout_ms or 0, meta=enc(meta) if meta else b"",
        )  # fmt: skip

    def call(self, method: str, *args: Any, kwargs: dict[str, Any] | None = None,
             timeout_ms: int | None = None, meta: dict[str, Any] | None = None,
             timeout: float | None = None) -> Any:  # fmt: skip
        """Make one call and return its result.

        Args:
            timeout_ms: the call's deadline on the worker (an ``:timeout`` error).
            timeout: the gRPC deadline of the RPC, in seconds.

        Raises:
            CallError: the call ended with an error (see :meth:`GrpcCall.wait`).
            TransportError: the RPC failed (unreachable, ``UNAUTHENTICATED``...).
        """
        request = self._request(method, args, kwargs, timeout_ms, meta)
        try:
            reply = self._call(request, timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as err:
            raise _rpc_error(err, self.codec) from None
        return self.codec.decode(reply.result)

    def start_call(self, method: str, *args: Any, kwargs: dict[str, Any] | None = None,
                   timeout_ms: int | None = None, meta: dict[str, Any] | None = None,
                   timeout: float | None = None) -> GrpcCall:  # fmt: skip
        """Start a call and return at once; ``.wait()`` waits, ``.cancel()`` cancels."""
        request = self._request(method, args, kwargs, timeout_ms, meta)
        future = self._call.future(request, timeout=timeout, metadata=self.metadata)
        return GrpcCall(future, self.codec)

    def stream(self, method: str, *args: Any, kwargs: dict[str, Any] | None = None,
               timeout_ms: int | None = None, meta: dict[str, Any] | None = None,
               timeout: float | None = None) -> GrpcStream:  # fmt: skip
        """Start a streaming call; iterate it for the chunks, then read ``.result``."""
        request = self._request(method, args, kwargs, timeout_ms, meta)
        replies = self._stream(request, timeout=timeout, metadata=self.metadata)
        return GrpcStream(replies, self.codec)

    def cancel(self, call: GrpcCall | GrpcStream) -> None:
        """Cancel a call started with ``start_call`` or ``stream``."""
        call.cancel()

    def health(self, timeout: float | None = 10.0) -> dict[str, Any]:
        """The worker's health report (``status``, ``inflight``, ``loaded_models``, ...)."""
        reply = self._info(self._health, pb.InfoRequest(codec=self.codec_name), timeout)
        report: dict[str, Any] = self.codec.decode(reply.data)
        return report

    def describe(self, timeout: float | None = 10.0) -> dict[str, Any]:
        """The method catalogue."""
        reply = self._info(self._describe, pb.InfoRequest(codec=self.codec_name), timeout)
        catalogue: dict[str, Any] = self.codec.decode(reply.data)
        return catalogue

    def serving_status(self, service: str = "", timeout: float | None = 10.0) -> str:
        """The standard grpc.health.v1 status: ``"SERVING"`` or ``"NOT_SERVING"``.

        Raises:
            TransportError: the RPC failed (``NOT_FOUND`` for an unknown service).
        """
        status: str = self._info(self._check, service, timeout)
        return status
