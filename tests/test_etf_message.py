"""The fast paths: `decode_message` must be `decode`, `encode_ok` must be `encode`.

Both exist twice: in C (``codec._cetf``, what ``etf`` uses when it is built)
and in pure Python (what it falls back to); every test here runs on both.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_etf import assert_same, terms, vector

from snakepit_py.codec import _etf_message, etf
from snakepit_py.codec.etf import Atom
from snakepit_py.errors import DecodeError, EncodeError


def _atom(name: str, otp25: bool) -> bytes:
    raw = name.encode()
    if otp25 and name.isascii():  # OTP 25 writes latin-1 atoms as ATOM_EXT
        return b"d" + len(raw).to_bytes(2, "big") + raw
    return etf.encode(Atom(name))[1:]


def envelope(call_id: Any, method: Any, args: Any, kwargs: Any, opts: dict[str, Any],
             otp25: bool) -> bytes:  # fmt: skip
    """``term_to_binary({:call, ...})`` as OTP 25 or OTP 26 writes it (atoms and all)."""
    body = b"h\x06" + _atom("call", otp25)
    for value in (call_id, method, args, kwargs):
        body += etf.encode(value)[1:]
    body += b"t" + len(opts).to_bytes(4, "big")
    for key, value in opts.items():
        body += _atom(key, otp25) + etf.encode(value)[1:]
    return b"\x83" + body


def _c(name: str) -> Any:
    accelerator = etf._accelerator
    assert accelerator is not None, (
        "the C accelerator snakepit_py.codec._cetf is not built (pip install -e . needs a C "
        "compiler and the Python headers) or SNAKEPIT_PY_PURE is set"
    )
    return getattr(accelerator, name)


# (a lambda, so that a missing accelerator fails its tests instead of the collection)
DECODERS = pytest.mark.parametrize(
    "decode_message",
    [lambda data: _c("decode_message")(data), _etf_message.decode_message],
    ids=["c", "python"],
)
ENCODERS = pytest.mark.parametrize(
    "encode_ok",
    [lambda call_id, result: _c("encode_ok")(call_id, result), etf._python_encode_ok],
    ids=["c", "python"],
)


def same_outcome(decode_message: Any, data: bytes) -> None:
    """decode_message(data) returns what decode(data) returns, or raises the same error."""
    try:
        expected = etf.decode(data)
    except DecodeError as exc:
        with pytest.raises(DecodeError) as info:
            decode_message(data)
        assert str(info.value) == str(exc)
        return
    assert_same(decode_message(data), expected)


_ids = st.one_of(st.integers(0, 255), st.integers(-(2**31), 2**31 - 1), st.integers(2**31, 2**70))
_methods = st.one_of(st.text(max_size=30), st.binary(max_size=10).map(lambda b: b + b"\xff"))
_opt_values = st.one_of(st.integers(-(2**40), 2**40), st.just({}), terms)
_opts = st.dictionaries(
    st.sampled_from(["timeout_ms", "meta", "credit", "x", "nil", "true", "ünï"]), _opt_values,
    max_size=4,
)  # fmt: skip
envelopes = st.builds(
    envelope, _ids, _methods, st.lists(terms, max_size=4), st.dictionaries(st.text(max_size=5),
    terms, max_size=3), _opts, st.booleans(),
)  # fmt: skip


@DECODERS
def test_harness_envelopes_decode_on_the_fast_path(decode_message: Any) -> None:
    # Given the bytes Snakepit.Worker sends on OTP 25 (atoms as ATOM_EXT, [1] as STRING_EXT)
    data = bytes.fromhex(
        "83680664000463616c6c61076d000000046563686f6b000101740000000074000000026400046d6574"
        "61740000000064000a74696d656f75745f6d736200001388"
    )
    # Then the fast path gives the general decoder's value
    expected = (Atom("call"), 7, "echo", [1], {}, {Atom("meta"): {}, Atom("timeout_ms"): 5000})
    assert_same(decode_message(data), expected)
    assert_same(decode_message(vector("otp25_envelope")), etf.decode(vector("otp25_envelope")))


@DECODERS
def test_non_call_frames_and_other_types_take_the_general_road(decode_message: Any) -> None:
    for term in [(Atom("health"), 3), (Atom("cancel"), 1), [1, 2], "call"]:
        assert_same(decode_message(etf.encode(term)), term)
    data = envelope(1, "m", [b"x" * 5000], {}, {}, otp25=True)
    assert_same(decode_message(bytearray(data)), etf.decode(data))
    with pytest.raises(DecodeError):
        decode_message(b"")


@DECODERS
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes)
def test_fast_path_equals_decode_property(decode_message: Any, data: bytes) -> None:
    same_outcome(decode_message, data)


@DECODERS
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes, st.data())
def test_damaged_envelopes_fail_exactly_as_decode_does(
    decode_message: Any, data: bytes, draw: st.DataObject
) -> None:
    # Given an envelope cut short, or with one byte changed, or with bytes added
    how = draw.draw(st.sampled_from(["cut", "flip", "extend"]))
    if how == "cut":
        damaged = data[: draw.draw(st.integers(0, len(data) - 1))]
    elif how == "flip":
        pos = draw.draw(st.integers(1, len(data) - 1))
        damaged = data[:pos] + bytes([draw.draw(st.integers(0, 255))]) + data[pos + 1 :]
    else:
        damaged = data + draw.draw(st.binary(min_size=1, max_size=4))
    # Then the fast path decodes it, or refuses it, exactly as decode does
    same_outcome(decode_message, damaged)


@DECODERS
def test_deep_args_hit_the_same_depth_limit(decode_message: Any) -> None:
    deep: Any = []
    for _ in range(etf.DEFAULT_MAX_DEPTH - 2):
        deep = [deep]
    same_outcome(decode_message, envelope(1, "m", deep, {}, {}, otp25=True))
    same_outcome(decode_message, envelope(1, "m", [deep], {}, {}, otp25=True))
    same_outcome(decode_message, envelope(1, "m", [], {}, {"meta": {"k": deep}}, otp25=False))


@DECODERS
def test_repeated_opts_come_back_as_new_objects_every_time(decode_message: Any) -> None:
    # Given the same envelope decoded twice (the second time from the opts cache)
    data = envelope(1, "m", [], {}, {"meta": {}, "timeout_ms": 5000}, otp25=True)
    first = decode_message(data)
    first[5][Atom("meta")]["changed"] = True
    first[5][Atom("extra")] = 1
    # Then changing what the first decode returned changes nothing in the second
    second = decode_message(data)
    assert_same(second, etf.decode(data))
    assert second[5] is not first[5]
    # And opts holding a non-empty map are decoded afresh each time
    data = envelope(2, "m", [], {}, {"meta": {"k": [1]}}, otp25=False)
    first = decode_message(data)
    first[5][Atom("meta")]["k"].append(2)
    assert_same(decode_message(data), etf.decode(data))


@ENCODERS
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ids, terms)
def test_encode_ok_is_encode_of_the_ok_tuple(encode_ok: Any, call_id: int, result: Any) -> None:
    assert encode_ok(call_id, result) == etf.encode((Atom("ok"), call_id, result))


@ENCODERS
def test_encode_ok_refuses_what_encode_refuses(encode_ok: Any) -> None:
    with pytest.raises(EncodeError):
        encode_ok(1, object())
    with pytest.raises(EncodeError):
        encode_ok(1, 1j)


@DECODERS
def test_big_opts_are_not_cached(decode_message: Any) -> None:
    from snakepit_py.codec import _etf_message

    _etf_message._opts_seen.clear()
    data = envelope(1, "m", [], {}, {"blob": b"x" * 10_000}, otp25=True)
    assert_same(decode_message(data), etf.decode(data))
    assert_same(decode_message(data), etf.decode(data))
    assert not _etf_message._opts_seen


@DECODERS
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([b"\x83h\x06d\x00\x04call", b"\x83h\x06w\x04call"]), st.binary(max_size=64))
def test_any_bytes_after_a_call_head_fail_exactly_as_decode_does(
    decode_message: Any, head: bytes, rest: bytes
) -> None:
    same_outcome(decode_message, head + rest)


@ENCODERS
def test_encode_ok_on_what_the_shortcut_leaves_to_python(encode_ok: Any) -> None:
    import enum

    class Colour(enum.IntEnum):
        RED = 300

    deep: Any = [1]
    for _ in range(100):  # deeper than the C walk goes
        deep = [deep, {"k": (deep,)}] if len(str(deep)) < 2000 else [deep]
    for result in [
        deep,
        {Colour.RED: Colour.RED, Atom("a" * 200): "é" * 300},
        [2**63, -(2**63), 2**64, -(2**200), 2**31, -(2**31) - 1],
        (1,) * 300,
        "x" * 70_000,
        bytearray(b"ab"),
        etf.ImproperList([1], 2),
        float("nan"),
        [float("-inf"), {"x": float("inf")}],
    ]:
        assert encode_ok(7, result) == etf.encode((Atom("ok"), 7, result))
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    for bad in [cyclic, "\ud800", Atom("\ud800"), Atom("a" * 256), 1j]:
        with pytest.raises(EncodeError):
            encode_ok(1, bad)


def test_the_c_accelerator_is_what_etf_uses_unless_turned_off() -> None:
    import subprocess
    import sys

    assert etf.decode_message is _c("decode_message")
    assert etf.encode_ok is _c("encode_ok")
    probe = (
        "from snakepit_py.codec import etf, _etf_message;"
        "print(etf._accelerator, etf.decode_message is _etf_message.decode_message)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "SNAKEPIT_PY_PURE": "1"},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out.split() == ["None", "True"]


# --- call_fields: the C reader of a plain call's fields ---------------------


def _accepted_fields(data: bytes) -> tuple | None:
    """What the dispatcher would take from ``data`` as a well-formed call, or None."""
    from snakepit_py._wire import check_opts

    try:
        msg = etf.decode(data)
    except DecodeError:
        return None
    if not (type(msg) is tuple and len(msg) == 6 and msg[0] == "call"):
        return None
    _, cid, name, args, kwargs, opts = msg
    shape = (type(cid), type(name), type(args), type(kwargs), type(opts))
    if shape != (int, str, list, dict, dict) or cid < 0 or check_opts(opts) is not None:
        return None
    return cid, name, args, kwargs, opts.get("timeout_ms"), opts.get("credit"), opts.get("meta")


def fields_agree(data: bytes) -> None:
    """call_fields(data) is None, or exactly what decode + the dispatcher's checks give."""
    fields = _c("call_fields")(data)
    if fields is not None:
        assert_same(fields, _accepted_fields(data))


