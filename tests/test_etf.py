"""Tests for snakepit_py.codec.etf: golden vectors from the real BEAM, properties, hostile input."""

from __future__ import annotations

import enum
import json
import math
import struct
import sys
import threading
import time
import zlib
from array import array
from collections import OrderedDict, namedtuple
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snakepit_py.codec import etf
from snakepit_py.codec.etf import Atom, Fun, ImproperList, Opaque, Pid, Port, Reference
from snakepit_py.errors import DecodeError, EncodeError

VECTORS = json.loads((Path(__file__).parent / "vectors" / "etf_golden.json").read_text())
OPAQUE_KINDS = {"pid": Pid, "port": Port, "reference": Reference, "fun": Fun}


# --- helpers ---------------------------------------------------------------


class _OpaqueOf:
    """Stands for "some opaque value of this class" in an expected value."""

    def __init__(self, cls: type[Opaque]) -> None:
        self.cls = cls


def build(desc: Any) -> Any:
    """Turn a golden vector's value description (see gen_etf_vectors.exs) into the value."""
    if desc is None or isinstance(desc, bool):
        return desc
    ((kind, arg),) = desc.items()
    if kind == "int":
        return int(arg)
    if kind == "float":
        return struct.unpack(">d", bytes.fromhex(arg))[0]
    if kind == "atom":
        return Atom(bytes.fromhex(arg).decode())
    if kind == "str":
        return bytes.fromhex(arg).decode()
    if kind == "bytes":
        return bytes.fromhex(arg)
    if kind == "list":
        return [build(item) for item in arg]
    if kind == "improper":
        return ImproperList([build(item) for item in arg[0]], build(arg[1]))
    if kind == "tuple":
        return tuple(build(item) for item in arg)
    if kind == "map":
        return {build(k): build(v) for k, v in arg}
    if kind == "opaque":
        return _OpaqueOf(OPAQUE_KINDS[arg])
    raise AssertionError(f"unknown description {desc!r}")


def assert_same(actual: Any, expected: Any, path: str = "value") -> None:
    """Assert equality that also checks types (``==`` alone says 1 == 1.0 == True)."""
    if isinstance(expected, _OpaqueOf):
        assert type(actual) is expected.cls, f"{path}: {actual!r} is not a {expected.cls}"
        return
    assert type(actual) is type(expected), f"{path}: {actual!r} vs expected {expected!r}"
    if isinstance(expected, float):
        # Compare bits: tells 0.0 from -0.0.
        assert struct.pack(">d", actual) == struct.pack(">d", expected), path
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{path}[{i}]")
        if isinstance(expected, ImproperList):
            assert_same(actual.tail, expected.tail, f"{path}.tail")
    elif isinstance(expected, dict):
        assert len(actual) == len(expected), path
        actual_keys = {k: k for k in actual}
        for key, value in expected.items():
            assert key in actual, f"{path}: missing key {key!r}"
            assert_same(actual_keys[key], key, f"{path} key {key!r}")
            assert_same(actual[key], value, f"{path}[{key!r}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def vector(name: str) -> bytes:
    return bytes.fromhex(next(v["hex"] for v in VECTORS if v["name"] == name))


# --- golden vectors --------------------------------------------------------


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_golden_vector_decodes_to_expected_value(vec: dict[str, Any]) -> None:
    assert_same(etf.decode(bytes.fromhex(vec["hex"])), build(vec["value"]))


CANONICAL = [v for v in VECTORS if v["canonical"]]


@pytest.mark.parametrize("vec", CANONICAL, ids=[v["name"] for v in CANONICAL])
def test_golden_vector_reencodes_to_identical_bytes(vec: dict[str, Any]) -> None:
    # Given bytes written the way OTP 26 writes them,
    # when decoded and encoded again (with the same compression level),
    # then the bytes are identical: opaque values included.
    data = bytes.fromhex(vec["hex"])
    assert etf.encode(etf.decode(data), compressed=vec["compressed"]) == data


def test_canonical_vectors_cover_every_kind_of_value() -> None:
    names = {v["name"] for v in CANONICAL}
    for must in ("pid", "reference", "port", "fun_closure", "fun_export", "big_256_bytes"):
        assert must in names


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_golden_vector_round_trips(vec: dict[str, Any]) -> None:
    value = etf.decode(bytes.fromhex(vec["hex"]))
    assert_same(etf.decode(etf.encode(value)), value)


def test_opaque_values_reencode_to_their_exact_bytes() -> None:
    # Old tags (PID_EXT, PORT_EXT, ...) included: the bytes are kept as they came.
    bare = [v for v in VECTORS if isinstance(v["value"], dict) and "opaque" in v["value"]]
    assert len(bare) >= 12
    for vec in bare:
        data = bytes.fromhex(vec["hex"])
        assert etf.encode(etf.decode(data)) == data, vec["name"]


def test_envelope_from_otp25_decodes() -> None:
    value = etf.decode(vector("otp25_envelope"))
    assert_same(value, (Atom("call"), 1, "add", [1, 2], {}, {Atom("timeout_ms"): 5000}))


# --- encoding specifics ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, b"\x83w\x03nil"),
        (True, b"\x83w\x04true"),
        (False, b"\x83w\x05false"),
        (Atom("ok"), b"\x83w\x02ok"),
        (0, b"\x83a\x00"),
        (255, b"\x83a\xff"),
        (256, b"\x83b\x00\x00\x01\x00"),
        (-1, b"\x83b\xff\xff\xff\xff"),
        (2**31, b"\x83n\x04\x00\x00\x00\x00\x80"),
        (-(2**31) - 1, b"\x83n\x04\x01\x01\x00\x00\x80"),
        (1.5, b"\x83F?\xf8\x00\x00\x00\x00\x00\x00"),
        ("hi", b"\x83m\x00\x00\x00\x02hi"),
        (b"\xff", b"\x83m\x00\x00\x00\x01\xff"),
        ([], b"\x83j"),
        ([1, 2], b"\x83l\x00\x00\x00\x02a\x01a\x02j"),
        (ImproperList([1], 2), b"\x83l\x00\x00\x00\x01a\x01a\x02"),
        ((), b"\x83h\x00"),
        ({}, b"\x83t\x00\x00\x00\x00"),
    ],
)
def test_encode_writes_what_otp26_writes(value: Any, expected: bytes) -> None:
    assert etf.encode(value) == expected


