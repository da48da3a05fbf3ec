"""The ETF encoder: ``encode(obj) -> bytes``, as ``term_to_binary/2`` writes terms.

Exact builtin types are encoded first, in the order protocol traffic uses
them most; subclasses encode as their base type, opaque terms as the bytes
they arrived as, and anything else through the caller's ``default`` hook.
"""

from __future__ import annotations

import struct

from ..errors import EncodeError
from . import _etf_tags as tags  # (hot paths import their tags by name: no attribute lookup)
from ._etf_atoms import atom_bytes, encode_atom
from ._etf_tags import BINARY_EXT, INTEGER_EXT, LIST_EXT, MAP_EXT, NEW_FLOAT_EXT, SMALL_BIG_EXT
from ._limits import DEFAULT_MAX_DEPTH
from ._terms import NO_TERM, Atom, ImproperList, Opaque
from ._terms import type_name as _type_name

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    _Hook = Callable[[Any], Any] | None

__all__ = ["encode", "encode_into", "encode_int", "SMALL_INTS"]

_pack_tag_u32 = struct.Struct(">BI").pack
_pack_tag_i32 = struct.Struct(">Bi").pack
_pack_tag_f64 = struct.Struct(">Bd").pack

_VERSION_BYTES = bytes((tags.VERSION,))

SMALL_INTS = [bytes((tags.SMALL_INTEGER_EXT, i)) for i in range(256)]
_SMALL_TUPLES = [bytes((tags.SMALL_TUPLE_EXT, i)) for i in range(256)]
_NIL_BYTES = bytes((tags.NIL_EXT,))
_INFINITIES = (float("inf"), float("-inf"))  # (not math.isfinite: math is a load at start-up)
_TRUE_BYTES = bytes((tags.SMALL_ATOM_UTF8_EXT, 4)) + b"true"
_FALSE_BYTES = bytes((tags.SMALL_ATOM_UTF8_EXT, 5)) + b"false"
_NIL_ATOM_BYTES = bytes((tags.SMALL_ATOM_UTF8_EXT, 3)) + b"nil"


def encode_int(obj: int) -> bytes:
    """Return the encoding of an integer too large for SMALL_INTEGER_EXT."""
    if -2147483648 <= obj <= 2147483647:
        return _pack_tag_i32(INTEGER_EXT, obj)
    sign = obj < 0
    magnitude = -obj if sign else obj
    n = (magnitude.bit_length() + 7) // 8
    digits = magnitude.to_bytes(n, "little")
    if n < 256:
        return bytes((SMALL_BIG_EXT, n, sign)) + digits
    return _pack_tag_u32(tags.LARGE_BIG_EXT, n) + bytes((sign,)) + digits


def _encode_term(obj: Any, out: bytearray, depth: int, default: _Hook) -> None:
    """Append the encoding of ``obj`` to ``out``."""
    t = type(obj)
    # Exact types first, in the order protocol traffic uses them most; the
    # isinstance chain in _encode_other handles subclasses and the rest.
    if t is int:
        if 0 <= obj < 256:
            out += SMALL_INTS[obj]
        else:
            out += encode_int(obj)
    elif t is Atom:
        try:
            out += atom_bytes[obj]
        except KeyError:
            out += encode_atom(obj)
    elif t is str:
        raw = obj.encode()
        out += _pack_tag_u32(BINARY_EXT, len(raw))
        out += raw
    elif t is tuple:
        if depth <= 0:
            raise EncodeError("value nested too deeply (or cyclic)", "tuple")
        n = len(obj)
        out += _SMALL_TUPLES[n] if n < 256 else _pack_tag_u32(tags.LARGE_TUPLE_EXT, n)
        depth -= 1
        for item in obj:
            if type(item) is int and 0 <= item < 256:
                out += SMALL_INTS[item]
            else:
                _encode_term(item, out, depth, default)
    elif t is dict:
        if depth <= 0:
            raise EncodeError("value nested too deeply (or cyclic)", "dict")
        out += _pack_tag_u32(MAP_EXT, len(obj))
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
        out += _pack_tag_u32(LIST_EXT, len(obj))
        depth -= 1
        for item in obj:
            if type(item) is int and 0 <= item < 256:
                out += SMALL_INTS[item]
            else:
                _encode_term(item, out, depth, default)
        out += _NIL_BYTES
    elif obj is None:
        out += _NIL_ATOM_BYTES
    elif t is bool:
        out += _TRUE_BYTES if obj else _FALSE_BYTES
    elif t is float:
        if obj != obj or obj in _INFINITIES:
            # The BEAM has no such float: Nx's atoms, as Snakepit.Tensor.to_list gives them.
            out += encode_atom("nan" if obj != obj else "infinity" if obj > 0 else "neg_infinity")
            return
        out += _pack_tag_f64(NEW_FLOAT_EXT, obj)
    elif t is bytes:
        out += _pack_tag_u32(BINARY_EXT, len(obj))
        out += obj
    else:
        _encode_other(obj, out, depth, default)


def _encode_other(obj: Any, out: bytearray, depth: int, default: _Hook) -> None:
    """Append the encoding of a value whose exact type ``_encode_term`` does not know."""
    if isinstance(obj, Opaque):
        out += obj.raw
    elif isinstance(obj, (bytearray, memoryview)):
        if type(obj) is memoryview and obj.c_contiguous:
            out += _pack_tag_u32(BINARY_EXT, obj.nbytes)  # (len() counts items, not bytes)
            out += obj  # no copy on the way: a tensor's data goes straight into the frame
            return
        raw = bytes(obj)
        out += _pack_tag_u32(BINARY_EXT, len(raw))
        out += raw
    elif isinstance(obj, ImproperList):
        if depth <= 0:
            raise EncodeError("value nested too deeply (or cyclic)", "ImproperList")
        if not obj:
            _encode_term(obj.tail, out, depth - 1, default)
            return
        out += _pack_tag_u32(LIST_EXT, len(obj))
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
        shallow = base(obj.items() if base is dict else obj)  # type: ignore[union-attr]
        _encode_term(shallow, out, depth, default)
    elif (term := _rich_term(obj)) is not NO_TERM:
        # numpy, datetimes, decimals, dataclasses... (codec/_types.py): only values
        # that would otherwise go to ``default`` or fail ever come this far.
        if depth <= 0:
            raise EncodeError("value nested too deeply (or cyclic)", _type_name(obj))
        _encode_term(term, out, depth - 1, default)
    elif default is not None:
        if depth <= 0:
            raise EncodeError("default hook keeps returning unencodable values", _type_name(obj))
        _encode_term(default(obj), out, depth - 1, default)
    else:
        type_name = _type_name(obj)
        raise EncodeError(f"cannot encode a value of type {type_name}", type_name)


def _rich_term(obj: Any) -> Any:
    """``_types.to_term(obj)``, the module imported on first use."""
    global _rich_term
    from ._types import to_term

    _rich_term = to_term
    return to_term(obj)


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
    out = bytearray(_VERSION_BYTES)
    encode_into(obj, out, default)
    if compressed:
        if not 1 <= compressed <= 9:
            raise ValueError(f"compressed must be a zlib level 0-9 or None, got: {compressed!r}")
        body = memoryview(out)[1:]
        import zlib

        packed = zlib.compress(body, compressed)
        if len(packed) + 5 < len(body):
            return _VERSION_BYTES + _pack_tag_u32(tags.COMPRESSED, len(body)) + packed
    return bytes(out)


def encode_into(obj: Any, out: bytearray, default: _Hook) -> None:
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
