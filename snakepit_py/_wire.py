"""The protocol's own terms: message tags, error maps, envelope checks (docs/protocol.md §3-5)."""

from __future__ import annotations

import os

from .codec import Atom
from .errors import EncodeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "OK", "ERROR", "CHUNK", "HEALTH", "DESCRIBE", "EVENT", "LOG", "BYE", "READY",
    "KIND", "ChunkUnencodable", "error_map", "format_traceback", "unencodable_error",
    "check_opts", "call_problem", "short", "int_or_none", "atom_keys", "NUMBERS", "oversize_error",
]  # fmt: skip

A = Atom
OK, ERROR, CHUNK, HEALTH, DESCRIBE, EVENT, LOG, BYE, READY = map(
    A, ("ok", "error", "chunk", "health", "describe", "event", "log", "bye", "ready")
)
T_CALL, T_CANCEL, T_CREDIT, T_HEALTH, T_DESCRIBE, T_SHUTDOWN = (
    "call", "cancel", "credit", "health", "describe", "shutdown",
)  # fmt: skip
# (1.1) calls into the BEAM, §9: what the supervisor sends
T_BEAM_FUNCTIONS, T_BEAM_REPLY = "beam_functions", "beam_reply"
K_KIND, K_TYPE, K_MESSAGE, K_TRACEBACK, K_DETAILS = map(
    A, ("kind", "type", "message", "traceback", "details")
)
KIND = {
    k: A(k)
    for k in (
        "exception",
        "unknown_method",
        "bad_arguments",
        "timeout",
        "cancelled",
        "unencodable",
        "bad_request",
        "overloaded",
        "shutting_down",
        "would_deadlock",  # (1.1) only ever in answer to a call that had opts.beam_call
    )  # fmt: skip
}
_HERE = os.path.dirname(os.path.abspath(__file__))


class ChunkUnencodable(Exception):
    """A chunk the codec cannot carry; ends the call with ``:unencodable``.

    Transports that encode frames themselves (gRPC) raise it from ``write``.
    """

    def __init__(self, error: EncodeError) -> None:
        super().__init__(str(error))
        self.error = error


def error_map(kind: str, type_: str, message: str, tb: str | None = None, **details: Any) -> dict:
    """Build a protocol error map (docs/protocol.md §5)."""
    return {
        K_KIND: KIND[kind],
        K_TYPE: type_,
        K_MESSAGE: message,
        K_TRACEBACK: tb,
        K_DETAILS: {A(k): v for k, v in details.items()},
    }


def format_traceback(exc: BaseException) -> str:
    """Format an exception with its chained causes, leaving out the runtime's own frames."""
    import traceback

    tb = exc.__traceback__
    while tb is not None and os.path.dirname(tb.tb_frame.f_code.co_filename) == _HERE:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def unencodable_error(exc: EncodeError, what: str) -> dict:
    extra = getattr(exc, "details", None) or {}  # size and limit, for an oversize reply
    return error_map(
        "unencodable", "EncodeError", f"the {what} cannot be encoded: {exc}",
        None, type=exc.value_type or "", **extra,
    )  # fmt: skip


def oversize_error(frame: bytes, value: Any, max_frame: int) -> EncodeError:
    """The error for a reply the peer would refuse: over ``max_frame`` (``--max-frame``)."""
    exc = EncodeError(
        f"its frame of {len(frame)} bytes is over the limit of {max_frame} bytes",
        type(value).__qualname__,
    )
    exc.details = {"size": len(frame), "limit": max_frame}  # type: ignore[attr-defined]
    return exc


NUMBERS = (int, float)


def check_opts(opts: dict) -> str | None:
    t = opts.get("timeout_ms")
    if t is not None and (type(t) not in (int, float) or t <= 0):
        return f"opts.timeout_ms must be a positive number, got: {short(t)}"
    c = opts.get("credit")
    if c is not None and (type(c) is not int or c < 0):
        return f"opts.credit must be a non-negative integer, got: {short(c)}"
    m = opts.get("meta")
    if m is not None and type(m) is not dict:
        return f"opts.meta must be a map, got: {short(m)}"
    return None


def call_problem(cid: Any, name: Any, args: Any, kwargs: Any, opts: Any) -> tuple[int | None, str]:
    """What is wrong with a call envelope whose fields do not all have their types.

    Returns:
        The call id to answer (None when the id itself is bad) and the problem.
    """
    if type(cid) is not int or cid < 0:
        return None, f"call id must be a non-negative integer, got: {short(cid)}"
    if type(name) is not str:
        return cid, f"method must be a UTF-8 binary, got: {short(name)}"
    if type(args) is not list:
        return cid, f"args must be a list, got: {short(args)}"
    if type(kwargs) is not dict:
        return cid, f"kwargs must be a map, got: {short(kwargs)}"
    return cid, f"opts must be a map, got: {short(opts)}"


def int_or_none(v: Any) -> int | None:
    return v if type(v) is int else None


def short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def atom_keys(v: Any) -> Any:
    if isinstance(v, dict):
        return {A(k) if type(k) is str else k: atom_keys(x) for k, x in v.items()}
    if isinstance(v, list):
        return [atom_keys(x) for x in v]
    return v
