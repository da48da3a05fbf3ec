"""Erlang External Term Format (what ``term_to_binary/1,2`` produces): the ``etf`` codec.

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

This module is the face of the codec, and the one place that chooses between
the C accelerator and pure Python. The parts behind it, one job each:
``_etf_tags`` (the tag table), ``_etf_atoms``, ``_etf_opaque``, ``_etf_decode``,
``_etf_encode``, and ``_etf_message`` (the runtime's hooks, see
:mod:`snakepit_py.codec`).
"""

from __future__ import annotations

from ._etf_atoms import ATOM_CACHE_MAX as _ATOM_CACHE_MAX  # noqa: F401 - (read by tests)
from ._etf_atoms import atom_bytes as _atom_bytes  # noqa: F401 - (read by tests)
from ._etf_atoms import latin1_atoms as _latin1_atoms
from ._etf_atoms import utf8_atoms as _utf8_atoms
from ._etf_decode import decode
from ._etf_encode import encode
from ._etf_message import call_fields, decode_message, encode_ok
from ._etf_message import chunk_encoder as chunk_encoder  # (a hook, not an export)
from ._etf_message import peek_call_id as peek_call_id  # (a hook, not an export)
from ._limits import DEFAULT_MAX_DEPTH, DEFAULT_MAX_SIZE
from ._terms import Atom, Fun, ImproperList, Opaque, Pid, Port, Reference

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from typing import Any


__all__ = [
    # codec
    "name",
    "encode",
    "decode",
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
# Not exported, but attributes of this module for the runtime: the hooks of the
# Codec protocol (snakepit_py.codec), decode_message, call_fields, encode_ok,
# chunk_encoder and peek_call_id; and the C shortcuts for a beam call's two
# frames, beam_call_frame and beam_reply_fields (snakepit_py._beam), None
# without the accelerator: they answer None for what they leave to Python.

name = "etf"

# The pure-Python hooks, kept under these names whichever is in use: the C
# shortcuts hand them whatever they leave, and the tests hold both to one answer.
_python_decode_message = decode_message
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
beam_call_frame: Any = None
beam_reply_fields: Any = None
if _accelerator is not None:
    # The same answers (a property test holds both to it), in C for the common terms.
    decode_message = _accelerator.decode_message
    call_fields = _accelerator.call_fields
    encode_ok = _accelerator.encode_ok
    beam_call_frame = _accelerator.beam_call_frame
    beam_reply_fields = _accelerator.beam_reply_fields
