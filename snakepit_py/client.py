"""A Python client for a worker served over gRPC (``snakepit-py worker T --grpc HOST:PORT``).

    from snakepit_py.client import GrpcClient

    with GrpcClient("127.0.0.1:50051", token="s3cret") as client:
        client.call("add", 1, 2)                  # -> 3
        for chunk in client.stream("train", data):
            ...
        client.health()["status"]                 # -> "healthy"

Uses the unary ``Call`` and server-streaming ``Stream`` RPCs, with arguments
and results in a codec of your choice (``etf`` keeps tuples, bytes and atoms
exactly; ``msgpack`` and ``json`` suit other languages). Errors raise
:class:`~snakepit_py.errors.CallError`, as over the Port. Needs the ``grpc`` extra.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from ._proto.snakepit.v1 import worker_pb2 as pb
from .errors import CallError
from .transport._grpc_common import ERROR_KEY, SERVICE, error_from_proto, request_codec
from .transport._grpc_health import decode_response, encode_request

__all__ = ["GrpcClient", "GrpcCall", "GrpcStream"]


def _channel_options(max_message: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", max_message),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def _call_error(err: grpc.RpcError, codec: Any) -> Exception:
    """Turn a failed RPC into CallError (worker errors) or leave it as grpc.RpcError."""
    failed: Any = err  # a grpc.Call too (grpc-stubs' metadatum is not the tuple it is)
    for key, value in failed.trailing_metadata() or ():
        if key == ERROR_KEY:
            return CallError(error_from_proto(pb.Error.FromString(value), codec))
    return err


class GrpcCall:
    """A Call in flight: ``result()`` waits for it, ``cancel()`` cancels it (and the call)."""

    def __init__(self, future: Any, codec: Any) -> None:
        self._future = future
        self._codec = codec

    def result(self, timeout: float | None = None) -> Any:
        """The call's result.

        Raises:
            CallError: the worker answered with an error.
            grpc.RpcError: the RPC itself failed (unreachable, UNAUTHENTICATED, cancelled here).
        """
        try:
            reply = self._future.result(timeout)
        except grpc.RpcError as err:
            raise _call_error(err, self._codec) from None
        return self._codec.decode(reply.result)

    def cancel(self) -> bool:
        """Cancel the RPC; the worker cancels the call, exactly like ``{:cancel, id}``."""
        cancelled: bool = self._future.cancel()
        return cancelled

    def done(self) -> bool:
        done: bool = self._future.done()
        return done


class GrpcStream:
    """The chunks of a streaming call; ``result`` holds the return value at the end."""

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
                raise _call_error(err, self._codec) from None
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
        """Cancel the RPC; the worker cancels the call and closes its generator."""
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
        """Wait until the channel is connected. Raises grpc.FutureTimeoutError."""
        grpc.channel_ready_future(self.channel).result(timeout)

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
            CallError: the worker answered with an error.
            grpc.RpcError: the RPC failed (unreachable, UNAUTHENTICATED, ...).
        """
        request = self._request(method, args, kwargs, timeout_ms, meta)
        try:
            reply = self._call(request, timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as err:
            raise _call_error(err, self.codec) from None
        return self.codec.decode(reply.result)

    def start_call(self, method: str, *args: Any, kwargs: dict[str, Any] | None = None,
                   timeout_ms: int | None = None, meta: dict[str, Any] | None = None,
                   timeout: float | None = None) -> GrpcCall:  # fmt: skip
        """Start a call and return at once; ``.result()`` waits, ``.cancel()`` cancels."""
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
        reply = self._health(pb.InfoRequest(codec=self.codec_name), timeout=timeout,
                             metadata=self.metadata)  # fmt: skip
        report: dict[str, Any] = self.codec.decode(reply.data)
        return report

    def describe(self, timeout: float | None = 10.0) -> dict[str, Any]:
        """The method catalogue."""
        reply = self._describe(pb.InfoRequest(codec=self.codec_name), timeout=timeout,
                               metadata=self.metadata)  # fmt: skip
        catalogue: dict[str, Any] = self.codec.decode(reply.data)
        return catalogue

    def serving_status(self, service: str = "", timeout: float | None = 10.0) -> str:
        """The standard grpc.health.v1 status: ``"SERVING"`` or ``"NOT_SERVING"``."""
        return self._check(service, timeout=timeout, metadata=self.metadata)
