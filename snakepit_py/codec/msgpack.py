"""MessagePack payload codec (``--codec msgpack``), for BEAM sides that speak msgpack.

Mapping: ``str`` <-> msgpack str, ``bytes`` <-> bin, :class:`Atom` <-> ext type 1
(the UTF-8 name; ``true``/``false``/``nil`` decode to ``True``/``False``/``None``
as in ETF), ``tuple`` <-> ext type 2 (its payload is a msgpack array), and
None, bools, ints, floats, lists and maps as msgpack has them. Improper lists
and opaque ETF values (pids, ports, references, funs) have no msgpack form.

Needs the ``msgpack`` package: ``pip install snakepit_py[msgpack]``.
"""

from __future__ import annotations

from ..errors import DecodeError, EncodeError
from ._general import general_codec
from ._limits import DEFAULT_MAX_DEPTH, DEFAULT_MAX_SIZE
from ._terms import NO_TERM, Atom, ImproperList, Opaque
from ._terms import type_name as _type_name

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

try:
    import msgpack as _msgpack
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the msgpack codec needs the msgpack package: pip install snakepit_py[msgpack]"
    ) from exc

__all__ = ["name", "encode", "decode", "ATOM_EXT_TYPE", "TUPLE_EXT_TYPE"]

name = "msgpack"

ATOM_EXT_TYPE = 1
"""msgpack ext type code that carries an atom (payload: the UTF-8 name)."""

TUPLE_EXT_TYPE = 2
"""msgpack ext type code that carries a tuple (payload: a msgpack array)."""

_ExtType = _msgpack.ExtType
_packb = _msgpack.packb
_unpackb = _msgpack.unpackb
_Unpacker = _msgpack.Unpacker

# Types msgpack packs as they are (with strict_types=True, exact types only);
# everything else goes through the hook below.
_NATIVE = frozenset(
    (type(None), bool, int, float, str, bytes, bytearray, memoryview, list, dict, _ExtType)
) | {_msgpack.Timestamp}

_SPECIAL_ATOMS: dict[str, Any] = {"true": True, "false": False, "nil": None}
_NOT_SPECIAL = object()


def _to_term(obj: Any) -> Any:
    """``_types.to_term(obj)``, the module imported on first use."""
    global _to_term
    from ._types import to_term

    _to_term = to_term
    return to_term(obj)


# How many times a user ``default`` hook may hand back a value that needs yet
# another conversion before we call it a loop.
_MAX_HOOK_ROUNDS = 16


def encode(
    obj: Any,
    *,
    default: Callable[[Any], Any] | None = None,
    compressed: int | None = None,
) -> bytes:
    """Encode ``obj`` as MessagePack.

    Args:
        obj: the value to encode (see the module docstring for the mapping).
        default: called with any value of a type the codec does not know; its
            return value is encoded instead.
        compressed: accepted for the same signature as the etf codec; msgpack
            has no compressed form, so it is ignored.

    Returns:
        The packed bytes.

    Raises:
        EncodeError: for a value with no msgpack form (an improper list, a pid,
            an unknown type without a ``default`` hook), an int outside
            -2**63 .. 2**64-1, or nesting too deep.
    """
    depth = 0

    def hook(value: Any) -> Any:
        nonlocal depth
        for _ in range(_MAX_HOOK_ROUNDS):
            if isinstance(value, Atom):
                return _ExtType(ATOM_EXT_TYPE, str(value).encode())
            if isinstance(value, tuple):
                if depth >= DEFAULT_MAX_DEPTH:
                    raise EncodeError("value nested too deeply (or cyclic)", "tuple")
                depth += 1
                try:
                    payload = _packb(list(value), default=hook, strict_types=True)
                finally:
                    depth -= 1
                return _ExtType(TUPLE_EXT_TYPE, payload)
            if isinstance(value, ImproperList):
                raise EncodeError("improper lists have no msgpack form", "ImproperList")
            if isinstance(value, Opaque):
                type_name = type(value).__name__
                raise EncodeError(f"a {type_name} can only travel with the etf codec", type_name)
            # Subclasses of the native types (IntEnum, StrEnum, OrderedDict...).
            for base in (int, float, str, bytes, list, dict):
                if isinstance(value, base):
                    return base(value)  # type: ignore[arg-type]  # (value is a base)
            term = _to_term(value)  # numpy, datetimes, decimals... (codec/_types.py)
            if term is not NO_TERM:
                value = term
                if type(value) in _NATIVE:
                    return value
                continue
            if default is None:
                type_name = _type_name(value)
                raise EncodeError(f"cannot encode a value of type {type_name}", type_name)
            value = default(value)
            if type(value) in _NATIVE:
                return value
        raise EncodeError("default hook keeps returning unencodable values", _type_name(value))

    try:
        return _packb(obj, default=hook, strict_types=True)
    except EncodeError:
        raise
    except OverflowError as exc:
        raise EncodeError(f"integer out of msgpack's range: {exc}", "int") from None
    except (RecursionError, ValueError) as exc:
        # msgpack raises ValueError past its own nesting limit (cycles included).
        raise EncodeError(f"value nested too deeply (or cyclic): {exc}", _type_name(obj)) from None
    except UnicodeEncodeError as exc:
        raise EncodeError(f"str is not valid Unicode: {exc}", "str") from None
    except TypeError as exc:
        raise EncodeError(f"cannot encode: {exc}", _type_name(obj)) from None


