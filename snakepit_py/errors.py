"""The one error tree of snakepit_py.

Everything the package raises on purpose derives from :class:`SnakepitError`,
except :class:`CallCancelled`, which derives from ``BaseException`` so that a
user's ``except Exception:`` cannot swallow a cancellation (the same choice
``asyncio.CancelledError`` makes).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from typing import Any


__all__ = [
    "SnakepitError",
    "CodecError",
    "EncodeError",
    "DecodeError",
    "ProtocolError",
    "RegistryError",
    "MethodNotFound",
    "BadArguments",
    "CallError",
    "TransportError",
    "BeamCallError",
    "CallCancelled",
]


class SnakepitError(Exception):
    """Root of every error snakepit_py raises on purpose."""


class CodecError(SnakepitError):
    """A value could not be encoded or a frame could not be decoded."""


class EncodeError(CodecError, TypeError):
    """A Python value has no mapping to the wire format.

    Attributes:
        value_type: the qualified name of the Python type that failed.
    """

    def __init__(self, message: str, value_type: str | None = None) -> None:
        super().__init__(message)
        self.value_type = value_type


class DecodeError(CodecError, ValueError):
    """Bytes are not a valid (or acceptable) encoded term.

    Attributes:
        data: a prefix (at most 64 bytes) of the input that failed.
        offset: where in the input decoding stopped, when known.
    """

    def __init__(
        self, message: str, data: bytes | bytearray | memoryview = b"", offset: int | None = None
    ) -> None:
        super().__init__(message)
        self.data = bytes(data[:64])
        self.offset = offset


class ProtocolError(SnakepitError):
    """A frame decoded but is not a message the protocol allows."""


class RegistryError(SnakepitError):
    """A worker's methods are declared wrongly (raised at import time)."""


class MethodNotFound(SnakepitError, LookupError):
    """No method of that name is registered.

    Attributes:
        name: the method that was asked for.
        known: the names that exist.
    """

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no method {name!r}; known methods: {', '.join(known) or '(none)'}")
        self.name = name
        self.known = known


class BadArguments(SnakepitError, TypeError):
    """Arguments do not bind to a method's signature.

    Attributes:
        signature: the method's signature as text.
    """

    def __init__(self, message: str, signature: str) -> None:
        super().__init__(message)
        self.signature = signature


class CallError(SnakepitError):
    """A call answered with an error (raised by clients such as FakeSupervisor).

    Attributes:
        kind: the protocol error kind (``"exception"``, ``"timeout"``, ...).
        type: the Python exception type name on the worker side.
        traceback: the worker-side traceback text, or None.
        details: the error's ``details`` map.
        error: the whole error map as received.
    """

    def __init__(self, error: dict[str, Any]) -> None:
        self.error = error
        self.kind = str(error.get("kind"))
        self.type = error.get("type")
        self.traceback = error.get("traceback")
        self.details = error.get("details") or {}
        message = error.get("message")
        super().__init__(f"{self.kind}: {self.type}: {message}")
        self.message = message


class TransportError(SnakepitError):
    """The transport failed a call before the worker could answer it.

    Raised by :class:`~snakepit_py.client.GrpcClient` when the RPC itself fails:
    the worker is unreachable, the token is wrong (``UNAUTHENTICATED``), a
    message is too large. An error the worker answered is a :class:`CallError`.

    Attributes:
        status: the transport's status name (gRPC: ``"UNAUTHENTICATED"``,
            ``"UNAVAILABLE"``, ``"RESOURCE_EXHAUSTED"``...).
        message: the transport's explanation.
    """

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class BeamCallError(SnakepitError):
    """A call into the BEAM (``snakepit_py.beam.call``) failed.

    Attributes:
        kind: ``"unknown_function"``, ``"exception"``, ``"timeout"``,
            ``"bad_arguments"`` or ``"cancelled"`` (docs/protocol.md §9).
        type: the Elixir exception's module for ``"exception"`` (e.g.
            ``"ArgumentError"``), else a name for the kind.
        message: what went wrong.
        traceback: the BEAM's stacktrace as text, or None.
        details: the error's ``details`` map.
    """

    def __init__(self, kind: str, type: str | None, message: str, *, traceback: str | None = None,
                 details: dict[Any, Any] | None = None) -> None:  # fmt: skip
        super().__init__(f"{kind}: {type}: {message}" if type else f"{kind}: {message}")
        self.kind = kind
        self.type = type
        self.message = message
        self.traceback = traceback
        self.details = details or {}

    @classmethod
    def from_wire(cls, error: Any) -> BeamCallError:
        """Build one from a ``beam_reply`` error map (any other term is reported as such)."""
        if not isinstance(error, dict):
            return cls("exception", "ProtocolError", f"malformed error from the BEAM: {error!r}")
        message = error.get("message")
        details = error.get("details")
        return cls(
            str(error.get("kind") or "exception"),
            error.get("type") if isinstance(error.get("type"), str) else None,
            message if isinstance(message, str) else repr(message),
            traceback=error.get("traceback") if isinstance(error.get("traceback"), str) else None,
            details=details if isinstance(details, dict) else None,
        )


class CallCancelled(BaseException):
    """Raised inside a call that was cancelled (or ran past its deadline).

    Derives from BaseException on purpose: ``except Exception`` in user code
    does not stop a cancellation.

    Attributes:
        reason: ``"cancelled"``, ``"timeout"`` or ``"shutdown"``.
    """

    def __init__(self, reason: str = "cancelled") -> None:
        super().__init__(reason)
        self.reason = reason