# Envelopes the dispatcher accepts (the random ones above mostly are not).
_good_opts = st.fixed_dictionaries(
    {},
    optional={
        "timeout_ms": st.one_of(st.integers(1, 2**31 - 1), st.floats(1e-3, 1e12)),
        "credit": st.integers(0, 2**31 - 1),
        "meta": st.dictionaries(st.text(max_size=5), terms, max_size=3),
    },
)
good_envelopes = st.builds(
    envelope, st.integers(0, 2**31 - 1), st.text(max_size=30), st.lists(terms, max_size=4),
    st.dictionaries(st.text(max_size=5), terms, max_size=3), _good_opts, st.booleans(),
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(envelopes, good_envelopes), st.data())
def test_call_fields_are_what_the_dispatcher_accepts(data: bytes, draw: st.DataObject) -> None:
    fields_agree(data)
    # and on the same envelope damaged: cut, one byte changed, or bytes added
    how = draw.draw(st.sampled_from(["cut", "flip", "extend"]))
    if how == "cut":
        fields_agree(data[: draw.draw(st.integers(0, len(data) - 1))])
    elif how == "flip":
        pos = draw.draw(st.integers(1, len(data) - 1))
        fields_agree(data[:pos] + bytes([draw.draw(st.integers(0, 255))]) + data[pos + 1 :])
    else:
        fields_agree(data + draw.draw(st.binary(min_size=1, max_size=4)))


