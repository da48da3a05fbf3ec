"""The ETF decoder: ``decode(data) -> obj``, and its table of decoders, one per tag.

The decoder is written for hostile input: it raises only :class:`DecodeError`,
checks every length against the bytes that remain before using it, bounds the
nesting depth, and never inflates a compressed term beyond ``max_size``.
Atoms are read in ``_etf_atoms``, pids, ports and references in ``_etf_opaque``.
"""

from __future__ import annotations

import struct
from codecs import utf_8_decode as _utf_8_decode

from ..errors import DecodeError
from . import _etf_tags as tags  # (hot paths import their tags by name: no attribute lookup)
from ._etf_atoms import dec_atom, dec_atom_utf8, dec_small_atom, dec_small_atom_utf8
from ._etf_opaque import dec_fixed_opaque, dec_new_reference
from ._etf_tags import COMPRESSED, NIL_EXT, SMALL_BIG_EXT, SMALL_INTEGER_EXT, VERSION
from ._limits import DEFAULT_MAX_DEPTH, DEFAULT_MAX_SIZE
from ._terms import Fun, ImproperList, trusted_opaque

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["decode", "DECODERS"]

# Bound methods of precompiled structs: the cheapest way to read fixed fields.
_u16 = struct.Struct(">H").unpack_from
_u32 = struct.Struct(">I").unpack_from
_i32 = struct.Struct(">i").unpack_from
_f64 = struct.Struct(">d").unpack_from


# One function per tag, found through DECODERS[tag]: a list index beats an
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
    items: list[Any] = []
    append = items.append
    pos += 2
    for _ in range(data[pos - 1]):
        tag = data[pos]
        if tag == SMALL_INTEGER_EXT:  # small integers inline: most leaves of an envelope
            append(data[pos + 1])
            pos += 2
        else:
            value, pos = DECODERS[tag](data, pos, depth)
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
    items: list[Any] = []
    append = items.append
    for _ in range(arity):
        value, pos = DECODERS[data[pos]](data, pos, depth)
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
    decoders = DECODERS
    for _ in range(arity):
        key, pos = decoders[data[pos]](data, pos, depth)
        # A key Python cannot hash (a list, a map) raises TypeError here,
        # which decode() reports as DecodeError.
        result[key], pos = decoders[data[pos]](data, pos, depth)
    if "__struct__" in result:  # an Elixir struct: DateTime, Decimal... (codec/_types.py)
        return _from_struct(result), pos
    return result, pos


def _from_struct(term: dict[Any, Any]) -> Any:
    """``_types.from_struct(term)``, the module imported on first use."""
    global _from_struct
    from ._types import from_struct

    _from_struct = from_struct
    return from_struct(term)


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
    items: list[Any] = []
    append = items.append
    for _ in range(length):
        tag = data[pos]
        if tag == SMALL_INTEGER_EXT:
            append(data[pos + 1])
            pos += 2
        else:
            value, pos = DECODERS[tag](data, pos, depth)
            append(value)
    if data[pos] == NIL_EXT:
        return items, pos + 1
    tail, pos = DECODERS[data[pos]](data, pos, depth)
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
    if data[pos] == SMALL_BIG_EXT:
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


def _dec_export(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    # EXPORT_EXT (fun M:F/A): module atom, function atom, arity integer.
    end = pos + 1
    for _ in range(3):
        _, end = DECODERS[data[end]](data, end, 0)  # leaves: no container allowed
    return trusted_opaque(Fun, data[pos:end]), end


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
        _, p = DECODERS[data[p]](data, p, depth - 1)
    if p != end:
        raise DecodeError("NEW_FUN_EXT size does not match its contents", data, pos)
    return trusted_opaque(Fun, data[pos:end]), end


def _dec_refused(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    tag = data[pos]
    if tag == tags.BIT_BINARY_EXT:
        raise DecodeError("bitstrings are not supported (only binaries of whole bytes)", data, pos)
    if tag == COMPRESSED:
        raise DecodeError("COMPRESSED_EXT is only allowed at the top of a term", data, pos)
    if tag == tags.ATOM_CACHE_REF or tag == tags.LOCAL_EXT:
        raise DecodeError(f"distribution-only term tag {tag} is not supported", data, pos)
    raise DecodeError(f"unknown term tag {tag}", data, pos)


DECODERS: list[Callable[[bytes, int, int], tuple[Any, int]]] = [_dec_refused] * 256
for _tag, _decoder in {
    tags.SMALL_INTEGER_EXT: _dec_small_integer,
    tags.INTEGER_EXT: _dec_integer,
    tags.SMALL_BIG_EXT: _dec_big,
    tags.LARGE_BIG_EXT: _dec_big,
    tags.NEW_FLOAT_EXT: _dec_new_float,
    tags.FLOAT_EXT: _dec_float,
    tags.SMALL_ATOM_UTF8_EXT: dec_small_atom_utf8,
    tags.ATOM_UTF8_EXT: dec_atom_utf8,
    tags.SMALL_ATOM_EXT: dec_small_atom,
    tags.ATOM_EXT: dec_atom,
    tags.BINARY_EXT: _dec_binary,
    tags.SMALL_TUPLE_EXT: _dec_small_tuple,
    tags.LARGE_TUPLE_EXT: _dec_large_tuple,
    tags.MAP_EXT: _dec_map,
    tags.NIL_EXT: _dec_nil,
    tags.LIST_EXT: _dec_list,
    tags.STRING_EXT: _dec_string,
    tags.PID_EXT: dec_fixed_opaque,
    tags.NEW_PID_EXT: dec_fixed_opaque,
    tags.PORT_EXT: dec_fixed_opaque,
    tags.NEW_PORT_EXT: dec_fixed_opaque,
    tags.V4_PORT_EXT: dec_fixed_opaque,
    tags.REFERENCE_EXT: dec_fixed_opaque,
    tags.NEW_REFERENCE_EXT: dec_new_reference,
    tags.NEWER_REFERENCE_EXT: dec_new_reference,
    tags.NEW_FUN_EXT: _dec_new_fun,
    tags.EXPORT_EXT: _dec_export,
}.items():
    DECODERS[_tag] = _decoder
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
    if size < 2 or data[0] != VERSION:
        raise DecodeError("not an external term (no version byte 131)", data, 0)
    try:
        if data[1] == COMPRESSED:
            body = _inflate(data, max_size)
            value, pos = DECODERS[body[0]](body, 0, max_depth)
            end = len(body)
        else:
            body = data
            value, pos = DECODERS[data[1]](data, 1, max_depth)
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
