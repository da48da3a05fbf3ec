"""The standard ``grpc.health.v1.Health`` service, without grpcio-health-checking.

Its two messages are tiny (``HealthCheckRequest { string service = 1; }``,
``HealthCheckResponse { ServingStatus status = 1; }``), so they are encoded
by hand here rather than generated: that also keeps this worker from clashing
with the real ``grpc_health`` package's descriptors in a client process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc

__all__ = ["HealthService", "SERVING", "NOT_SERVING", "encode_request", "decode_response"]

SERVICE = "grpc.health.v1.Health"
UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = 0, 1, 2, 3
NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
# The services this worker answers for: "" (the whole server) and the Worker service.
KNOWN = ("", "snakepit.v1.Worker")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: bytes) -> Iterator[tuple[int, Any]]:
    """(field number, value) for every varint or length-delimited field; others skipped."""
    pos, n = 0, len(data)
    while pos < n:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes | None
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = bytes(data[pos : pos + size]), pos + size
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 5:
            value, pos = None, pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > n:
            raise ValueError("truncated message")
        yield number, value


def _len_prefix(n: int) -> bytes:
    out = bytearray()
    while True:
        if n < 0x80:
            out.append(n)
            return bytes(out)
        out.append((n & 0x7F) | 0x80)
        n >>= 7


def encode_request(service: str = "") -> bytes:
    """A serialised HealthCheckRequest."""
    raw = service.encode()
    return b"\x0a" + _len_prefix(len(raw)) + raw if raw else b""


def decode_request(data: bytes) -> str:
    for number, value in _fields(data):
        if number == 1 and isinstance(value, bytes):
            return value.decode("utf-8", "replace")
    return ""


def encode_response(status: int) -> bytes:
    return bytes((0x08, status)) if status else b""


def decode_response(data: bytes) -> str:
    """The status name in a serialised HealthCheckResponse."""
    status = 0
    for number, value in _fields(data):
        if number == 1 and isinstance(value, int):
            status = value
    return NAMES.get(status, str(status))


class HealthService:
    """SERVING while the worker serves, NOT_SERVING once it drains."""

    def __init__(self) -> None:
        self.status = SERVING
        self._changed = threading.Condition()

    def set(self, status: int) -> None:
        with self._changed:
            self.status = status
            self._changed.notify_all()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Check": grpc.unary_unary_rpc_method_handler(
                self.Check, decode_request, encode_response),
            "Watch": grpc.unary_stream_rpc_method_handler(
                self.Watch, decode_request, encode_response),
        })  # fmt: skip

    def Check(self, service: str, context: grpc.ServicerContext) -> int:
        if service not in KNOWN:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {service!r}")
        return self.status

    def Watch(self, service: str, context: grpc.ServicerContext) -> Iterator[int]:
        if service not in KNOWN:
            yield SERVICE_UNKNOWN
            return
        last = None
        while context.is_active():
            with self._changed:
                if self.status == last:
                    self._changed.wait(1.0)
                status = self.status
            if status != last:
                last = status
                yield status
