"""Atoms both ways: their bounded caches, their decoders (one per atom tag), their encoder.

Protocol traffic reuses a handful of atoms, so each is decoded (and checked,
and made an :class:`Atom`) once and found by its name bytes afterwards; each
is encoded once and found by its name. Hostile input could send atoms without
end, so a cache is emptied when it grows past ``ATOM_CACHE_MAX``. The C
accelerator reads the decoder caches too (``etf`` hands them over).
"""

from __future__ import annotations

import struct

from ..errors import DecodeError, EncodeError
from ._etf_tags import ATOM_UTF8_EXT, SMALL_ATOM_UTF8_EXT
from ._terms import Atom

__all__ = [
    "ATOM_CACHE_MAX",
    "utf8_atoms",
    "latin1_atoms",
    "atom_bytes",
    "dec_atom",
    "dec_small_atom",
    "dec_atom_utf8",
    "dec_small_atom_utf8",
    "encode_atom",
]

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from typing import Any


ATOM_CACHE_MAX = 4096
_ATOM_SEED: dict[bytes, Any] = {b"true": True, b"false": False, b"nil": None}

# Decoded atoms by name bytes, one cache per encoding of the name.
utf8_atoms: dict[bytes, Any] = dict(_ATOM_SEED)
latin1_atoms: dict[bytes, Any] = dict(_ATOM_SEED)

# Encoded atoms (their bytes, tag first) by name.
atom_bytes: dict[str, bytes] = {}

_u16 = struct.Struct(">H").unpack_from
_pack_tag_u16 = struct.Struct(">BH").pack


def _new_atom(raw: bytes, encoding: str, cache: dict[bytes, Any], data: bytes, pos: int) -> Any:
    """Decode, check and cache an atom name the cache did not know."""
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        raise DecodeError("atom name is not valid UTF-8", data, pos) from None
    if len(text) > 255:
        raise DecodeError("atom longer than 255 characters", data, pos)
    atom = Atom(text)
    if text == "__struct__":
        # Never cached: so the C decoder, which reads only cached atoms, leaves
        # every term holding an Elixir struct to Python, which converts it.
        return atom
    if len(cache) >= ATOM_CACHE_MAX:
        cache.clear()
        cache.update(_ATOM_SEED)
    cache[raw] = atom
    return atom


# The decoders take (data, pos, depth) and return (value, end), as every
# decoder in _etf_decode's table does.


def dec_small_atom_utf8(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    end = pos + 2 + data[pos + 1]
    raw = data[pos + 2 : end]
    try:
        return utf8_atoms[raw], end
    except KeyError:
        return _new_atom(raw, "utf-8", utf8_atoms, data, pos), end


def dec_atom(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    # ATOM_EXT is latin-1; OTP 25 still writes it for every latin-1 atom. One
    # byte is one character and atoms have at most 255, so the high byte of
    # the length is 0: reading only the low byte is cheaper than unpacking.
    if data[pos + 1]:
        raise DecodeError("atom longer than 255 characters", data, pos)
    end = pos + 3 + data[pos + 2]
    raw = data[pos + 3 : end]
    try:
        return latin1_atoms[raw], end
    except KeyError:
        return _new_atom(raw, "latin-1", latin1_atoms, data, pos), end


def dec_atom_utf8(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    end = pos + 3 + _u16(data, pos + 1)[0]
    raw = data[pos + 3 : end]
    try:
        return utf8_atoms[raw], end
    except KeyError:
        return _new_atom(raw, "utf-8", utf8_atoms, data, pos), end


def dec_small_atom(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    end = pos + 2 + data[pos + 1]
    raw = data[pos + 2 : end]
    try:
        return latin1_atoms[raw], end
    except KeyError:
        return _new_atom(raw, "latin-1", latin1_atoms, data, pos), end


def encode_atom(atom: str) -> bytes:
    """Return the encoding of atom ``atom`` (what OTP 26 writes: UTF-8 atom tags), and cache it."""
    raw = atom.encode()
    if len(atom) > 255:
        raise EncodeError(f"atom longer than 255 characters: {atom[:40]!r}...", "Atom")
    n = len(raw)
    if n < 256:
        out = bytes((SMALL_ATOM_UTF8_EXT, n)) + raw
    else:
        out = _pack_tag_u16(ATOM_UTF8_EXT, n) + raw
    if len(atom_bytes) >= ATOM_CACHE_MAX:
        atom_bytes.clear()
    atom_bytes[str(atom)] = out
    return out
