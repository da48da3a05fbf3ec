"""Payload codecs: ``etf`` (the default) and ``msgpack``, each a module that is a :class:`Codec`.

What the runtime asks of a codec (``Codec`` below spells it out for type
checkers) is ``name``, ``encode(obj) -> bytes``, ``decode(data) -> obj``, and
five hooks, which every codec provides (msgpack's simply take the general
road), so that callers use plain attributes:

- ``decode_message(frame)``: ``decode(frame)``, for a frame from the
  supervisor; ETF reads a call envelope on a shorter road.
- ``call_fields(frame)``: the seven fields of a plain call envelope
  ``(id, method, args, kwargs, timeout_ms, credit, meta)``, checked, or None
  when the frame is anything else (None never means the frame is bad).
- ``encode_ok(call_id, result)``: the bytes of ``{:ok, call_id, result}``.
- ``chunk_encoder(call_id)``: ``encode_chunk(seq, data)``, the bytes of
  ``{:chunk, call_id, seq, data}``.
- ``peek_call_id(frame)``: the call id a frame that did not decode shows
  (of ``{:call, id, ...}``, ``{:cancel, id}``, ``{:credit, id, n}``), or None.
"""

from __future__ import annotations

from ._general import general_codec
from ._terms import Atom, ImproperList

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    class Codec(Protocol):
        """What the runtime uses of a codec module (see the module docstring)."""

        name: str

        def encode(
            self,
            obj: Any,
            *,
            default: Callable[[Any], Any] | None = None,
            compressed: int | None = None,
        ) -> bytes: ...

        def decode(
            self, data: bytes | bytearray | memoryview, *, max_size: int = ..., max_depth: int = ...
        ) -> Any: ...

        def decode_message(self, data: bytes) -> Any: ...

        def call_fields(self, frame: bytes) -> tuple[Any, ...] | None: ...

        def encode_ok(self, call_id: int, result: Any) -> bytes: ...

        def chunk_encoder(self, call_id: int) -> Callable[[int, Any], bytes]: ...

        def peek_call_id(self, frame: bytes) -> int | None: ...


__all__ = ["Atom", "ImproperList", "get_codec", "general_codec", "CODECS"]

CODECS = ("etf", "msgpack")


def get_codec(name: str) -> Codec:
    """Return the codec module called ``name`` (``"etf"`` or ``"msgpack"``).

    Raises:
        ValueError: for an unknown name.
        ImportError: for ``msgpack`` when the ``msgpack`` extra is not installed.
    """
    if name == "etf":
        from . import etf

        # (a module type-checks as a Codec by its __all__, which leaves the hooks out)
        return etf  # type: ignore[return-value]
    if name == "msgpack":
        from . import msgpack

        return msgpack  # type: ignore[return-value]
    raise ValueError(f"unknown codec {name!r}; choose one of: {', '.join(CODECS)}")