def test_encode_bytes_like_objects_as_binaries() -> None:
    assert etf.decode(etf.encode(bytearray(b"\xff\x00"))) == b"\xff\x00"
    assert etf.decode(etf.encode(memoryview(b"\xff\x01"))) == b"\xff\x01"
    # A memoryview of 32-bit ints: the binary holds its bytes, not its items.
    ints = array("i", [1, 2])
    assert etf.encode(memoryview(ints)) == etf.encode(ints.tobytes())


def test_encode_subclasses_as_their_base_type() -> None:
    class Color(enum.IntEnum):
        RED = 1

    class Name(str):
        pass

    class MyAtom(Atom):
        pass

    point = namedtuple("point", "x y")
    value = [Color.RED, Name("n"), MyAtom("a"), point(1, 2), OrderedDict(a=1)]
    assert_same(etf.decode(etf.encode(value)), [1, "n", Atom("a"), (1, 2), {"a": 1}])


def test_encode_unknown_type_names_it() -> None:
    class Widget:
        pass

    with pytest.raises(EncodeError) as info:
        etf.encode({"w": [Widget()]})
    assert info.value.value_type == f"{__name__}.test_encode_unknown_type_names_it.<locals>.Widget"
    assert "Widget" in str(info.value)
    with pytest.raises(EncodeError) as info:
        etf.encode(1 + 2j)
    assert info.value.value_type == "complex"


def test_encode_default_hook_replaces_unknown_values() -> None:
    assert etf.decode(etf.encode([1.5j], default=str)) == ["1.5j"]
    # Types the codec maps (docs/types.md) never reach the hook.
    assert etf.decode(etf.encode([Decimal("1.5")], default=str)) == [Decimal("1.5")]
    # A hook that never converts is stopped by the depth limit, not by a crash.
    with pytest.raises(EncodeError):
        etf.encode(object(), default=lambda obj: obj)


@pytest.mark.parametrize(
    ("value", "atom"), [(math.nan, "nan"), (math.inf, "infinity"), (-math.inf, "neg_infinity")]
)
def test_floats_the_beam_lacks_are_nx_atoms(value: float, atom: str) -> None:
    assert etf.decode(etf.encode([value])) == [Atom(atom)]
    assert type(etf.decode(etf.encode(value))) is Atom


def test_encode_refuses_invalid_unicode_and_long_atoms() -> None:
    with pytest.raises(EncodeError):
        etf.encode("\ud800")
    with pytest.raises(EncodeError, match="255"):
        etf.encode(Atom("a" * 256))
    assert etf.decode(etf.encode(Atom("é" * 255))) == Atom("é" * 255)