@pytest.mark.parametrize("otp25", [True, False])
def test_the_envelopes_the_harness_sends_take_the_short_road(otp25: bool) -> None:
    for opts in [
        {"meta": {}, "timeout_ms": 5000},
        {"meta": {"trace": "abc"}},
        {"meta": {}, "timeout_ms": 2.5, "credit": 0},
        {},
    ]:
        data = envelope(2**31 - 1, "predict", [1, "x", [2.0]], {"k": None}, opts, otp25)
        fields = _c("call_fields")(data)
        assert fields is not None, opts
        assert_same(fields, _accepted_fields(data))


@pytest.mark.parametrize(
    ("call_id", "opts"),
    [
        (-1, {}),  # the dispatcher refuses these ...
        (1, {"timeout_ms": 0}),
        (1, {"timeout_ms": -2.0}),
        (1, {"credit": -1}),
        (1, {"meta": [1]}),
        (1, {"timeout_ms": None}),  # ... or accepts them another way, on the general road
        (1, {"deadline": 5}),
        (2**40, {}),
    ],
)
def test_call_fields_leave_everything_else_to_the_general_road(call_id: int, opts: dict) -> None:
    data = envelope(call_id, "m", [], {}, opts, otp25=True)
    assert _c("call_fields")(data) is None
    binary_key = etf.encode((Atom("call"), 1, "m", [], {}, {"timeout_ms": 5}))  # not an atom
    assert _c("call_fields")(binary_key) is None
    head = envelope(1, "m", [], {}, {}, otp25=False)[:-5]  # up to the opts map
    repeated = head + b"t\x00\x00\x00\x02" + b"w\x06credit" + b"a\x01" + b"w\x06credit" + b"a\x01"
    assert etf.decode(repeated)[5] == {"credit": 1}  # (the same key twice: a valid map)
    assert _c("call_fields")(repeated) is None


@ENCODERS
def test_encode_ok_of_a_big_binary(encode_ok: Any) -> None:
    for result in [b"x" * 4097, bytes(range(256)) * 4096]:
        for call_id in [0, 300, 2**40]:
            assert encode_ok(call_id, result) == etf.encode((Atom("ok"), call_id, result))
