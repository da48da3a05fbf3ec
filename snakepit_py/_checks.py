"""Checking arguments against simple annotations (``int``, ``float``, ``str``, ``bytes`` ...).

Only the annotations docs/protocol.md names are checked; anything richer is not.
``int`` accepts no ``bool``; ``float`` accepts ints and converts them, and the
atoms ``:nan``, ``:infinity``, ``:neg_infinity``; ``bytes``
accepts valid UTF-8 (which arrives as ``str``) and encodes it back.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["Mismatch", "converter", "describe_value", "simple_type"]

SIMPLE = {"int": int, "float": float, "str": str, "bytes": bytes, "bool": bool,
           "list": list, "dict": dict, "tuple": tuple}  # fmt: skip
# Nx's atoms for the floats the BEAM has no value for (docs/types.md)
_FLOAT_ATOMS = {"nan": float("nan"), "infinity": float("inf"), "neg_infinity": float("-inf")}


def simple_type(annotation: Any) -> type | None:
    if isinstance(annotation, str):
        return SIMPLE.get(annotation.strip())
    if isinstance(annotation, type) and annotation.__name__ in SIMPLE:
        return annotation if SIMPLE[annotation.__name__] is annotation else None
    return None


class Mismatch(Exception):
    """A value that does not fit its annotation (``args[0]``, if any, says how)."""


def converter(kind: type) -> Callable[[Any], Any]:
    """Return a function that checks (and where the protocol says, converts) one value."""
    if kind is int:

        def conv(v: Any) -> Any:
            if type(v) is int or (isinstance(v, int) and not isinstance(v, bool)):
                return v
            raise Mismatch

    elif kind is float:

        def conv(v: Any) -> Any:
            if type(v) is float:
                return v
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
            if type(v) is not str and v in _FLOAT_ATOMS:  # Atom("nan"): a float the BEAM lacks
                return _FLOAT_ATOMS[v]
            raise Mismatch

    elif kind is str:

        def conv(v: Any) -> Any:
            if isinstance(v, str):
                return v
            if isinstance(v, (bytes, bytearray)):
                raise Mismatch("a binary that is not valid UTF-8")
            raise Mismatch

    elif kind is bytes:

        def conv(v: Any) -> Any:
            if isinstance(v, str):
                return v.encode("utf-8")
            if isinstance(v, (bytes, bytearray, memoryview)):
                return bytes(v)
            raise Mismatch

    else:

        def conv(v: Any) -> Any:
            if isinstance(v, kind) and not (kind is int and isinstance(v, bool)):
                return v
            raise Mismatch

    return conv


def describe_value(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