def test_encode_refuses_deep_and_cyclic_values() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(EncodeError, match="deep"):
        etf.encode(deep)
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    with pytest.raises(EncodeError):
        etf.encode(cyclic)
    looped: dict[str, Any] = {}
    looped["self"] = looped
    with pytest.raises(EncodeError):
        etf.encode(looped)


def test_encode_compressed() -> None:
    value = ["abc"] * 100
    packed = etf.encode(value, compressed=6)
    assert packed[:2] == b"\x83P"
    assert etf.decode(packed) == value
    # Compression that does not pay is skipped, as term_to_binary does.
    assert etf.encode((1, 2), compressed=9) == etf.encode((1, 2))
    assert etf.encode(value, compressed=0) == etf.encode(value)
    with pytest.raises(ValueError):
        etf.encode(value, compressed=10)


def test_improper_list_edge_cases() -> None:
    # An ImproperList with no items is just its tail.
    assert etf.encode(ImproperList([], Atom("t"))) == etf.encode(Atom("t"))
    # A hand-written list whose tail is another list is a proper (or flattened) list.
    nested_tail = b"\x83l\x00\x00\x00\x01a\x01l\x00\x00\x00\x01a\x02a\x03"
    assert_same(etf.decode(nested_tail), ImproperList([1, 2], 3))
    string_tail = b"\x83l\x00\x00\x00\x01a\x01k\x00\x02\x02\x03"
    assert_same(etf.decode(string_tail), [1, 2, 3])


# --- opaque values ---------------------------------------------------------


def test_opaque_values_compare_and_hash_by_bytes() -> None:
    pid = etf.decode(vector("pid"))
    same = etf.decode(vector("pid"))
    other = etf.decode(vector("pid_ext"))
    assert pid == same and hash(pid) == hash(same)
    assert pid != other
    assert {pid: 1}[same] == 1
    assert sorted([pid, other]) in ([pid, other], [other, pid])
    assert pid == Pid(pid.raw)
    assert Reference(pid.raw[:0] + etf.decode(vector("reference")).raw) != pid
    assert "Pid(" in repr(pid)


def test_opaque_constructor_checks_the_tag() -> None:
    with pytest.raises(ValueError):
        Pid(b"a\x01")
    with pytest.raises(ValueError):
        Fun(b"")


def test_opaque_as_map_key_round_trips() -> None:
    ref = etf.decode(vector("reference"))
    data = etf.encode({ref: "r"})
    assert etf.decode(data) == {ref: "r"}


# --- property tests --------------------------------------------------------

_atoms = st.text(max_size=20).filter(lambda s: s not in ("true", "false", "nil")).map(Atom)
_not_utf8 = st.binary(max_size=20).map(lambda b: b + b"\xff")
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**3000), max_value=2**3000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    _not_utf8,
    _atoms,
)
_keys = st.recursive(
    st.one_of(st.integers(), st.text(max_size=10), _atoms, _not_utf8, st.booleans()),
    lambda children: st.lists(children, max_size=3).map(tuple),
    max_leaves=5,
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=6),
        st.lists(children, max_size=6).map(tuple),
        st.dictionaries(_keys, children, max_size=6),
        st.builds(ImproperList, st.lists(children, min_size=1, max_size=4), _leaves),
    )


terms = st.recursive(_leaves, _containers, max_leaves=40)


@settings(max_examples=400, deadline=None)
@given(terms)
def test_round_trip_property(value: Any) -> None:
    assert_same(etf.decode(etf.encode(value)), value)


@settings(max_examples=100, deadline=None)
@given(terms, st.integers(min_value=1, max_value=9))
def test_compressed_round_trip_property(value: Any, level: int) -> None:
    assert_same(etf.decode(etf.encode(value, compressed=level)), value)


# --- hostile input ---------------------------------------------------------


