"""Payload codecs: each has ``name``, ``encode(obj) -> bytes`` and ``decode(data) -> obj``."""

from __future__ import annotations

from types import ModuleType

from ._terms import Atom, ImproperList

__all__ = ["Atom", "ImproperList", "get_codec", "CODECS"]

CODECS = ("etf", "msgpack")


def get_codec(name: str) -> ModuleType:
    """Return the codec module called ``name`` (``"etf"`` or ``"msgpack"``).

    Raises:
        ValueError: for an unknown name.
        ImportError: for ``msgpack`` when the ``msgpack`` extra is not installed.
    """
    if name == "etf":
        from . import etf

        return etf
    if name == "msgpack":
        from . import msgpack

        return msgpack
    raise ValueError(f"unknown codec {name!r}; choose one of: {', '.join(CODECS)}")
