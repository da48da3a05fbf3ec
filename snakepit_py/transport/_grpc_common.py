"""What the gRPC server and client share: per-request codecs, errors, status codes.

Imported only in gRPC mode (it imports grpc and the generated protobuf code).
"""

from __future__ import annotations

import json
import math
from typing import Any

import grpc

from ..codec import general_codec, get_codec
from ..errors import DecodeError, EncodeError

__all__ = [
    "ERROR_KEY", "SERVICE", "STATUS", "error_to_proto", "error_from_proto", "request_codec",
]  # fmt: skip

SERVICE = "snakepit.v1.Worker"
# Trailing metadata entry holding the serialised ``Error`` of a failed Call/Stream.
ERROR_KEY = "snakepit-error-bin"

# gRPC status for each protocol error kind (documented in worker.proto, ``Error``).
STATUS = {
    "exception": grpc.StatusCode.UNKNOWN,
    "unknown_method": grpc.StatusCode.NOT_FOUND,
    "bad_arguments": grpc.StatusCode.INVALID_ARGUMENT,
    "bad_request": grpc.StatusCode.INVALID_ARGUMENT,
    "timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
    "cancelled": grpc.StatusCode.CANCELLED,
    "unencodable": grpc.StatusCode.INTERNAL,
    "overloaded": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "shutting_down": grpc.StatusCode.UNAVAILABLE,
}


def _json_encode(obj: Any) -> bytes:
    try:
        # allow_nan=False: JSON has no NaN or infinity; json would write a bare ``Infinity``.
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise EncodeError(f"not JSON-encodable: {exc}", _culprit(exc)) from None
    except RecursionError:
        raise EncodeError("not JSON-encodable: nested too deeply") from None


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # a number too large for a float, like 1e999999
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_decode(data: bytes) -> Any:
    try:
        return json.loads(data, parse_float=_finite, parse_constant=_no_constant)
    except ValueError as exc:
        raise DecodeError(f"invalid JSON: {exc}", data) from None
    except RecursionError:
        raise DecodeError("invalid JSON: nested too deeply", data[:64]) from None


def _culprit(exc: Exception) -> str | None:
    # json says "Object of type bytes is not JSON serializable"
    text = str(exc)
    if text.startswith("Out of range float"):
        return "float"
    if text.startswith("Object of type ") and " is not" in text:
        return text[len("Object of type ") : text.index(" is not")]
    return None


_JSON = general_codec("json", _json_encode, _json_decode)
_codecs: dict[str, Any] = {"json": _JSON, "": _JSON}


def request_codec(name: str) -> Any:
    """The codec a request names: ``json`` (also for ``""``), ``msgpack`` or ``etf``.

    Raises:
        ValueError: unknown name, or the codec's package is not installed.
    """
    codec = _codecs.get(name)
    if codec is None:
        if name not in ("etf", "msgpack"):
            raise ValueError(f"unknown codec {name!r}; use json, msgpack or etf")
        try:
            codec = get_codec(name)
        except ImportError as exc:
            raise ValueError(f"codec {name!r} is not available here: {exc}") from None
        _codecs[name] = codec
    return codec


def error_to_proto(error: dict, codec: Any, pb: Any) -> Any:
    """A protocol error map as a ``snakepit.v1.Error`` message (details in ``codec``)."""
    details = error.get("details") or {}
    try:
        data = codec.encode({str(k): v for k, v in details.items()}) if details else b""
    except EncodeError:
        data = codec.encode({"unencodable_details": repr(details)})
    msg = pb.Error(
        kind=str(error.get("kind")), type=str(error.get("type") or ""),
        message=str(error.get("message") or ""), details=data,
    )  # fmt: skip
    if error.get("traceback") is not None:
        msg.traceback = error["traceback"]
    return msg


def error_from_proto(msg: Any, codec: Any) -> dict:
    """A ``snakepit.v1.Error`` message back as an error map (str keys)."""
    return {
        "kind": msg.kind,
        "type": msg.type,
        "message": msg.message,
        "traceback": msg.traceback if msg.HasField("traceback") else None,
        "details": codec.decode(msg.details) if msg.details else {},
    }
