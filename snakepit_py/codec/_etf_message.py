"""The frames a worker reads and writes most, each on a short road; and ``peek_call_id``.

``decode_message(data)`` returns exactly what ``decode(data)`` returns, for
every input (a property test holds it to that). A call envelope from the
BEAM takes the short road: its fixed parts (the tuple header, the ``call``
atom, the id, the method name, the usual small ``opts`` map) are read in one
function instead of one decoder call per term, and ``opts`` seen before are
rebuilt from a small cache; the envelope the harness sends goes from about
2.6 µs to about 1.1 µs. ``args`` and any value of an unusual shape go
through the general decoders. Anything else, and anything surprising on the
way (an unknown tag, a truncated frame), is handed whole to ``decode``,
which then returns the value or raises the one ``DecodeError`` it always
raises: the fast path never decides that bytes are bad.

``encode_ok`` and ``chunk_encoder`` write the frames every call and every
stream chunk end with, their fixed heads encoded once. These are the
pure-Python hooks of the codec protocol (``snakepit_py.codec``); ``etf``
swaps in the C accelerator's versions of some when it is built.
"""

from __future__ import annotations

import struct

from . import _etf_tags as tags  # (hot paths import their tags by name: no attribute lookup)
from ._etf_atoms import latin1_atoms, utf8_atoms
from ._etf_decode import DECODERS, decode
from ._etf_encode import SMALL_INTS, encode, encode_int, encode_into
from ._etf_tags import (
    ATOM_EXT,
    BINARY_EXT,
    INTEGER_EXT,
    MAP_EXT,
    NIL_EXT,
    SMALL_ATOM_UTF8_EXT,
    SMALL_INTEGER_EXT,
)
from ._limits import DEFAULT_MAX_DEPTH
from ._terms import Atom

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["decode_message", "call_fields", "encode_ok", "chunk_encoder", "peek_call_id"]

_u32 = struct.Struct(">I").unpack_from
_i32 = struct.Struct(">i").unpack_from

# term_to_binary({:call, ...}): OTP 25 writes the atom as ATOM_EXT, OTP 26 as SMALL_ATOM_UTF8_EXT
_HEAD_OTP25 = bytes((tags.VERSION, tags.SMALL_TUPLE_EXT, 6, tags.ATOM_EXT, 0, 4)) + b"call"
_HEAD_OTP26 = bytes((tags.VERSION, tags.SMALL_TUPLE_EXT, 6, tags.SMALL_ATOM_UTF8_EXT, 4)) + b"call"
_EMPTY_MAP = bytes((tags.MAP_EXT, 0, 0, 0, 0))
_MISSING = object()  # an atom cache miss (None is the value of the atom nil)
_DEPTH = DEFAULT_MAX_DEPTH - 1  # the envelope tuple takes one level
_CALL = Atom("call")

# Decoded opts by their bytes (see _decode_call); bounded against odd input.
_opts_seen: dict[bytes, tuple[tuple[tuple[Any, Any], ...], tuple[Any, ...]]] = {}
_OPTS_MAX = 256
_OPTS_BYTES_MAX = 256  # a timeout, a credit, a small meta: big opts are decoded every time
_IMMUTABLE = frozenset((int, float, str, bytes, bool, type(None), Atom))

# Method names by their bytes: a handful in any worker, bounded against odd input.
_names: dict[bytes, str] = {}
_NAMES_MAX = 1024


def decode_message(data: bytes) -> Any:
    """Decode one frame from the supervisor: ``decode(data)``, faster for a call."""
    if type(data) is bytes:
        if data[:10] == _HEAD_OTP25:
            pos = 10
        elif data[:9] == _HEAD_OTP26:
            pos = 9
        else:
            return decode(data)
        try:
            message = _decode_call(data, pos)
        except Exception:  # the general decoder says what is wrong, exactly as always
            message = None
        if message is not None:
            return message
    return decode(data)


def _decode_call(data: bytes, pos: int) -> tuple | None:
    """The envelope after its ``{:call,`` head, or None to leave it to ``decode``."""
    tag = data[pos]
    if tag == SMALL_INTEGER_EXT:
        call_id: Any = data[pos + 1]
        pos += 2
    elif tag == INTEGER_EXT:
        call_id = _i32(data, pos + 1)[0]
        pos += 5
    else:
        return None
    if data[pos] != BINARY_EXT:
        return None
    end = pos + 5 + _u32(data, pos + 1)[0]
    raw = data[pos + 5 : end]
    name: Any = _names.get(raw)
    if name is None:
        if end > len(data):
            return None
        try:
            name = raw.decode()
        except UnicodeDecodeError:
            return None
        if len(raw) <= 255:
            if len(_names) >= _NAMES_MAX:
                _names.clear()
            _names[raw] = name
    pos = end
    if data[pos] == NIL_EXT:
        args: Any = []
        pos += 1
    else:
        args, pos = DECODERS[data[pos]](data, pos, _DEPTH)
    if data[pos : pos + 5] == _EMPTY_MAP:
        kwargs: Any = {}
        pos += 5
    else:
        kwargs, pos = DECODERS[data[pos]](data, pos, _DEPTH)
    # opts is the envelope's last term, and a supervisor sends the same few
    # opts again and again (the same timeout, an empty meta): seen before,
    # they are rebuilt from the cache (new dicts every time) instead of decoded.
    seen = _opts_seen.get(data[pos:]) if len(data) - pos <= _OPTS_BYTES_MAX else None
    if seen is not None:
        opts = dict(seen[0])
        for key in seen[1]:
            opts[key] = {}
        return (_CALL, call_id, name, args, kwargs, opts)
    start = pos
    opts, pos = _decode_opts(data, pos)
    if pos != len(data):
        return None
    if pos - start <= _OPTS_BYTES_MAX:
        _remember_opts(data[start:], opts)
    return (_CALL, call_id, name, args, kwargs, opts)


