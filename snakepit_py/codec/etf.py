"""Erlang External Term Format (what ``term_to_binary/1,2`` produces), in pure Python.

``encode(obj) -> bytes`` and ``decode(data) -> obj`` follow the term mapping of
the wire protocol: atoms ``true``/``false``/``nil`` are ``True``/``False``/``None``,
other atoms are :class:`Atom`, binaries are ``str`` when valid UTF-8 and
``bytes`` otherwise, lists are ``list`` (:class:`ImproperList` when the tail is
not ``[]``), tuples are ``tuple``, maps are ``dict``. Pids, ports, references
and funs decode to opaque values (:class:`Pid`, :class:`Port`,
:class:`Reference`, :class:`Fun`) that keep their exact bytes and encode back
to the identical term.

The decoder is written for hostile input: it raises only :class:`DecodeError`,
checks every length against the bytes that remain before using it, bounds the
nesting depth, and never inflates a compressed term beyond ``max_size``.
"""

from __future__ import annotations

import struct
from codecs import utf_8_decode as _utf_8_decode

from ..errors import DecodeError, EncodeError
from ._terms import Atom, ImproperList
from ._terms import type_name as _type_name

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ._etf_message import decode_message


__all__ = [
    # codec
    "name",
    "encode",
    "decode",
    "decode_message",  # noqa: F822 - provided by __getattr__ below
    "encode_ok",
    "chunk_encoder",
    # term types
    "Atom",
    "ImproperList",
    "Opaque",
    "Pid",
    "Port",
    "Reference",
    "Fun",
    # limits
    "DEFAULT_MAX_SIZE",
    "DEFAULT_MAX_DEPTH",
]

name = "etf"

DEFAULT_MAX_SIZE = 64 * 2**20
"""Largest input (and largest inflated compressed term) ``decode`` accepts, in bytes."""

# Every nesting level costs one Python frame, in the decoder and the encoder
# alike; 512 leaves ample room under CPython's default recursion limit (1000)
# even for a caller that is already a few hundred frames deep.
DEFAULT_MAX_DEPTH = 512
"""Deepest nesting of lists, tuples, maps (and funs) ``decode`` and ``encode`` accept."""

# --- tags (erts/emulator/beam/external.h) ----------------------------------

_VERSION = 131
_COMPRESSED = 80
_NEW_FLOAT = 70
_BIT_BINARY = 77
_ATOM_CACHE_REF = 82
_NEW_PID = 88
_NEW_PORT = 89
_NEWER_REFERENCE = 90
_SMALL_INTEGER = 97
_INTEGER = 98
_FLOAT = 99
_ATOM = 100
_REFERENCE = 101
_PORT = 102
_PID = 103
_SMALL_TUPLE = 104
_LARGE_TUPLE = 105
_NIL = 106
_STRING = 107
_LIST = 108
_BINARY = 109
_SMALL_BIG = 110
_LARGE_BIG = 111
_NEW_FUN = 112
_EXPORT = 113
_NEW_REFERENCE = 114
_SMALL_ATOM = 115
_MAP = 116
_ATOM_UTF8 = 118
_SMALL_ATOM_UTF8 = 119
_V4_PORT = 120
_LOCAL = 121

_ATOM_TAGS = frozenset((_ATOM, _SMALL_ATOM, _ATOM_UTF8, _SMALL_ATOM_UTF8))

# Bound methods of precompiled structs: the cheapest way to read fixed fields.
_u16 = struct.Struct(">H").unpack_from
_u32 = struct.Struct(">I").unpack_from
_i32 = struct.Struct(">i").unpack_from
_f64 = struct.Struct(">d").unpack_from
_pack_tag_u32 = struct.Struct(">BI").pack
_pack_tag_i32 = struct.Struct(">Bi").pack
_pack_tag_f64 = struct.Struct(">Bd").pack
_pack_tag_u16 = struct.Struct(">BH").pack


# --- opaque terms ----------------------------------------------------------


class Opaque:
    """A term Python cannot use but must hand back intact (pid, port, reference, fun).

    It keeps the term's exact encoding (tag byte included, version byte not)
    and encodes back to those bytes. Equal, hashable and ordered by type and
    bytes, so it can be a dict key or sit in a set.

    Attributes:
        raw: the term's bytes as they arrived.
    """

    __slots__ = ("raw",)

    _tags: frozenset[int] = frozenset()

    def __init__(self, raw: bytes) -> None:
        raw = bytes(raw)
        if self._tags and (not raw or raw[0] not in self._tags):
            raise ValueError(f"{type(self).__name__} needs the bytes of its term, tag included")
        self.raw = raw

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Opaque):
            return NotImplemented
        return type(self) is type(other) and self.raw == other.raw

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, Opaque):
            return NotImplemented
        return type(self) is not type(other) or self.raw != other.raw

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Opaque):
            return NotImplemented
        return (type(self).__name__, self.raw) < (type(other).__name__, other.raw)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.raw))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.raw!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.raw,))