def _decode_or_decode_error(data: bytes) -> None:
    try:
        etf.decode(data)
    except DecodeError:
        pass


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_raises_only_decode_error(data: bytes) -> None:
    _decode_or_decode_error(data)
    _decode_or_decode_error(b"\x83" + data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(terms, st.data())
def test_mutated_encodings_raise_only_decode_error(value: Any, data: st.DataObject) -> None:
    encoded = bytearray(etf.encode(value))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        index = data.draw(st.integers(min_value=1, max_value=len(encoded) - 1))
        encoded[index] = data.draw(st.integers(min_value=0, max_value=255))
    _decode_or_decode_error(bytes(encoded))


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_every_truncation_is_refused(vec: dict[str, Any]) -> None:
    data = bytes.fromhex(vec["hex"])
    for end in range(len(data)):
        with pytest.raises(DecodeError):
            etf.decode(data[:end])


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(DecodeError, match="trailing"):
        etf.decode(b"\x83a\x01\x00")


@pytest.mark.parametrize(
    "data",
    [b"", b"\x83", b"\x84a\x01", b"a\x01", b"\x83R\x00", b"\x83y\x00", b"\x83u\x00", b"\x83\x00"],
    ids=["empty", "version_only", "bad_version", "no_version", "cache_ref", "local", "fun", "x"],
)
def test_malformed_or_refused_tags(data: bytes) -> None:
    with pytest.raises(DecodeError):
        etf.decode(data)


def test_bitstring_refused_with_clear_message() -> None:
    # <<1::3>> as term_to_binary writes it.
    with pytest.raises(DecodeError, match="bitstrings are not supported"):
        etf.decode(b"\x83M\x00\x00\x00\x01\x03\x20")


@pytest.mark.parametrize(
    "header",
    [
        b"l\xff\xff\xff\xff",  # LIST_EXT
        b"m\xff\xff\xff\xff",  # BINARY_EXT
        b"t\xff\xff\xff\xff",  # MAP_EXT
        b"i\xff\xff\xff\xff",  # LARGE_TUPLE_EXT
        b"o\xff\xff\xff\xff\x00",  # LARGE_BIG_EXT
        b"k\xff\xff",  # STRING_EXT
        b"v\xff\xff",  # ATOM_UTF8_EXT
        b"p\xff\xff\xff\xff",  # NEW_FUN_EXT
        b"Z\xff\xff",  # NEWER_REFERENCE_EXT
    ],
)
def test_huge_length_headers_are_refused_at_once(header: bytes) -> None:
    start = time.perf_counter()
    with pytest.raises(DecodeError):
        etf.decode(b"\x83" + header + b"a\x01j")
    assert time.perf_counter() - start < 0.05


@pytest.mark.parametrize(
    ("open_tag", "close"),
    [(b"l\x00\x00\x00\x01", b"j"), (b"h\x01", b""), (b"t\x00\x00\x00\x01a\x01", b"")],
    ids=["list", "tuple", "map"],
)
def test_deep_nesting_is_refused(open_tag: bytes, close: bytes) -> None:
    # Given [[[...]]] 100 000 deep (exactly what term_to_binary writes for it),
    # then decoding refuses it: no RecursionError, no crash.
    data = b"\x83" + open_tag * 100_000 + b"j" + close * 100_000
    with pytest.raises(DecodeError, match="deep"):
        etf.decode(data)


def test_nesting_within_the_limit_decodes_even_deep_in_a_thread() -> None:
    # Given a caller that has already used much of the stack, in a thread,
    # decoding a term at the depth limit either works or raises DecodeError.
    limit = etf.DEFAULT_MAX_DEPTH
    data = b"\x83" + b"l\x00\x00\x00\x01" * limit + b"j" * (limit + 1)
    outcome: list[Any] = []

    def nest(levels: int) -> None:
        if levels:
            nest(levels - 1)
            return
        try:
            outcome.append(etf.decode(data))
        except DecodeError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=nest, args=(sys.getrecursionlimit() - 200,))
    thread.start()
    thread.join()
    assert len(outcome) == 1
    assert isinstance(outcome[0], (list, DecodeError))
    depth = 0
    value = etf.decode(data)
    while value:
        (value,) = value
        depth += 1
    assert depth == etf.DEFAULT_MAX_DEPTH
    with pytest.raises(DecodeError):
        etf.decode(data, max_depth=etf.DEFAULT_MAX_DEPTH - 1)


def test_max_size_is_enforced() -> None:
    data = etf.encode("x" * 1000)
    with pytest.raises(DecodeError, match="limit"):
        etf.decode(data, max_size=100)


def test_compressed_header_declaring_1_gib_is_refused_without_inflating() -> None:
    data = b"\x83P" + struct.pack(">I", 2**30) + zlib.compress(b"\x00" * 1000)
    start = time.perf_counter()
    with pytest.raises(DecodeError, match="inflates to"):
        etf.decode(data)
    assert time.perf_counter() - start < 0.05


@pytest.fixture(scope="module")
def zeros_200_mib_zlib() -> bytes:
    compressor = zlib.compressobj(9)
    chunk = bytes(2**20)
    parts = [compressor.compress(chunk) for _ in range(200)]
    return b"".join(parts) + compressor.flush()


