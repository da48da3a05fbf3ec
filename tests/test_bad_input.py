"""Hostile and malformed input: each answered with :bad_request, and the worker keeps serving."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest
from conftest import worker_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snakepit_py import Atom
from snakepit_py.codec import etf
from snakepit_py.errors import CallError
from snakepit_py.testing import FakeSupervisor

CALL = Atom("call")


@pytest.fixture(scope="module")
def sup():
    with FakeSupervisor(worker_path("basic.py"), max_frame=1 << 20) as s:
        yield s


def _bad_request(sup, frame: bytes) -> dict:
    sup.send_raw(frame)
    error = sup.orphan_errors.get(timeout=10)
    assert error["kind"] == "bad_request", error
    assert sup.call("add", 1, 2) == 3  # still serving
    return error


def test_garbage_frame(sup):
    err = _bad_request(sup, b"\x00garbage")
    assert "undecodable" in err["message"]


def test_empty_frame(sup):
    _bad_request(sup, b"")


def test_valid_term_that_is_not_a_message(sup):
    err = _bad_request(sup, etf.encode({"hello": "world"}))
    assert "not a protocol message" in err["message"]
    _bad_request(sup, etf.encode((Atom("launch_missiles"), 1)))
    _bad_request(sup, etf.encode(("call", 1, "add", [1, 2], {}, {})))  # tag is a binary


@pytest.mark.parametrize(
    ("term", "fragment"),
    [
        ((CALL, 7, "add", (1, 2), {}, {}), "args must be a list"),
        ((CALL, 8, "add", [1, 2], [], {}), "kwargs must be a map"),
        ((CALL, 9, "add", [1, 2], {}, []), "opts must be a map"),
        ((CALL, 10, b"\xff", [], {}, {}), "method must be"),
        ((CALL, 11, "add", [1, 2], {}, {Atom("timeout_ms"): -5}), "timeout_ms"),
        ((CALL, 12, "add", [1, 2], {}, {Atom("credit"): "lots"}), "credit"),
        ((CALL, 13, "add", [1, 2], {}, {Atom("meta"): [1]}), "meta"),
        ((CALL, 14, "add", [1, 2]), "a call is"),
    ],
)
def test_wrong_shapes_keep_the_call_id(sup, term, fragment):
    pending = sup.expect(term[1])
    sup.send_term(term)
    kind, error, _ = pending.next_event(10)
    assert kind == "error" and error["kind"] == "bad_request"
    assert fragment in error["message"]
    assert sup.call("add", 1, 2) == 3


def test_negative_and_non_integer_ids_get_nil(sup):
    err = _bad_request(sup, etf.encode((CALL, -1, "add", [1, 2], {}, {})))
    assert "non-negative" in err["message"]
    _bad_request(sup, etf.encode((CALL, "one", "add", [1, 2], {}, {})))


def test_a_duplicate_id_in_flight_never_gets_a_second_terminal(sup):
    # Given a call in flight
    first = sup.start_call("sleep", 0.3, call_id=4242)
    logged = len(sup.logs)
    # When another call, or a refused frame, names its id
    sup.send_term((CALL, 4242, "add", [1, 2], {}, {}))
    sup.send_term((CALL, 4242, "no_such_method", [], {}, {}))
    sup.send_term((CALL, 4242, 7, [], {}, {}))
    # Then the first call gets exactly one terminal, its own
    assert first.next_event(10)[:2] == ("ok", "slept")
    assert sup.call("add", 1, 2) == 3
    with pytest.raises(Exception):  # noqa: B017 - nothing more arrives for 4242
        sup.expect(4242).next_event(0.3)
    # And each violation is reported out of band, a :log frame at :error naming the id
    reports = [m for m in sup.logs[logged:] if m[3].get("call_id") == 4242]
    assert len(reports) == 3 and all(m[1] == "error" for m in reports)
    assert "already in flight" in reports[0][2] and reports[0][3]["call_id"] == 4242


def test_health_and_describe_refuse_ids_that_are_not_integers(sup):
    for tag in ("health", "describe"):
        for bad in ("one", [1], -1, 1.5):
            err = _bad_request(sup, etf.encode((Atom(tag), bad)))
            assert err["message"].startswith(f"a {tag}")
    assert sup.health()["status"] in ("healthy", "busy")


def test_a_result_over_the_frame_limit_is_unencodable(sup):
    # max_frame is 1 MiB for this worker
    with pytest.raises(CallError) as info:
        sup.call("blob", 2 << 20)
    err = info.value
    assert err.kind == "unencodable" and "over the limit" in err.message
    assert err.details["size"] > 2 << 20 and err.details["limit"] == 1 << 20
    assert sup.call("blob", 1000) == "x" * 1000


def test_a_chunk_over_the_frame_limit_ends_the_stream_unencodable(sup):
    stream = sup.stream("blob_chunks", 2 << 20)
    assert next(stream) == "small"
    with pytest.raises(CallError) as info:
        next(stream)
    assert info.value.kind == "unencodable" and info.value.details["limit"] == 1 << 20
    assert sup.call("add", 1, 2) == 3


def test_oversize_frame_is_drained_and_refused_with_its_id(sup):
    big = etf.encode((CALL, 5151, "echo", [b"x" * (2 << 20)], {}, {}))
    catcher = sup.expect(5151)
    sup.send_raw(big)
    kind, error, _ = catcher.next_event(10)
    assert kind == "error" and error["kind"] == "bad_request"
    assert "over the limit" in error["message"]
    assert sup.call("add", 1, 2) == 3


def test_deep_nesting_is_refused_not_a_crash(sup):
    depth = 100_000
    frame = b"\x83" + b"\x6c\x00\x00\x00\x01" * depth + b"\x6a" + b"\x6a" * depth
    _bad_request(sup, frame)


def test_compression_bomb_is_refused(sup):
    inflated = bytes(50 << 20)  # 50 MiB of zeros, far over this worker's 1 MiB frame limit
    body = zlib.compress(b"\x6d" + struct.pack(">I", len(inflated) - 5) + inflated[5:], 9)
    frame = b"\x83\x50" + struct.pack(">I", len(inflated)) + body
    assert len(frame) < (1 << 20)
    _bad_request(sup, frame)


def test_bitstring_is_refused(sup):
    frame = b"\x83\x4d\x00\x00\x00\x01\x03\xe0"  # <<7::size(3)>>
    err = _bad_request(sup, frame)
    assert "bitstring" in err["message"]


def test_malformed_control_messages(sup):
    _bad_request(sup, etf.encode((Atom("credit"), 1, -3)))
    _bad_request(sup, etf.encode((Atom("cancel"),)))
    _bad_request(sup, etf.encode((Atom("shutdown"), "soon")))
    _bad_request(sup, etf.encode((Atom("health"),)))
    _bad_request(sup, etf.encode((CALL,)))  # no id at all: once raised in the reader thread


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from(["call", "cancel", "credit", "health", "describe"]),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none()), max_size=7),
)
def test_every_tag_with_any_arity_is_answered_not_raised(sup, tag, items):
    sup.send_term((Atom(tag), *items))
    assert sup.call("add", 1, 2) == 3  # the worker still reads and serves
    while not sup.orphan_errors.empty():
        sup.orphan_errors.get()


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=64))
def test_random_bytes_never_hurt_the_worker(sup, data):
    sup.send_raw(b"\x83" + data)
    # Either it happened to be a valid message or it got a bad_request; either way the
    # worker answers the next call.
    assert sup.call("add", 1, 2) == 3
    while not sup.orphan_errors.empty():
        sup.orphan_errors.get()


def test_a_frame_the_dispatcher_fails_on_is_refused_and_reading_goes_on():
    # Given the Port transport's readers in this process, and a dispatcher
    # that raises on one message (standing for a bug in the runtime)
    import os
    import select

    from snakepit_py._dispatcher import Dispatcher
    from snakepit_py._registry import load_target
    from snakepit_py._server import _Readers, peek_call_id
    from snakepit_py.transport.port import FrameReader, FrameWriter

    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    dispatcher = Dispatcher(load_target(worker_path("basic.py")), etf, FrameWriter(from_w).write)
    real = dispatcher.handle

    def flaky(msg):
        if msg[:2] == (CALL, 99):
            raise RuntimeError("boom")
        return real(msg)

    dispatcher.handle = flaky  # type: ignore[method-assign]
    _Readers(FrameReader(to_r), etf.decode_message, dispatcher, peek_call_id).start(1)
    replies = FrameReader(from_r)
    out = FrameWriter(to_w)

    def reply() -> Any:  # (a frame may wait in the reader's buffer already)
        waiting = replies._buf or select.select([from_r], [], [], 10)[0]
        assert waiting, "no answer: the reading stopped"
        return etf.decode(replies.read())

    try:
        # When that message arrives, then a call
        out.write(etf.encode((CALL, 99, "add", [1, 2], {}, {})))
        out.write(etf.encode((CALL, 1, "add", [1, 2], {}, {})))
        # Then the message is refused with its id, and the call is answered
        kind, call_id, error = reply()
        assert (kind, call_id, error["kind"]) == ("error", 99, "bad_request")
        assert "RuntimeError('boom')" in error["message"]
        assert reply() == (Atom("ok"), 1, 3)
    finally:
        os.close(to_w)  # end of input: the readers stop
        os.close(from_r)


def test_the_pure_python_codec_serves_the_same():
    # Given a worker with the C accelerator turned off
    import os

    env = dict(os.environ, SNAKEPIT_PY_PURE="1")
    with FakeSupervisor(worker_path("basic.py"), env=env) as pure:
        # Then calls, errors and refusals come back as with it
        assert pure.call("add", 1, 2) == 3
        assert pure.call("add", kwargs={"a": 1, "b": 2}, timeout_ms=500, meta={"k": 1}) == 3
        pending = pure.expect(77)
        pure.send_term((CALL, 77, "add", [1, 2], {}, {Atom("timeout_ms"): 0}))
        kind, error, _ = pending.next_event(10)
        assert kind == "error" and "timeout_ms" in error["message"]
        _bad_request(pure, etf.encode((CALL,)))