class Pid(Opaque):
    """An Erlang process identifier (``PID_EXT`` or ``NEW_PID_EXT``)."""

    __slots__ = ()
    _tags = frozenset((_PID, _NEW_PID))


class Port(Opaque):
    """An Erlang port identifier (``PORT_EXT``, ``NEW_PORT_EXT`` or ``V4_PORT_EXT``)."""

    __slots__ = ()
    _tags = frozenset((_PORT, _NEW_PORT, _V4_PORT))


class Reference(Opaque):
    """An Erlang reference (``REFERENCE_EXT``, ``NEW_REFERENCE_EXT``, ``NEWER_REFERENCE_EXT``)."""

    __slots__ = ()
    _tags = frozenset((_REFERENCE, _NEW_REFERENCE, _NEWER_REFERENCE))


class Fun(Opaque):
    """An Erlang fun: a closure (``NEW_FUN_EXT``) or ``fun M:F/A`` (``EXPORT_EXT``)."""

    __slots__ = ()
    _tags = frozenset((_NEW_FUN, _EXPORT))


def _new_opaque(cls: type[Opaque], raw: bytes) -> Opaque:
    # The decoder has already checked the bytes: skip __init__'s validation.
    obj = object.__new__(cls)
    obj.raw = raw
    return obj


# --- decoding --------------------------------------------------------------

# Decoded atoms by name bytes. Protocol traffic reuses a handful of atoms, so
# this saves a decode and an Atom() per atom; it is cleared when it grows past
# _ATOM_CACHE_MAX so that hostile input cannot make it grow without bound.
_ATOM_CACHE_MAX = 4096
_ATOM_SEED: dict[bytes, Any] = {b"true": True, b"false": False, b"nil": None}
_utf8_atoms: dict[bytes, Any] = dict(_ATOM_SEED)
_latin1_atoms: dict[bytes, Any] = dict(_ATOM_SEED)


def _new_atom(raw: bytes, encoding: str, cache: dict[bytes, Any], data: bytes, pos: int) -> Any:
    """Decode, check and cache an atom name the cache did not know."""
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        raise DecodeError("atom name is not valid UTF-8", data, pos) from None
    if len(text) > 255:
        raise DecodeError("atom longer than 255 characters", data, pos)
    atom = Atom(text)
    if len(cache) >= _ATOM_CACHE_MAX:
        cache.clear()
        cache.update(_ATOM_SEED)
    cache[raw] = atom
    return atom


# One function per tag, found through _DECODERS[tag]: a list index beats an
# if-chain, and each nesting level costs exactly one Python frame, which the
# depth limit bounds. Every decoder takes (data, pos, depth) with data[pos] its
# tag, and returns (value, end). Reading past the end either raises IndexError
# or struct.error or returns an end beyond len(data); decode() turns all of
# those into DecodeError. ``depth`` is how many more containers may be opened.


