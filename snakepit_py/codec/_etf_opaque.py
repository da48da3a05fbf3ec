"""Pids, ports and references: read, and checked the way a node checks its own.

A pid, port or reference is only ever echoed back to the BEAM, so one that an
OTP node would refuse ("invalid external representation") is refused here
instead: else the reply carrying it could not be decoded by the supervisor.
(Funs hold other terms, so ``_etf_decode`` reads them with the rest.)
"""

from __future__ import annotations

import struct

from ..errors import DecodeError
from . import _etf_tags as tags
from ._terms import Opaque, Pid, Port, Reference, trusted_opaque

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from typing import Any

__all__ = ["dec_fixed_opaque", "dec_new_reference"]

_u16 = struct.Struct(">H").unpack_from


def _node_end(data: bytes, pos: int) -> int:
    """Return where the node-name atom starting at ``pos`` ends (in pids, ports, refs)."""
    tag = data[pos]
    if tag == tags.SMALL_ATOM_UTF8_EXT or tag == tags.SMALL_ATOM_EXT:
        start, end = pos + 2, pos + 2 + data[pos + 1]
    elif tag == tags.ATOM_UTF8_EXT or tag == tags.ATOM_EXT:
        start, end = pos + 3, pos + 3 + _u16(data, pos + 1)[0]
    else:
        raise DecodeError(f"expected a node name atom, found tag {tag}", data, pos)
    if end > len(data):
        raise DecodeError("truncated node name", data, pos)
    if tag == tags.SMALL_ATOM_UTF8_EXT or tag == tags.ATOM_UTF8_EXT:
        # (the value is echoed as these bytes: the BEAM refuses a name that is not UTF-8)
        try:
            name = data[start:end].decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("node name is not UTF-8", data, pos) from None
        if len(name) > 255:
            raise DecodeError("node name over 255 characters", data, pos)
    elif end - start > 255:
        raise DecodeError("node name over 255 characters", data, pos)
    return end


# By tag: the term's class, and how many bytes follow the node name (ID, Serial, Creation).
_OPAQUE_LAYOUT: dict[int, tuple[type[Opaque], int]] = {
    tags.PID_EXT: (Pid, 9),
    tags.NEW_PID_EXT: (Pid, 12),
    tags.PORT_EXT: (Port, 5),
    tags.NEW_PORT_EXT: (Port, 8),
    tags.V4_PORT_EXT: (Port, 12),
    tags.REFERENCE_EXT: (Reference, 5),
}

# The ranges an OTP node gives these fields (PID_EXT... REFERENCE_EXT), by tag:
# (offset after the node name, size in bytes, largest value).
_PID_ID, _PID_SERIAL, _PORT_ID, _REF_WORD0, _OLD_CREATION = 0x7FFF, 0x1FFF, 0x0FFFFFFF, 0x3FFFF, 3
_OPAQUE_RANGES: dict[int, tuple[tuple[int, int, int], ...]] = {
    tags.PID_EXT: ((0, 4, _PID_ID), (4, 4, _PID_SERIAL), (8, 1, _OLD_CREATION)),
    tags.NEW_PID_EXT: ((0, 4, _PID_ID), (4, 4, _PID_SERIAL)),
    tags.PORT_EXT: ((0, 4, _PORT_ID), (4, 1, _OLD_CREATION)),
    tags.NEW_PORT_EXT: ((0, 4, _PORT_ID),),
    tags.V4_PORT_EXT: ((0, 8, _PORT_ID),),
    tags.REFERENCE_EXT: ((0, 4, _REF_WORD0), (4, 1, _OLD_CREATION)),
}


def dec_fixed_opaque(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    # PID_EXT, NEW_PID_EXT, PORT_EXT, NEW_PORT_EXT, V4_PORT_EXT, REFERENCE_EXT:
    # a node name atom followed by fixed-size fields.
    tag = data[pos]
    cls, tail = _OPAQUE_LAYOUT[tag]
    node_end = _node_end(data, pos + 1)
    end = node_end + tail
    if end > len(data):
        raise DecodeError("truncated pid, port or reference", data, pos)
    for offset, size, most in _OPAQUE_RANGES[tag]:
        at = node_end + offset
        if int.from_bytes(data[at : at + size], "big") > most:
            raise DecodeError(f"{cls.__name__.lower()} field out of range", data, at)
    return trusted_opaque(cls, data[pos:end]), end


def dec_new_reference(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    # NEW_REFERENCE_EXT / NEWER_REFERENCE_EXT: Len(2) Node Creation(1 or 4) ID(4 * Len).
    words = _u16(data, pos + 1)[0]
    if not 1 <= words <= 3:  # what an OTP node writes for its references
        raise DecodeError(f"reference with {words} id words", data, pos)
    newer = data[pos] == tags.NEWER_REFERENCE_EXT
    node_end = _node_end(data, pos + 3)
    first = node_end + (4 if newer else 1)
    end = first + 4 * words
    if end > len(data):
        raise DecodeError("truncated reference", data, pos)
    if (not newer and data[node_end] > _OLD_CREATION) or int.from_bytes(
        data[first : first + 4], "big"
    ) > _REF_WORD0:
        raise DecodeError("reference field out of range", data, pos)
    return trusted_opaque(Reference, data[pos:end]), end