def _remember_opts(raw: bytes, opts: dict) -> None:
    """Cache ``opts`` by its bytes when nothing in it could be changed by whoever gets it."""
    empties = []
    for key, value in opts.items():
        kind = type(value)
        if kind is dict:
            if value:
                return
            empties.append(key)
        elif kind not in _IMMUTABLE:
            return
    if len(_opts_seen) >= _OPTS_MAX:
        _opts_seen.clear()
    _opts_seen[raw] = (tuple(opts.items()), tuple(empties))


def _decode_opts(data: bytes, pos: int) -> tuple[Any, int]:
    """The opts map: atom keys and small values read inline, the rest by the general decoders."""
    if data[pos] != MAP_EXT or data[pos + 1 : pos + 4] != b"\x00\x00\x00":  # < 256 pairs
        return DECODERS[data[pos]](data, pos, _DEPTH)
    arity = data[pos + 4]
    pos += 5
    opts = {}
    for _ in range(arity):
        tag = data[pos]
        key: Any = _MISSING
        if tag == ATOM_EXT and not data[pos + 1]:  # (latin-1)
            end = pos + 3 + data[pos + 2]
            key = latin1_atoms.get(data[pos + 3 : end], _MISSING)
        elif tag == SMALL_ATOM_UTF8_EXT:
            end = pos + 2 + data[pos + 1]
            key = utf8_atoms.get(data[pos + 2 : end], _MISSING)
        if key is _MISSING:
            key, pos = DECODERS[tag](data, pos, _DEPTH - 1)
        else:
            pos = end
        tag = data[pos]
        if tag == INTEGER_EXT:
            value: Any = _i32(data, pos + 1)[0]
            pos += 5
        elif tag == SMALL_INTEGER_EXT:
            value = data[pos + 1]
            pos += 2
        elif data[pos : pos + 5] == _EMPTY_MAP:
            value = {}
            pos += 5
        else:
            value, pos = DECODERS[tag](data, pos, _DEPTH - 1)
        opts[key] = value
    return opts, pos


def call_fields(frame: bytes) -> None:
    """The seven fields of a plain call envelope, which only the C accelerator reads.

    Returns None, always: in pure Python every frame takes the general road
    (``decode_message``, then the dispatcher's checks).
    """
    return None


_OK_HEAD = bytes((tags.VERSION, tags.SMALL_TUPLE_EXT, 3, tags.SMALL_ATOM_UTF8_EXT, 2)) + b"ok"


def encode_ok(call_id: int, result: Any) -> bytes:
    """Encode ``{:ok, call_id, result}``: ``encode((Atom("ok"), call_id, result))``, but cheaper.

    Every successful call ends with this frame, so its fixed head is written once.
    """
    out = bytearray(_OK_HEAD)
    if type(call_id) is int and 0 <= call_id < 256:
        out += SMALL_INTS[call_id]
    else:
        encode_into(call_id, out, None)
    if type(result) is int and 0 <= result < 256:
        out += SMALL_INTS[result]
    else:
        encode_into(result, out, None)
    return bytes(out)


def chunk_encoder(call_id: int) -> Callable[[int, Any], bytes]:
    """Return ``encode_chunk(seq, data)``: the bytes of ``{:chunk, call_id, seq, data}``.

    The part that never changes within a stream (tuple header, the atom, the
    id) is encoded once; a stream pays only for ``seq`` and ``data``.
    """
    prefix = bytes((tags.VERSION, tags.SMALL_TUPLE_EXT, 4)) + encode((Atom("chunk"), call_id))[3:]

    def encode_chunk(seq: int, data: Any) -> bytes:
        out = bytearray(prefix)
        if 0 <= seq < 256:
            out += SMALL_INTS[seq]
        else:
            out += encode_int(seq)
        encode_into(data, out, None)
        return bytes(out)

    return encode_chunk


_ID_ATOMS = (b"call", b"cancel", b"credit")  # the messages whose second element is a call id


def peek_call_id(frame: bytes) -> int | None:
    """Find the id of a ``{:call, id, ...}`` frame that did not decode as a whole.

    Also of ``{:cancel, id}`` and ``{:credit, id, n}``: whoever answers the bad
    frame can then name the call. None when the bytes do not show one.
    """
    try:
        if frame[0] != tags.VERSION:
            return None
        head = frame[1]
        pos = 3 if head == tags.SMALL_TUPLE_EXT else 6 if head == tags.LARGE_TUPLE_EXT else 0
        if not pos:
            return None
        tag = frame[pos]
        if tag == tags.SMALL_ATOM_UTF8_EXT or tag == tags.SMALL_ATOM_EXT:
            end = pos + 2 + frame[pos + 1]
            name = frame[pos + 2 : end]
        elif tag == tags.ATOM_UTF8_EXT or tag == tags.ATOM_EXT:
            end = pos + 3 + int.from_bytes(frame[pos + 1 : pos + 3], "big")
            name = frame[pos + 3 : end]
        else:
            return None
        if bytes(name) not in _ID_ATOMS:
            return None
        if frame[end] == tags.SMALL_INTEGER_EXT:
            return frame[end + 1]
        if frame[end] == tags.INTEGER_EXT and len(frame) >= end + 5:
            value = int.from_bytes(frame[end + 1 : end + 5], "big", signed=True)
            return value if value >= 0 else None
    except IndexError:
        return None
    return None
