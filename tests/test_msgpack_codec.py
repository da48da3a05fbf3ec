"""Tests for snakepit_py.codec.msgpack: the protocol's msgpack mapping, round trips, bad input."""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("msgpack")

import msgpack  # noqa: E402

from snakepit_py.codec import etf  # noqa: E402
from snakepit_py.codec import msgpack as codec  # noqa: E402
from snakepit_py.codec.etf import Atom, ImproperList  # noqa: E402
from snakepit_py.errors import DecodeError, EncodeError  # noqa: E402


def assert_same(actual: Any, expected: Any) -> None:
    """Assert equality that also checks types, recursively."""
    assert type(actual) is type(expected), f"{actual!r} vs {expected!r}"
    if isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_same(a, e)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        for (ka, va), (ke, ve) in zip(actual.items(), expected.items(), strict=True):
            assert_same(ka, ke)
            assert_same(va, ve)
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(actual)
    else:
        assert actual == expected


# --- the mapping -----------------------------------------------------------


def test_mapping_matches_the_protocol() -> None:
    # str <-> str, bytes <-> bin, atom <-> ext 1, tuple <-> ext 2 (an array).
    assert codec.encode("hi") == b"\xa2hi"
    assert codec.encode(b"hi") == b"\xc4\x02hi"
    assert codec.encode(Atom("ok")) == msgpack.packb(msgpack.ExtType(1, b"ok"))
    assert codec.encode((1, "a")) == msgpack.packb(msgpack.ExtType(2, msgpack.packb([1, "a"])))
    assert codec.encode([None, True, 1.5, {"k": -1}]) == msgpack.packb([None, True, 1.5, {"k": -1}])


def test_decode_what_any_msgpack_writer_sends() -> None:
    data = msgpack.packb(
        [msgpack.ExtType(1, b"error"), msgpack.ExtType(2, msgpack.packb([1, 2])), b"\x00", {1: 2}]
    )
    assert_same(codec.decode(data), [Atom("error"), (1, 2), b"\x00", {1: 2}])


def test_special_atoms_decode_as_in_etf() -> None:
    for name, value in (("true", True), ("false", False), ("nil", None)):
        assert codec.decode(msgpack.packb(msgpack.ExtType(1, name.encode()))) is value


def test_subclasses_encode_as_their_base_type() -> None:
    class Level(enum.IntEnum):
        HIGH = 3

    class MyAtom(Atom):
        pass

    value = [Level.HIGH, OrderedDict(a=1), MyAtom("x"), bytearray(b"\xff")]
    assert_same(codec.decode(codec.encode(value)), [3, {"a": 1}, Atom("x"), b"\xff"])


@pytest.mark.parametrize(
    "value",
    [
        ImproperList([1], 2),
        [etf.decode(b"\x83Xw\x01a\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00")],
    ],
    ids=["improper_list", "pid"],
)
def test_values_only_etf_can_carry_are_refused(value: Any) -> None:
    with pytest.raises(EncodeError):
        codec.encode(value)


def test_unknown_type_is_named_and_default_hook_is_used() -> None:
    with pytest.raises(EncodeError) as info:
        codec.encode({"x": 1j})
    assert info.value.value_type == "complex"
    assert codec.decode(codec.encode([2.5j], default=str)) == ["2.5j"]
    assert_same(codec.decode(codec.encode(1j, default=lambda d: (int(d.imag),))), (1,))
    with pytest.raises(EncodeError):
        codec.encode(object(), default=lambda obj: obj)


def test_encode_refuses_out_of_range_ints_and_deep_values() -> None:
    with pytest.raises(EncodeError):
        codec.encode(2**64)
    deep: Any = []
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(EncodeError):
        codec.encode(deep)
    deep_tuple: Any = ()
    for _ in range(10_000):
        deep_tuple = (deep_tuple,)
    with pytest.raises(EncodeError):
        codec.encode(deep_tuple)


def test_compressed_option_is_accepted_and_ignored() -> None:
    assert codec.encode([1], compressed=6) == codec.encode([1])
    assert codec.name == "msgpack"


# --- round trips -----------------------------------------------------------

_atoms = st.text(max_size=10).filter(lambda s: s not in ("true", "false", "nil")).map(Atom)
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(),
    st.text(),
    st.binary(),
    _atoms,
)
_keys = st.one_of(st.integers(min_value=-(2**63), max_value=2**63), st.text(), st.binary(), _atoms)
terms = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(_keys, children, max_size=5),
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(terms)
def test_round_trip_property(value: Any) -> None:
    assert_same(codec.decode(codec.encode(value)), value)


# --- hostile input ---------------------------------------------------------


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_raises_only_decode_error(data: bytes) -> None:
    try:
        codec.decode(data)
    except DecodeError:
        pass


def test_truncations_are_refused() -> None:
    data = codec.encode({"a": (Atom("ok"), [1, 2.5, b"x" * 40])})
    for end in range(len(data)):
        with pytest.raises(DecodeError):
            codec.decode(data[:end])


@pytest.mark.parametrize(
    "data",
    [
        b"\x91" * 100_000 + b"\xc0",  # arrays 100 000 deep
        msgpack.packb(msgpack.ExtType(1, b"\xff")),  # atom name not UTF-8
        msgpack.packb(msgpack.ExtType(2, msgpack.packb(1))),  # tuple payload not an array
        msgpack.packb(msgpack.ExtType(9, b"")),  # unknown ext type
        b"\x81\x91\x01\x02",  # {[1] => 2}: unhashable key
        b"\xc0\xc0",  # trailing bytes
        b"\xdd\xff\xff\xff\xff",  # array32 claiming 4 G elements
        b"\xc6\xff\xff\xff\xff",  # bin32 claiming 4 GiB
    ],
    ids=["deep", "atom_utf8", "tuple_payload", "ext_type", "unhashable", "trailing", "arr", "bin"],
)
def test_bad_payloads_are_decode_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode(data)


def test_deeply_nested_tuples_are_refused() -> None:
    data = msgpack.packb(None)
    for _ in range(2000):
        data = msgpack.packb(msgpack.ExtType(2, b"\x91" + data))
    with pytest.raises(DecodeError):
        codec.decode(data)
    with pytest.raises(DecodeError, match="deep"):
        codec.decode(codec.encode((((1,),),)), max_depth=2)


def test_max_size_is_enforced() -> None:
    with pytest.raises(DecodeError, match="limit"):
        codec.decode(codec.encode("x" * 100), max_size=50)


def test_every_codec_has_every_hook_the_runtime_uses() -> None:
    for module in (etf, codec):
        for hook in ("decode_message", "call_fields", "encode_ok", "chunk_encoder", "peek_call_id"):
            assert callable(getattr(module, hook)), (module.name, hook)


def test_msgpack_hooks_take_the_general_road() -> None:
    call = (Atom("call"), 7, "add", [1, 2], {}, {Atom("timeout_ms"): 5000})
    frame = codec.encode(call)
    assert_same(codec.decode_message(frame), codec.decode(frame))
    assert codec.call_fields(frame) is None
    assert codec.peek_call_id(frame) is None
    assert codec.encode_ok(7, {"x": 1.5}) == codec.encode((Atom("ok"), 7, {"x": 1.5}))
    assert codec.chunk_encoder(7)(3, b"data") == codec.encode((Atom("chunk"), 7, 3, b"data"))
    with pytest.raises(EncodeError):
        codec.encode_ok(7, object())
