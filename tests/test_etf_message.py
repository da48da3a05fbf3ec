"""The fast paths: `decode_message` must be `decode`, `encode_ok` must be `encode`."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_etf import assert_same, terms, vector

from snakepit_py.codec import etf
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


def same_outcome(data: bytes) -> None:
    """decode_message(data) returns what decode(data) returns, or raises the same error."""
    try:
        expected = etf.decode(data)
    except DecodeError as exc:
        with pytest.raises(DecodeError) as info:
            etf.decode_message(data)
        assert str(info.value) == str(exc)
        return
    assert_same(etf.decode_message(data), expected)


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


def test_harness_envelopes_decode_on_the_fast_path() -> None:
    # Given the bytes Snakepit.Worker sends on OTP 25 (atoms as ATOM_EXT, [1] as STRING_EXT)
    data = bytes.fromhex(
        "83680664000463616c6c61076d000000046563686f6b000101740000000074000000026400046d6574"
        "61740000000064000a74696d656f75745f6d736200001388"
    )
    # Then the fast path gives the general decoder's value
    expected = (Atom("call"), 7, "echo", [1], {}, {Atom("meta"): {}, Atom("timeout_ms"): 5000})
    assert_same(etf.decode_message(data), expected)
    assert_same(etf.decode_message(vector("otp25_envelope")), etf.decode(vector("otp25_envelope")))


def test_non_call_frames_and_other_types_take_the_general_road() -> None:
    for term in [(Atom("health"), 3), (Atom("cancel"), 1), [1, 2], "call"]:
        assert_same(etf.decode_message(etf.encode(term)), term)
    data = envelope(1, "m", [b"x" * 5000], {}, {}, otp25=True)
    assert_same(etf.decode_message(bytearray(data)), etf.decode(data))
    with pytest.raises(DecodeError):
        etf.decode_message(b"")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes)
def test_fast_path_equals_decode_property(data: bytes) -> None:
    same_outcome(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes, st.data())
def test_damaged_envelopes_fail_exactly_as_decode_does(data: bytes, draw: st.DataObject) -> None:
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
    same_outcome(damaged)


def test_deep_args_hit_the_same_depth_limit() -> None:
    deep: Any = []
    for _ in range(etf.DEFAULT_MAX_DEPTH - 2):
        deep = [deep]
    same_outcome(envelope(1, "m", deep, {}, {}, otp25=True))
    same_outcome(envelope(1, "m", [deep], {}, {}, otp25=True))
    same_outcome(envelope(1, "m", [], {}, {"meta": {"k": deep}}, otp25=False))


def test_repeated_opts_come_back_as_new_objects_every_time() -> None:
    # Given the same envelope decoded twice (the second time from the opts cache)
    data = envelope(1, "m", [], {}, {"meta": {}, "timeout_ms": 5000}, otp25=True)
    first = etf.decode_message(data)
    first[5][Atom("meta")]["changed"] = True
    first[5][Atom("extra")] = 1
    # Then changing what the first decode returned changes nothing in the second
    second = etf.decode_message(data)
    assert_same(second, etf.decode(data))
    assert second[5] is not first[5]
    # And opts holding a non-empty map are decoded afresh each time
    data = envelope(2, "m", [], {}, {"meta": {"k": [1]}}, otp25=False)
    first = etf.decode_message(data)
    first[5][Atom("meta")]["k"].append(2)
    assert_same(etf.decode_message(data), etf.decode(data))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ids, terms)
def test_encode_ok_is_encode_of_the_ok_tuple(call_id: int, result: Any) -> None:
    assert etf.encode_ok(call_id, result) == etf.encode((Atom("ok"), call_id, result))


def test_encode_ok_refuses_what_encode_refuses() -> None:
    with pytest.raises(EncodeError):
        etf.encode_ok(1, object())
    with pytest.raises(EncodeError):
        etf.encode_ok(1, float("nan"))


def test_big_opts_are_not_cached() -> None:
    from snakepit_py.codec import _etf_message

    _etf_message._opts_seen.clear()
    data = envelope(1, "m", [], {}, {"blob": b"x" * 10_000}, otp25=True)
    assert_same(etf.decode_message(data), etf.decode(data))
    assert_same(etf.decode_message(data), etf.decode(data))
    assert not _etf_message._opts_seen