def test_compression_bomb_is_refused(zeros_200_mib_zlib: bytes) -> None:
    # Given 200 MiB of zeros, compressed, with the true size in the header:
    # refused from the header alone.
    honest = b"\x83P" + struct.pack(">I", 200 * 2**20) + zeros_200_mib_zlib
    start = time.perf_counter()
    with pytest.raises(DecodeError):
        etf.decode(honest)
    # Given the same stream with a header that lies (1 KiB): inflating stops
    # at 1 KiB + 1 byte and the term is refused.
    lying = b"\x83P" + struct.pack(">I", 1024) + zeros_200_mib_zlib
    with pytest.raises(DecodeError, match="declared size"):
        etf.decode(lying)
    assert time.perf_counter() - start < 1.0


def test_compressed_size_mismatch_and_trailing_data_are_refused() -> None:
    body = etf.encode(["abc"] * 10)[1:]
    packed = zlib.compress(body)
    with pytest.raises(DecodeError):
        etf.decode(b"\x83P" + struct.pack(">I", len(body) + 1) + packed)
    with pytest.raises(DecodeError):
        etf.decode(b"\x83P" + struct.pack(">I", len(body)) + packed + b"\x00")
    with pytest.raises(DecodeError):
        etf.decode(b"\x83P" + struct.pack(">I", len(body)) + b"not zlib at all")
    with pytest.raises(DecodeError, match="top"):
        etf.decode(b"\x83h\x01P" + struct.pack(">I", len(body)) + packed)


def test_unhashable_map_key_is_a_decode_error() -> None:
    # %{[1] => 2}
    with pytest.raises(DecodeError):
        etf.decode(b"\x83t\x00\x00\x00\x01l\x00\x00\x00\x01a\x01ja\x02")


def test_bad_atoms_are_refused() -> None:
    with pytest.raises(DecodeError, match="UTF-8"):
        etf.decode(b"\x83w\x01\xff")
    with pytest.raises(DecodeError, match="255"):
        etf.decode(b"\x83d\x01\x00" + b"a" * 256)  # ATOM_EXT (latin-1): one byte a character
    long_name = b"a" * 256
    with pytest.raises(DecodeError, match="255"):
        etf.decode(b"\x83v\x01\x00" + long_name)


def test_decode_accepts_bytes_like_and_refuses_str() -> None:
    data = etf.encode((Atom("ok"), 1))
    assert etf.decode(bytearray(data)) == (Atom("ok"), 1)
    assert etf.decode(memoryview(data)) == (Atom("ok"), 1)
    with pytest.raises(TypeError):
        etf.decode(data.decode("latin-1"))  # type: ignore[arg-type]


def test_atom_cache_stays_bounded() -> None:
    for i in range(10_000):
        etf.decode(etf.encode(Atom(f"atom_{i}")))
    assert len(etf._utf8_atoms) <= etf._ATOM_CACHE_MAX
    assert len(etf._atom_bytes) <= etf._ATOM_CACHE_MAX
    assert etf.decode(etf.encode(True)) is True


def test_public_surface() -> None:
    assert etf.name == "etf"
    assert set(etf.__all__) >= {"encode", "decode", "Atom", "ImproperList", "Pid", "Fun"}
    for public in etf.__all__:
        assert hasattr(etf, public)


def test_big_binaries_keep_their_type_whatever_their_first_bytes():
    # The prefix check must not turn valid UTF-8 into bytes, nor the reverse.
    text = ("é" * 3000 + "x" * 5000).encode()  # multi-byte characters across the 256-byte cut
    assert etf.decode(etf.encode(text)) == text.decode()
    late_error = b"a" * 10000 + b"\xff"
    assert etf.decode(etf.encode(late_error)) == late_error
    early_error = b"\xff" + b"a" * 10000
    assert etf.decode(etf.encode(early_error)) == early_error


@pytest.mark.parametrize("call_id", [0, 1, 255, 256, 2**31, 2**70])
@pytest.mark.parametrize("seq", [0, 1, 255, 256, 70_000, 2**40])
def test_chunk_encoder_matches_encode(call_id, seq):
    for data in (b"x" * 16, {"epoch": 1, "loss": 0.5}, None, [1, (2, "three")]):
        expected = etf.encode((etf.Atom("chunk"), call_id, seq, data))
        assert etf.chunk_encoder(call_id)(seq, data) == expected