def _dec_small_integer(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    return data[pos + 1], pos + 2


def _dec_integer(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    return _i32(data, pos + 1)[0], pos + 5


def _dec_new_float(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    return _f64(data, pos + 1)[0], pos + 9


def _dec_small_atom_utf8(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    end = pos + 2 + data[pos + 1]
    raw = data[pos + 2 : end]
    try:
        return _utf8_atoms[raw], end
    except KeyError:
        return _new_atom(raw, "utf-8", _utf8_atoms, data, pos), end


def _dec_atom(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    # ATOM_EXT is latin-1; OTP 25 still writes it for every latin-1 atom. One
    # byte is one character and atoms have at most 255, so the high byte of
    # the length is 0: reading only the low byte is cheaper than unpacking.
    if data[pos + 1]:
        raise DecodeError("atom longer than 255 characters", data, pos)
    end = pos + 3 + data[pos + 2]
    raw = data[pos + 3 : end]
    try:
        return _latin1_atoms[raw], end
    except KeyError:
        return _new_atom(raw, "latin-1", _latin1_atoms, data, pos), end


def _dec_atom_utf8(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    end = pos + 3 + _u16(data, pos + 1)[0]
    raw = data[pos + 3 : end]
    try:
        return _utf8_atoms[raw], end
    except KeyError:
        return _new_atom(raw, "utf-8", _utf8_atoms, data, pos), end


def _dec_small_atom(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    end = pos + 2 + data[pos + 1]
    raw = data[pos + 2 : end]
    try:
        return _latin1_atoms[raw], end
    except KeyError:
        return _new_atom(raw, "latin-1", _latin1_atoms, data, pos), end


def _dec_binary(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    start = pos + 5
    end = start + _u32(data, pos + 1)[0]
    raw = data[start:end]
    if end - start > 4096:
        # A failed decode copies its whole input into the UnicodeDecodeError;
        # for a big binary that costs more than everything else. Most binary
        # data fails within its first bytes, so try a prefix first (final=False
        # lets a multi-byte character cut at the prefix's end pass).
        try:
            _utf_8_decode(memoryview(raw)[:256], "strict", False)
        except UnicodeDecodeError:
            return raw, end
    try:
        return raw.decode(), end
    except UnicodeDecodeError:
        return raw, end


def _dec_small_tuple(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth <= 0:
        raise DecodeError("term nested too deeply", data, pos)
    depth -= 1
    items = []
    append = items.append
    pos += 2
    for _ in range(data[pos - 1]):
        tag = data[pos]
        if tag == 97:  # small integers inline: most leaves of an envelope
            append(data[pos + 1])
            pos += 2
        else:
            value, pos = _DECODERS[tag](data, pos, depth)
            append(value)
    return tuple(items), pos


def _dec_large_tuple(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth <= 0:
        raise DecodeError("term nested too deeply", data, pos)
    depth -= 1
    arity = _u32(data, pos + 1)[0]
    pos += 5
    if arity > len(data) - pos:  # every element takes at least one byte
        raise DecodeError(f"tuple of {arity} elements overruns the input", data, pos)
    items = []
    append = items.append
    for _ in range(arity):
        value, pos = _DECODERS[data[pos]](data, pos, depth)
        append(value)
    return tuple(items), pos


def _dec_map(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth <= 0:
        raise DecodeError("term nested too deeply", data, pos)
    depth -= 1
    arity = _u32(data, pos + 1)[0]
    pos += 5
    if not arity:  # the empty opts/kwargs of most calls
        return {}, pos
    if 2 * arity > len(data) - pos:
        raise DecodeError(f"map of {arity} pairs overruns the input", data, pos)
    result = {}
    decoders = _DECODERS
    for _ in range(arity):
        key, pos = decoders[data[pos]](data, pos, depth)
        # A key Python cannot hash (a list, a map) raises TypeError here,
        # which decode() reports as DecodeError.
        result[key], pos = decoders[data[pos]](data, pos, depth)
    return result, pos


def _dec_nil(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    return [], pos + 1


def _dec_list(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth <= 0:
        raise DecodeError("term nested too deeply", data, pos)
    depth -= 1
    length = _u32(data, pos + 1)[0]
    pos += 5
    if length >= len(data) - pos:  # every element, and the tail, take at least one byte
        raise DecodeError(f"list of {length} elements overruns the input", data, pos)
    items = []
    append = items.append
    for _ in range(length):
        tag = data[pos]
        if tag == 97:
            append(data[pos + 1])
            pos += 2
        else:
            value, pos = _DECODERS[tag](data, pos, depth)
            append(value)
    if data[pos] == _NIL:
        return items, pos + 1
    tail, pos = _DECODERS[data[pos]](data, pos, depth)
    return _improper(items, tail), pos


def _improper(items: list[Any], tail: Any) -> Any:
    """Build the value of a LIST_EXT whose tail is not NIL."""
    if not items:
        return tail
    if isinstance(tail, ImproperList):
        # [a | [b | c]] written by hand: flatten to [a, b | c] as the BEAM would.
        return ImproperList(items + tail, tail.tail)
    if type(tail) is list:
        # A list-typed tail (STRING_EXT or another LIST_EXT): the list is proper.
        return items + tail
    return ImproperList(items, tail)


def _dec_string(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    # STRING_EXT: a list of small integers (a charlist), one byte each.
    start = pos + 3
    end = start + _u16(data, pos + 1)[0]
    return list(data[start:end]), end


def _dec_big(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    # SMALL_BIG_EXT: n(1) sign(1) digits; LARGE_BIG_EXT: n(4) sign(1) digits.
    if data[pos] == _SMALL_BIG:
        n = data[pos + 1]
        start = pos + 3
    else:
        n = _u32(data, pos + 1)[0]
        start = pos + 6
    end = start + n
    sign = data[start - 1]
    if end > len(data) or sign > 1:
        raise DecodeError("malformed big integer", data, pos)
    value = int.from_bytes(data[start:end], "little")
    return (-value if sign else value), end


def _dec_float(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    # FLOAT_EXT (minor_version 0): 31 bytes of "%.20e" text, NUL padded.
    text = data[pos + 1 : pos + 32].split(b"\x00", 1)[0]
    try:
        return float(text.decode("ascii")), pos + 32
    except (UnicodeDecodeError, ValueError):
        raise DecodeError("malformed FLOAT_EXT", data, pos) from None


def _node_end(data: bytes, pos: int) -> int:
    """Return where the node-name atom starting at ``pos`` ends (in pids, ports, refs)."""
    tag = data[pos]
    if tag == _SMALL_ATOM_UTF8 or tag == _SMALL_ATOM:
        start, end = pos + 2, pos + 2 + data[pos + 1]
    elif tag == _ATOM_UTF8 or tag == _ATOM:
        start, end = pos + 3, pos + 3 + _u16(data, pos + 1)[0]
    else:
        raise DecodeError(f"expected a node name atom, found tag {tag}", data, pos)
    if end > len(data):
        raise DecodeError("truncated node name", data, pos)
    if tag == _SMALL_ATOM_UTF8 or tag == _ATOM_UTF8:
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


# Bytes after the node name, by tag: ID, Serial and Creation fields.
_OPAQUE_TAIL = {_PID: 9, _NEW_PID: 12, _PORT: 5, _NEW_PORT: 8, _V4_PORT: 12, _REFERENCE: 5}
_OPAQUE_CLASS: dict[int, type[Opaque]] = {
    _PID: Pid,
    _NEW_PID: Pid,
    _PORT: Port,
    _NEW_PORT: Port,
    _V4_PORT: Port,
    _REFERENCE: Reference,
}


# The ranges an OTP node gives these fields (PID_EXT... REFERENCE_EXT), by tag:
# (offset after the node name, size in bytes, largest value). A pid, port or
# reference is only ever echoed back, so one the BEAM would refuse as its own
# ("invalid external representation") must be refused here instead: else the
# reply carrying it could not be decoded by the supervisor.
_PID_ID, _PID_SERIAL, _PORT_ID, _REF_WORD0, _OLD_CREATION = 0x7FFF, 0x1FFF, 0x0FFFFFFF, 0x3FFFF, 3
_OPAQUE_RANGES: dict[int, tuple[tuple[int, int, int], ...]] = {
    _PID: ((0, 4, _PID_ID), (4, 4, _PID_SERIAL), (8, 1, _OLD_CREATION)),
    _NEW_PID: ((0, 4, _PID_ID), (4, 4, _PID_SERIAL)),
    _PORT: ((0, 4, _PORT_ID), (4, 1, _OLD_CREATION)),
    _NEW_PORT: ((0, 4, _PORT_ID),),
    _V4_PORT: ((0, 8, _PORT_ID),),
    _REFERENCE: ((0, 4, _REF_WORD0), (4, 1, _OLD_CREATION)),
}


def _dec_fixed_opaque(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    # PID_EXT, NEW_PID_EXT, PORT_EXT, NEW_PORT_EXT, V4_PORT_EXT, REFERENCE_EXT:
    # a node name atom followed by fixed-size fields.
    tag = data[pos]
    node_end = _node_end(data, pos + 1)
    end = node_end + _OPAQUE_TAIL[tag]
    if end > len(data):
        raise DecodeError("truncated pid, port or reference", data, pos)
    for offset, size, most in _OPAQUE_RANGES[tag]:
        at = node_end + offset
        if int.from_bytes(data[at : at + size], "big") > most:
            raise DecodeError(f"{_OPAQUE_CLASS[tag].__name__.lower()} field out of range", data, at)
    return _new_opaque(_OPAQUE_CLASS[tag], data[pos:end]), end


def _dec_new_reference(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    # NEW_REFERENCE_EXT / NEWER_REFERENCE_EXT: Len(2) Node Creation(1 or 4) ID(4 * Len).
    words = _u16(data, pos + 1)[0]
    if not 1 <= words <= 3:  # what an OTP node writes for its references
        raise DecodeError(f"reference with {words} id words", data, pos)
    newer = data[pos] == _NEWER_REFERENCE
    node_end = _node_end(data, pos + 3)
    first = node_end + (4 if newer else 1)
    end = first + 4 * words
    if end > len(data):
        raise DecodeError("truncated reference", data, pos)
    if (not newer and data[node_end] > _OLD_CREATION) or int.from_bytes(
        data[first : first + 4], "big"
    ) > _REF_WORD0:
        raise DecodeError("reference field out of range", data, pos)
    return _new_opaque(Reference, data[pos:end]), end


def _dec_export(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    # EXPORT_EXT (fun M:F/A): module atom, function atom, arity integer.
    end = pos + 1
    for _ in range(3):
        _, end = _DECODERS[data[end]](data, end, 0)  # leaves: no container allowed
    return _new_opaque(Fun, data[pos:end]), end


def _dec_new_fun(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    # NEW_FUN_EXT: Size(4) counts itself and all that follows; then Arity(1)
    # Uniq(16) Index(4) NumFree(4), and terms: Module, OldIndex, OldUniq, Pid,
    # and NumFree free variables. The terms are decoded only to check that
    # they fill exactly Size bytes.
    if depth <= 0:
        raise DecodeError("term nested too deeply", data, pos)
    end = pos + 1 + _u32(data, pos + 1)[0]
    if end > len(data):
        raise DecodeError("NEW_FUN_EXT overruns the input", data, pos)
    num_free = _u32(data, pos + 26)[0]
    p = pos + 30
    for _ in range(4 + num_free):
        if p >= end:
            break
        _, p = _DECODERS[data[p]](data, p, depth - 1)
    if p != end:
        raise DecodeError("NEW_FUN_EXT size does not match its contents", data, pos)
    return _new_opaque(Fun, data[pos:end]), end


def _dec_refused(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    tag = data[pos]
    if tag == _BIT_BINARY:
        raise DecodeError("bitstrings are not supported (only binaries of whole bytes)", data, pos)
    if tag == _COMPRESSED:
        raise DecodeError("COMPRESSED_EXT is only allowed at the top of a term", data, pos)
    if tag == _ATOM_CACHE_REF or tag == _LOCAL:
        raise DecodeError(f"distribution-only term tag {tag} is not supported", data, pos)
    raise DecodeError(f"unknown term tag {tag}", data, pos)


_DECODERS: list[Callable[[bytes, int, int], tuple[Any, int]]] = [_dec_refused] * 256
for _tag, _decoder in {
    _SMALL_INTEGER: _dec_small_integer,
    _INTEGER: _dec_integer,
    _SMALL_BIG: _dec_big,
    _LARGE_BIG: _dec_big,
    _NEW_FLOAT: _dec_new_float,
    _FLOAT: _dec_float,
    _SMALL_ATOM_UTF8: _dec_small_atom_utf8,
    _ATOM_UTF8: _dec_atom_utf8,
    _SMALL_ATOM: _dec_small_atom,
    _ATOM: _dec_atom,
    _BINARY: _dec_binary,
    _SMALL_TUPLE: _dec_small_tuple,
    _LARGE_TUPLE: _dec_large_tuple,
    _MAP: _dec_map,
    _NIL: _dec_nil,
    _LIST: _dec_list,
    _STRING: _dec_string,
    _PID: _dec_fixed_opaque,
    _NEW_PID: _dec_fixed_opaque,
    _PORT: _dec_fixed_opaque,
    _NEW_PORT: _dec_fixed_opaque,
    _V4_PORT: _dec_fixed_opaque,
    _REFERENCE: _dec_fixed_opaque,
    _NEW_REFERENCE: _dec_new_reference,
    _NEWER_REFERENCE: _dec_new_reference,
    _NEW_FUN: _dec_new_fun,
    _EXPORT: _dec_export,
}.items():
    _DECODERS[_tag] = _decoder
del _tag, _decoder


def _inflate(data: bytes, max_size: int) -> bytes:
    """Inflate a COMPRESSED_EXT body, never producing more than ``max_size + 1`` bytes."""
    size = _u32(data, 2)[0]
    if size > max_size:
        raise DecodeError(f"compressed term inflates to {size} bytes, over {max_size}", data, 2)
    import zlib  # here: a worker that never sees a compressed term never loads it

    inflater = zlib.decompressobj()
    try:
        # Ask for one byte more than declared to notice a stream that lies.
        body = inflater.decompress(data[6:], size + 1)
    except zlib.error as exc:
        raise DecodeError(f"bad zlib data in compressed term: {exc}", data, 6) from None
    if len(body) != size or not inflater.eof:
        raise DecodeError("compressed term does not inflate to its declared size", data, 6)
    if inflater.unused_data:
        raise DecodeError("trailing bytes after the compressed term", data, len(data))
    return body


def decode(
    data: bytes | bytearray | memoryview,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """Decode one term in External Term Format (version byte 131 first).

    Args:
        data: exactly one encoded term, e.g. a frame from the BEAM.
        max_size: largest input, and largest inflated compressed term, accepted.
        max_depth: deepest nesting of lists, tuples and maps accepted.

    Returns:
        The Python value (see the module docstring for the mapping).

    Raises:
        DecodeError: for anything but exactly one well-formed, supported term
            within the limits; never another exception for bad bytes.
        TypeError: when ``data`` is not a bytes-like object.
    """
    if type(data) is not bytes:
        if isinstance(data, str):
            raise TypeError("decode() needs bytes, not str")
        data = bytes(data)
    size = len(data)
    if size > max_size:
        raise DecodeError(f"term of {size} bytes is over the {max_size}-byte limit", data)
    if size < 2 or data[0] != _VERSION:
        raise DecodeError("not an external term (no version byte 131)", data, 0)
    try:
        if data[1] == _COMPRESSED:
            body = _inflate(data, max_size)
            value, pos = _DECODERS[body[0]](body, 0, max_depth)
            end = len(body)
        else:
            body = data
            value, pos = _DECODERS[data[1]](data, 1, max_depth)
            end = size
    except DecodeError:
        raise
    except (IndexError, struct.error):
        raise DecodeError("truncated term", data) from None
    except RecursionError:
        raise DecodeError("term nested too deeply for the Python stack", data) from None
    except TypeError as exc:
        # A map key Python cannot hash (a list, a map).
        raise DecodeError(f"unsupported term: {exc}", data) from None
    except Exception as exc:  # anything else the bytes could provoke, e.g. MemoryError
        raise DecodeError(f"malformed term: {type(exc).__name__}: {exc}", data) from None
    if pos != end:
        if pos > end:
            raise DecodeError("truncated term", data, end)
        raise DecodeError(f"{end - pos} trailing bytes after the term", body, pos)
    return value


# --- encoding --------------------------------------------------------------

_Hook = "Callable[[Any], Any] | None"

_SMALL_INTS = [bytes((_SMALL_INTEGER, i)) for i in range(256)]
_SMALL_TUPLES = [bytes((_SMALL_TUPLE, i)) for i in range(256)]
_NIL_BYTES = bytes((_NIL,))
_INFINITIES = (float("inf"), float("-inf"))  # (not math.isfinite: math is a load at start-up)
_TRUE_BYTES = bytes((_SMALL_ATOM_UTF8, 4)) + b"true"
_FALSE_BYTES = bytes((_SMALL_ATOM_UTF8, 5)) + b"false"
_NIL_ATOM_BYTES = bytes((_SMALL_ATOM_UTF8, 3)) + b"nil"

# Encoded atoms by name, bounded like the decoder's cache.
_atom_bytes: dict[str, bytes] = {}


def _encode_atom(atom: str) -> bytes:
    """Return the encoding of atom ``atom`` (what OTP 26 writes: UTF-8 atom tags)."""
    raw = atom.encode()
    if len(atom) > 255:
        raise EncodeError(f"atom longer than 255 characters: {atom[:40]!r}...", "Atom")
    n = len(raw)
    out = bytes((_SMALL_ATOM_UTF8, n)) + raw if n < 256 else _pack_tag_u16(_ATOM_UTF8, n) + raw
    if len(_atom_bytes) >= _ATOM_CACHE_MAX:
        _atom_bytes.clear()
    _atom_bytes[str(atom)] = out
    return out


def _encode_int(obj: int) -> bytes:
    """Return the encoding of an integer too large for SMALL_INTEGER_EXT."""
    if -2147483648 <= obj <= 2147483647:
        return _pack_tag_i32(_INTEGER, obj)
    sign = obj < 0
    magnitude = -obj if sign else obj
    n = (magnitude.bit_length() + 7) // 8
    digits = magnitude.to_bytes(n, "little")
    if n < 256:
        return bytes((_SMALL_BIG, n, sign)) + digits
    return _pack_tag_u32(_LARGE_BIG, n) + bytes((sign,)) + digits


def _encode_term(obj: Any, out: bytearray, depth: int, default: _Hook) -> None:
    """Append the encoding of ``obj`` to ``out``."""
    t = type(obj)
    # Exact types first, in the order protocol traffic uses them most; the
    # isinstance chain in _encode_other handles subclasses and the rest.
    if t is int:
        if 0 <= obj < 256:
            out += _SMALL_INTS[obj]
        else:
            out += _encode_int(obj)
    elif t is Atom:
        try:
            out += _atom_bytes[obj]
        except KeyError:
            out += _encode_atom(obj)
    elif t is str:
        raw = obj.encode()
        out += _pack_tag_u32(_BINARY, len(raw))
        out += raw
    elif t is tuple:
        if depth <= 0:
            raise EncodeError("value nested too deeply (or cyclic)", "tuple")
        n = len(obj)
        out += _SMALL_TUPLES[n] if n < 256 else _pack_tag_u32(_LARGE_TUPLE, n)
        depth -= 1
        for item in obj:
            if type(item) is int and 0 <= item < 256:
                out += _SMALL_INTS[item]
            else:
                _encode_term(item, out, depth, default)
    elif t is dict:
        if depth <= 0:
            raise EncodeError("value nested too deeply (or cyclic)", "dict")
        out += _pack_tag_u32(_MAP, len(obj))
        depth -= 1
        for key, value in obj.items():
            _encode_term(key, out, depth, default)
            _encode_term(value, out, depth, default)
    elif t is list:
        if not obj:
            out += _NIL_BYTES
            return
        if depth <= 0:
            raise EncodeError("value nested too deeply (or cyclic)", "list")
        out += _pack_tag_u32(_LIST, len(obj))
        depth -= 1
        for item in obj:
            if type(item) is int and 0 <= item < 256:
                out += _SMALL_INTS[item]
            else:
                _encode_term(item, out, depth, default)
        out += _NIL_BYTES
    elif obj is None:
        out += _NIL_ATOM_BYTES
    elif t is bool:
        out += _TRUE_BYTES if obj else _FALSE_BYTES
    elif t is float:
        if obj != obj or obj in _INFINITIES:
            raise EncodeError(f"the BEAM has no float {obj!r}", "float")
        out += _pack_tag_f64(_NEW_FLOAT, obj)
    elif t is bytes:
        out += _pack_tag_u32(_BINARY, len(obj))
        out += obj
    else:
        _encode_other(obj, out, depth, default)


def _encode_other(obj: Any, out: bytearray, depth: int, default: _Hook) -> None:
    """Append the encoding of a value whose exact type ``_encode_term`` does not know."""
    if isinstance(obj, Opaque):
        out += obj.raw
    elif isinstance(obj, (bytearray, memoryview)):
        raw = bytes(obj)  # a memoryview's len() counts items, not bytes
        out += _pack_tag_u32(_BINARY, len(raw))
        out += raw
    elif isinstance(obj, ImproperList):
        if depth <= 0:
            raise EncodeError("value nested too deeply (or cyclic)", "ImproperList")
        if not obj:
            _encode_term(obj.tail, out, depth - 1, default)
            return
        out += _pack_tag_u32(_LIST, len(obj))
        for item in obj:
            _encode_term(item, out, depth - 1, default)
        _encode_term(obj.tail, out, depth - 1, default)
    elif isinstance(obj, Atom):
        _encode_term(Atom(obj), out, depth, default)
    # Subclasses of the builtin types (IntEnum, StrEnum, OrderedDict, namedtuple...)
    # encode as their base type; bool cannot be subclassed, so int is safe here.
    elif isinstance(obj, int):
        _encode_term(int(obj), out, depth, default)
    elif isinstance(obj, str):
        _encode_term(str(obj), out, depth, default)
    elif isinstance(obj, float):
        _encode_term(float(obj), out, depth, default)
    elif isinstance(obj, bytes):
        _encode_term(bytes(obj), out, depth, default)
    elif isinstance(obj, (tuple, list, dict)):
        if depth <= 0:
            raise EncodeError("value nested too deeply (or cyclic)", _type_name(obj))
        base = tuple if isinstance(obj, tuple) else list if isinstance(obj, list) else dict
        # Shallow conversion: the items themselves are still encoded one by one.
        _encode_term(base(obj.items() if base is dict else obj), out, depth, default)
    elif default is not None:
        if depth <= 0:
            raise EncodeError("default hook keeps returning unencodable values", _type_name(obj))
        _encode_term(default(obj), out, depth - 1, default)
    else:
        type_name = _type_name(obj)
        raise EncodeError(f"cannot encode a value of type {type_name}", type_name)


def encode(
    obj: Any,
    *,
    default: Callable[[Any], Any] | None = None,
    compressed: int | None = None,
) -> bytes:
    """Encode ``obj`` in External Term Format, as ``term_to_binary/2`` would.

    Args:
        obj: the value to encode (see the module docstring for the mapping).
        default: called with any value of a type the codec does not know; its
            return value is encoded instead (like ``json.dumps(default=...)``).
            It should raise for values it cannot convert either.
        compressed: a zlib level 1-9 to emit a COMPRESSED_EXT term, as
            ``term_to_binary(t, [{:compressed, level}])`` does: only when that is
            shorter. ``None`` or ``0`` emits the term uncompressed.

    Returns:
        The encoded term, version byte 131 first.

    Raises:
        EncodeError: for a value (or a ``default`` result) that has no mapping,
            a float NaN or infinity, a str that is not valid Unicode, an atom
            longer than 255 characters, or nesting deeper than
            ``DEFAULT_MAX_DEPTH`` (which includes cycles).
    """
    out = bytearray(b"\x83")
    _encode_into(obj, out, default)
    if compressed:
        if not 1 <= compressed <= 9:
            raise ValueError(f"compressed must be a zlib level 0-9 or None, got: {compressed!r}")
        body = memoryview(out)[1:]
        import zlib

        packed = zlib.compress(body, compressed)
        if len(packed) + 5 < len(body):
            return b"\x83" + _pack_tag_u32(_COMPRESSED, len(body)) + packed
    return bytes(out)


_OK_HEAD = b"\x83h\x03" + _SMALL_ATOM_UTF8.to_bytes(1, "big") + b"\x02ok"


def encode_ok(call_id: int, result: Any) -> bytes:
    """Encode ``{:ok, call_id, result}``: ``encode((Atom("ok"), call_id, result))``, but cheaper.

    Every successful call ends with this frame, so its fixed head is written once.
    """
    out = bytearray(_OK_HEAD)
    if type(call_id) is int and 0 <= call_id < 256:
        out += _SMALL_INTS[call_id]
    else:
        _encode_into(call_id, out, None)
    if type(result) is int and 0 <= result < 256:
        out += _SMALL_INTS[result]
    else:
        _encode_into(result, out, None)
    return bytes(out)


def chunk_encoder(call_id: int) -> Callable[[int, Any], bytes]:
    """Return ``encode_chunk(seq, data)``: the bytes of ``{:chunk, call_id, seq, data}``.

    The part that never changes within a stream (tuple header, the atom, the
    id) is encoded once; a stream pays only for ``seq`` and ``data``.
    """
    prefix = b"\x83h\x04" + encode((Atom("chunk"), call_id))[3:]

    def encode_chunk(seq: int, data: Any) -> bytes:
        out = bytearray(prefix)
        if 0 <= seq < 256:
            out += bytes((97, seq))
        else:
            out += _encode_int(seq)
        _encode_into(data, out, None)
        return bytes(out)

    return encode_chunk


def _encode_into(obj: Any, out: bytearray, default: _Hook) -> None:
    """Append ``obj``'s encoding to ``out``, turning every failure into EncodeError."""
    try:
        _encode_term(obj, out, DEFAULT_MAX_DEPTH, default)
    except RecursionError:
        raise EncodeError("value nested too deeply for the Python stack", _type_name(obj)) from None
    except UnicodeEncodeError as exc:
        raise EncodeError(f"str is not valid Unicode: {exc}", "str") from None
    except (OverflowError, struct.error) as exc:
        # A length (of a binary, a list, a big integer) past the 32-bit fields.
        raise EncodeError(
            f"value too large for the external term format: {exc}", _type_name(obj)
        ) from None


def _python_decode_message(data: bytes) -> Any:
    """The pure-Python ``decode_message``: what the C shortcut hands the rest to."""
    from ._etf_message import decode_message

    return decode_message(data)


_python_encode_ok = encode_ok


def _load_accelerator() -> Any:
    """The C shortcuts (``_cetf``), configured; None if not built or ``SNAKEPIT_PY_PURE`` is set."""
    import os

    if os.environ.get("SNAKEPIT_PY_PURE"):
        return None
    try:
        from . import _cetf  # type: ignore[attr-defined]
    except ImportError:
        return None
    _cetf.configure(
        Atom, Atom("call"), _utf8_atoms, _latin1_atoms, _python_decode_message, _python_encode_ok
    )
    return _cetf


_accelerator = _load_accelerator()
if _accelerator is not None:
    # The same answers (a property test holds both to it), in C for the common terms.
    encode_ok = _accelerator.encode_ok  # noqa: F811
    decode_message = _accelerator.decode_message
    call_fields = _accelerator.call_fields


def __getattr__(name: str) -> Any:
    # Without the C shortcuts, decode_message lives in _etf_message, which
    # imports this module's decoders: loaded on first use, so either module
    # can be imported first.
    if name == "decode_message":
        from ._etf_message import decode_message

        globals()["decode_message"] = decode_message
        return decode_message
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
