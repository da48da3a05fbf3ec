"""A codec's runtime hooks on the general road, for encodings with no shortcuts of their own."""

from __future__ import annotations

from ._terms import Atom

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["general_codec"]


def general_codec(
    name: str,
    encode: Callable[[Any], Any],
    decode: Callable[[Any], Any],
    *,
    tags: tuple[Atom, Atom] | None = None,
) -> Any:
    """A codec (the ``Codec`` protocol of ``snakepit_py.codec``) from ``encode`` and ``decode``.

    Its hooks take the general road.

    For msgpack and a transport's own encodings (gRPC's JSON, or terms passed
    as they are): no envelope shortcut, no call id to peek at. ``tags`` are
    the ``ok`` and ``chunk`` atoms to build terms with, for a reader that
    tells tags apart by identity.
    """
    from types import SimpleNamespace

    ok, chunk = tags or (Atom("ok"), Atom("chunk"))

    def chunk_encoder(call_id: int) -> Callable[[int, Any], Any]:
        return lambda seq, data: encode((chunk, call_id, seq, data))

    return SimpleNamespace(
        name=name,
        encode=encode,
        decode=decode,
        decode_message=decode,
        call_fields=lambda _frame: None,
        encode_ok=lambda call_id, result: encode((ok, call_id, result)),
        chunk_encoder=chunk_encoder,
        peek_call_id=lambda _frame: None,
    )