def test_chunk_encoder_refuses_what_encode_refuses():
    with pytest.raises(EncodeError):
        etf.chunk_encoder(1)(0, object())


# --- pids, ports and references the BEAM would refuse (found by tests/test_fuzz_beam.py) ----

_NODE = b"\x77\x0dnonode@nohost"


def _opaque(tag: int, fields: bytes, node: bytes = _NODE) -> bytes:
    return bytes([131, tag]) + node + fields


@pytest.mark.parametrize(
    "frame",
    [
        _opaque(88, struct.pack(">III", 0x60, 0x00800000, 0)),  # NEW_PID serial > 13 bits
        _opaque(88, struct.pack(">III", 0x8000, 0, 0)),  # NEW_PID id > 15 bits
        _opaque(103, struct.pack(">IIB", 0, 0, 4)),  # PID_EXT creation > 2 bits
        _opaque(89, struct.pack(">II", 0xFFFFFFFF, 0)),  # NEW_PORT id > 28 bits
        _opaque(120, struct.pack(">QI", 1 << 28, 0)),  # V4_PORT id > 28 bits
        _opaque(101, struct.pack(">IB", 1 << 18, 0)),  # REFERENCE_EXT id > 18 bits
        bytes([131, 90, 0, 3]) + _NODE + struct.pack(">IIII", 0, 0x002066EA, 0, 0),  # word 0
        bytes([131, 90, 0, 4]) + _NODE + struct.pack(">IIIII", 0, 0, 0, 0, 0),  # 4 words
        bytes([131, 90, 0, 0]) + _NODE + struct.pack(">I", 0),  # no words
        bytes([131, 114, 0, 1]) + _NODE + struct.pack(">BI", 4, 0),  # creation > 2 bits
        _opaque(89, struct.pack(">II", 5, 0), node=b"\x77\x0dnonode@noh\xefst"),  # not UTF-8
    ],
)
def test_opaque_values_the_beam_would_refuse_are_refused(frame: bytes) -> None:
    # An opaque value is only ever echoed back: one the BEAM cannot decode must not get in.
    with pytest.raises(DecodeError):
        etf.decode(frame)


@pytest.mark.parametrize(
    "frame",
    [
        _opaque(88, struct.pack(">III", 0x7FFF, 0x1FFF, 0xFFFFFFFF)),
        _opaque(103, struct.pack(">IIB", 0x7FFF, 0x1FFF, 3)),
        _opaque(89, struct.pack(">II", 0x0FFFFFFF, 0xFFFFFFFF)),
        _opaque(120, struct.pack(">QI", 0x0FFFFFFF, 7)),
        _opaque(101, struct.pack(">IB", 0x3FFFF, 3)),
        bytes([131, 90, 0, 3]) + _NODE + struct.pack(">IIII", 1, 0x3FFFF, 0xFFFFFFFF, 9),
        bytes([131, 114, 0, 1]) + b"\x64\x00\x01a" + struct.pack(">BI", 3, 0x3FFFF),
    ],
)
def test_opaque_values_at_the_edges_of_the_ranges_round_trip(frame: bytes) -> None:
    value = etf.decode(frame)
    assert isinstance(value, Pid | Port | Reference)
    assert etf.encode(value) == frame


def test_term_types_compare_hash_and_show_themselves() -> None:
    # ImproperList: equal only to an improper list with the same items and tail
    a, b = ImproperList([1, 2], tail=3), ImproperList([1, 2], tail=4)
    assert a == ImproperList([1, 2], tail=3) and a != b and not (a != ImproperList([1, 2], 3))
    assert a.__eq__([1, 2]) is NotImplemented
    assert a.__ne__([1, 2]) is NotImplemented
    assert repr(a) == "ImproperList([1, 2], tail=3)"
    # Opaque terms: equal by type and bytes, ordered, hashable, shown with their bytes
    node = b"\x77\x0dnonode@nohost"
    pid = Pid(bytes([88]) + node + bytes(12))
    port = Port(bytes([89]) + node + bytes(8))
    assert pid == Pid(pid.raw) and pid != port and not (pid != Pid(pid.raw))
    assert pid.__ne__(1) is NotImplemented and pid.__lt__(1) is NotImplemented
    assert sorted([port, pid]) == [pid, port]  # by type name, then bytes
    assert len({pid, Pid(pid.raw), port}) == 2
    assert repr(pid).startswith("Pid(b'X")
    with pytest.raises(ValueError, match="needs the bytes of its term"):
        Pid(b"\x00nothing")