def decode(
    data: bytes | bytearray | memoryview,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """Decode one MessagePack value.

    Args:
        data: exactly one packed value.
        max_size: largest input accepted, in bytes.
        max_depth: deepest nesting of tuples (ext type 2) accepted; arrays and
            maps are also capped by msgpack's own nesting limit.

    Returns:
        The Python value (see the module docstring for the mapping).

    Raises:
        DecodeError: for anything but exactly one well-formed value within the
            limits, an unknown ext type, or a map key Python cannot hash.
    """
    if isinstance(data, str):
        raise TypeError("decode() needs bytes, not str")
    size = memoryview(data).nbytes
    if size > max_size:
        raise DecodeError(f"payload of {size} bytes is over the {max_size}-byte limit", data)
    depth = 0

    def ext_hook(code: int, payload: bytes) -> Any:
        nonlocal depth
        if code == ATOM_EXT_TYPE:
            try:
                atom_name = payload.decode()
            except UnicodeDecodeError:
                raise DecodeError("atom name is not valid UTF-8", payload) from None
            special = _SPECIAL_ATOMS.get(atom_name, _NOT_SPECIAL)
            return Atom(atom_name) if special is _NOT_SPECIAL else special
        if code == TUPLE_EXT_TYPE:
            if depth >= max_depth:
                raise DecodeError("tuples nested too deeply", payload)
            # An Unpacker, not unpackb: unpackb keeps its ~32 KiB parse stack on
            # the C stack, so nesting it once per tuple level overflows the C
            # stack long before the depth limit; an Unpacker keeps it on the heap.
            unpacker = _Unpacker(
                raw=False,
                strict_map_key=False,
                ext_hook=ext_hook,
                max_buffer_size=max(len(payload), 1),
            )
            unpacker.feed(payload)
            depth += 1
            try:
                items = unpacker.unpack()
            finally:
                depth -= 1
            if unpacker.tell() != len(payload):
                raise DecodeError("trailing bytes in a tuple's payload", payload)
            if type(items) is not list:
                raise DecodeError("a tuple's payload must be an array", payload)
            return tuple(items)
        raise DecodeError(f"unknown msgpack ext type {code}", payload)

    try:
        return _unpackb(data, raw=False, strict_map_key=False, ext_hook=ext_hook)
    except DecodeError:
        raise
    except (_msgpack.exceptions.StackError, RecursionError):
        raise DecodeError("msgpack value nested too deeply", bytes(data)) from None
    except Exception as exc:  # msgpack's own errors, unhashable keys...
        raise DecodeError(f"malformed msgpack: {type(exc).__name__}: {exc}", bytes(data)) from None


# --- the runtime's hooks (the Codec protocol of snakepit_py.codec) ---------
# msgpack has no shortcuts: each hook takes the general road.

_hooks = general_codec(name, encode, decode)
decode_message = _hooks.decode_message
call_fields = _hooks.call_fields
encode_ok = _hooks.encode_ok
chunk_encoder = _hooks.chunk_encoder
peek_call_id = _hooks.peek_call_id
