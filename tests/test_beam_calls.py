"""Calls from worker code into the BEAM (protocol 1.1, docs/protocol.md §9).

Against the stub supervisors (FakeSupervisor over pipes, GrpcSupervisor over a
Session) serving Python callables as BEAM functions; the same worker is run
against the real harness by elixir_harness/test/snakepit/beam_calls_test.exs,
and by ``test_against_the_real_beam`` below.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest
from conftest import ROOT, worker_path

import snakepit_py as snakepit
from snakepit_py import _beam
from snakepit_py._health import peer_minor
from snakepit_py.codec import etf
from snakepit_py.errors import BeamCallError, CallError
from snakepit_py.testing import FakeSupervisor, GrpcSupervisor

WORKER = worker_path("beam_caller.py")
# Started functions signal here, so a test can act while one is running.
started: dict[str, threading.Event] = {}
released = threading.Event()


def _slow() -> None:
    started.setdefault("slow", threading.Event()).set()
    released.wait(10)


def _boom() -> None:
    raise ValueError("no such user")


FUNCTIONS = {
    "double": lambda x: 2 * x,
    "boom": _boom,
    "slow": _slow,
    "whoami": lambda: "python",
}


def make(transport: str, **kwargs):
    cls = GrpcSupervisor if transport == "grpc" else FakeSupervisor
    kwargs.setdefault("beam_functions", FUNCTIONS)
    return cls(WORKER, **kwargs)


@pytest.fixture(scope="module", params=["port", "grpc"])
def sup(request):
    with make(request.param) as s:
        yield s


@pytest.fixture(autouse=True)
def _reset():
    started.clear()
    released.clear()
    yield
    released.set()


def _wait_started(name: str) -> None:
    assert started.setdefault(name, threading.Event()).wait(10)


# --- the messages -------------------------------------------------------------------------


def test_ready_lists_the_feature_and_the_functions_are_announced(sup):
    assert sup.ready["features"] == ["beam_call"]
    assert sup.call("functions") == list(FUNCTIONS)


def test_a_beam_call_carries_name_args_and_the_call_id(sup):
    before = len(sup.beam_calls)
    pending = sup.start_call("ask", "double", 21)
    assert pending.wait() == 42
    sent = sup.beam_calls[before]
    assert (sent["name"], sent["args"]) == ("double", [21])
    assert sent["opts"] == {"call_id": pending.id}  # no timeout_ms: none given
    assert isinstance(sent["ref"], int) and sent["ref"] >= 0


def test_timeout_ms_is_the_timeout_cut_to_the_calls_deadline(sup):
    before = len(sup.beam_calls)
    sup.call("ask", "double", 1, kwargs={"timeout": 5.0})
    sup.call("ask", "double", 1, kwargs={"timeout": 5.0}, timeout_ms=2000)
    first, second = sup.beam_calls[before:]
    assert first["opts"]["timeout_ms"] == 5000
    assert 0 < second["opts"]["timeout_ms"] <= 2000


def test_every_way_of_calling(sup):
    assert sup.call("aask", "double", 5) == 10
    assert sup.call("from_thread", "double", 4) == {"result": 8}
    stream = sup.stream("ask_stream", "double", 4)
    assert list(stream) == [0, 2, 4, 6]
    assert stream.result == 24
    # a thread the method started is outside any call: call_id nil
    calls = [c for c in sup.beam_calls if c["name"] == "double" and c["args"] == [4]]
    assert calls[-1]["opts"]["call_id"] is None


def test_1000_concurrent_beam_calls_from_async_code(sup):
    assert sup.call("amany", "double", 1000) == [2 * i for i in range(1000)]


def test_a_method_that_outlasts_the_sentinels_period_gets_every_reply(sup):
    # The sentinel takes the reading role over during the sleep; the first reply,
    # read by it, hands the role back, and the next waits read for themselves.
    assert sup.call("sleep_then_ask", "double", 0.05, 50) == [2 * i for i in range(50)]
    assert sup.call("ask", "double", 3) == 6


# --- errors -------------------------------------------------------------------------------


def test_an_exception_in_the_function(sup):
    assert sup.call("ask_error", "boom") == {
        "kind": "exception", "type": "ValueError", "message": "no such user",
    }  # fmt: skip
    assert sup.call("aask_error", "boom")["type"] == "ValueError"


def test_a_name_not_announced_raises_before_anything_is_sent(sup):
    before = len(sup.beam_calls)
    error = sup.call("ask_error", "nope")
    assert error["kind"] == "unknown_function"
    assert "serves no function 'nope'; it serves: double, boom, slow, whoami" in error["message"]
    assert len(sup.beam_calls) == before


def test_unknown_function_and_bad_arguments_from_the_supervisor(sup):
    assert sup.call("ask_unannounced", "nope")["kind"] == "unknown_function"
    assert sup.call("ask_error", "double", 1, 2)["kind"] == "bad_arguments"


def test_an_argument_the_codec_cannot_carry_is_not_sent(sup):
    before = len(sup.beam_calls)
    assert sup.call("bad_args", "double").startswith("EncodeError")
    assert len(sup.beam_calls) == before


def test_the_supervisors_timeout(sup):
    assert sup.call("ask_beam_timeout", "slow", 100)["kind"] == "timeout"


def test_a_python_timeout_sends_beam_cancel(sup):
    # Python's timeout and the supervisor's (timeout_ms, the same 0.2 s) race;
    # when the supervisor's reply comes first there is nothing to cancel: try again
    for _ in range(5):
        error = sup.call("ask_error", "slow", kwargs={"timeout": 0.2})
        assert error["kind"] == "timeout"
        if "did not reply within" in error["message"]:  # Python's own timeout ended the wait
            break
        released.set()  # (the function still running ends; the next one waits again)
        time.sleep(0.05)
        released.clear()
    else:
        pytest.fail("the supervisor's timeout won five times in a row")
    ref = sup.beam_calls[-1]["ref"]
    sup.wait_for(lambda: ref in sup.beam_cancels)


def test_sync_beam_call_on_the_event_loop_is_refused(sup):
    assert "use `await snakepit.beam.acall" in sup.call("sync_call_on_loop", "double")


def test_a_supervisor_that_announced_nothing():
    with make("port", beam_functions=None) as bare:
        assert bare.call("functions") == []
        error = bare.call("ask_error", "double", 1)
        assert error["kind"] == "unknown_function"
        assert "this supervisor serves no BEAM functions" in error["message"]


# --- cancel and the reader ----------------------------------------------------------------


@pytest.mark.parametrize("method", ["wait_for_cancel", "await_for_cancel"])
def test_cancelling_the_call_ends_the_wait_and_sends_beam_cancel(sup, method):
    count = sup.call("finally_count")
    pending = sup.start_call(method, "slow")
    _wait_started("slow")
    ref = sup.beam_calls[-1]["ref"]
    sup.cancel(pending.id)
    with pytest.raises(CallError) as info:
        pending.wait()
    assert info.value.kind == "cancelled"
    sup.wait_for(lambda: ref in sup.beam_cancels)
    assert sup.call("finally_count") == count + 1


def test_the_calls_deadline_ends_the_wait(sup):
    with pytest.raises(CallError) as info:
        sup.call("wait_for_cancel", "slow", timeout_ms=300)
    assert info.value.kind == "timeout"


def test_while_a_method_waits_the_worker_keeps_reading(sup):
    pending = sup.start_call("wait_for_cancel", "slow")
    _wait_started("slow")
    assert sup.health()["status"] in ("busy", "healthy")
    assert sup.call("aecho", 7) == 7  # another call
    assert sup.call("aask", "double", 3) == 6  # another beam call's reply
    released.set()
    assert pending.wait() is None


def test_a_sync_call_read_while_a_method_waits_runs_once_it_returns(sup):
    # Given a sync method waiting for a beam reply (--threads 1: the waiting
    # thread itself reads the frames meanwhile, over a Port)
    pending = sup.start_call("wait_for_cancel", "slow")
    _wait_started("slow")
    # When a sync call comes, and a control message
    queued = sup.start_call("echo", 5)
    assert sup.health()["status"] in ("busy", "healthy")
    # Then the sync call waits for the slot, and runs once the method returns
    with pytest.raises(TimeoutError):
        queued.next_event(0.05)
    released.set()
    assert pending.wait() is None
    assert queued.wait() == 5


def test_a_supervisor_gone_while_a_method_waits_ends_the_worker():
    # Given a sync method waiting for a beam reply that never comes
    s = make("port").start()
    s.start_call("wait_for_cancel", "slow")
    _wait_started("slow")
    # When the supervisor goes (its end of the pipe closes)
    t0 = time.monotonic()
    code = s.close(timeout=10)
    # Then the wait ends and the worker exits as it does at any end of input
    assert code == 0
    assert time.monotonic() - t0 < 5


def test_a_worker_without_the_feature_gets_no_announcement():
    # a supervisor that does not say it reads 1.1: :ready is exactly 1.0's
    with make("port", env={"SNAKEPIT_PROTOCOL": ""}) as old:
        assert "features" not in old.ready
        assert old.call("functions") == []


def test_peer_minor_reads_snakepit_protocol():
    assert [peer_minor({"SNAKEPIT_PROTOCOL": v}) for v in ("1.1", "1.0", "", "2.1", "1.x")] == [
        1, 0, 0, 0, 0,
    ]  # fmt: skip


# --- re-entrancy --------------------------------------------------------------------------


def test_a_call_back_that_would_deadlock_is_refused_at_once():
    # Given --threads 1 and a sync method waiting for a BEAM function that calls
    # back into the same worker (the harness marks such calls with opts.beam_call),
    box: dict = {}

    def echo_back(x):
        sent = box["sup"].beam_calls[-1]
        opts = {snakepit.Atom("beam_call"): sent["ref"]}
        cid = box["sup"].next_id()
        pending = box["sup"].expect(cid)
        box["sup"].send_term((snakepit.Atom("call"), cid, "echo", [x], {}, opts))
        try:
            return pending.wait(5)
        except CallError as exc:
            raise RuntimeError(f"{exc.kind}: {exc.message}") from None

    with FakeSupervisor(WORKER, beam_functions={"echo_back": echo_back}) as s:
        box["sup"] = s
        t0 = time.monotonic()
        error = s.call("ask_error", "echo_back", 5)
        # then the call back is refused with :would_deadlock rather than hang,
        assert error["kind"] == "exception"
        assert error["message"].startswith("would_deadlock: call 'echo' would wait for ever")
        assert "its only sync thread" in error["message"]
        assert time.monotonic() - t0 < 4  # (well within the function's own 5 s wait)
        # and an async method waiting may be called back.
        assert s.call("aask", "echo_back", 5) == 5


# --- errors API ---------------------------------------------------------------------------


def test_beam_call_error_is_a_snakepit_error_and_exported():
    assert issubclass(snakepit.BeamCallError, snakepit.SnakepitError)
    assert "BeamCallError" in snakepit.__all__ and "beam" in snakepit.__all__
    err = BeamCallError.from_wire({"kind": "exception", "type": "ArgumentError", "message": "m"})
    assert (err.kind, err.type, err.message, str(err)) == (
        "exception", "ArgumentError", "m", "exception: ArgumentError: m",
    )  # fmt: skip
    assert BeamCallError.from_wire("junk").type == "ProtocolError"


def test_outside_a_worker():
    assert snakepit.beam.functions() == []
    with pytest.raises(BeamCallError, match="serves no BEAM functions"):
        snakepit.beam.call("double", 1)


# --- the real BEAM ------------------------------------------------------------------------


@pytest.mark.beam
@pytest.mark.skipif(shutil.which("mix") is None, reason="needs mix on PATH")
def test_against_the_real_beam():
    # The example's Elixir half: a pool whose Python method asks the BEAM mid-stream.
    run = subprocess.run(
        ["mix", "run", "../examples/elixir/beam_calls.exs"],
        cwd=ROOT / "elixir_harness", capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "all beam calls answered" in run.stdout


@pytest.mark.parametrize(
    "term",
    [
        ("beam_reply",),
        ("beam_reply", -1, ("ok", 1)),
        ("beam_reply", 1, ("maybe", 1)),
        ("beam_reply", 1, "ok"),
        ("beam_functions", "double"),
        ("beam_functions", ["double", 1]),
    ],
)
def test_a_malformed_beam_frame_is_a_bad_request(sup, term):
    sup.send_term((snakepit.Atom(term[0]), *term[1:]))
    error = sup.orphan_errors.get(timeout=10)
    assert error["kind"] == "bad_request"
    assert sup.call("ask", "double", 2) == 4  # the announced list is unchanged


# --- the short roads (ETF): the frames of every beam call, made and read from bytes -------


class _Owner:
    """What BeamCalls looks for behind ``send``: the codec's ``encode`` and a ``_write``."""

    encode = staticmethod(etf.encode)

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self._write = self.frames.append

    def send(self, term) -> None:
        self._write(self.encode(term))


def _nest(depth: int) -> list:
    term: list = []
    for _ in range(depth):
        term = [term]
    return term


# The frame's two makers: the codec's C accelerator (when built) and Python.
_ROADS = ["c", "python"] if etf.beam_call_frame is not None else ["python"]


@pytest.fixture(params=_ROADS)
def road(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setattr(_beam, "_call_frame", None)
        monkeypatch.setattr(_beam, "_reply_fields", _beam.reply_fields)
    return request.param


@pytest.mark.parametrize("ref", [0, 255, 256, 2**31 - 1, 2**31, 2**63, 2**70])
@pytest.mark.parametrize("call_id", [None, 7, 300, 2**31, 2**40, 2**64])
@pytest.mark.parametrize("timeout", [None, 0.0001, 0.3, 2.5, 10**7])
def test_a_beam_call_frame_is_the_codecs_encoding(road, ref, call_id, timeout):
    owner = _Owner()
    beam = _beam.BeamCalls(owner.send)
    beam.announce(["f"])
    assert beam._write is not None  # the short road is taken
    beam._refs = iter([ref])
    ctx = type("Ctx", (), {"id": call_id, "deadline": None})() if call_id is not None else None
    args = (1, -5, 2**64, 1.5, "é", b"\x00", [1, [2]], {"k": (3,)}, None, True, snakepit.Atom("a"))
    beam._begin("f", args, timeout, _beam._Waiter(ctx))
    opts = {snakepit.Atom("call_id"): call_id}
    if timeout is not None:
        opts[snakepit.Atom("timeout_ms")] = _beam._timeout_ms(timeout, None)
    term = (snakepit.Atom("beam_call"), ref, "f", list(args), opts)
    assert owner.frames == [etf.encode(term)]


@pytest.mark.parametrize(
    "args",
    [
        (),
        ([],),
        ("x" * 5000, b"y" * 5000),  # big binaries
        (-(2**63), 2**63, -(2**80)),  # big integers
        ("\u00e9t\u00e9", snakepit.Atom("\u00e9"), snakepit.Atom("a" * 255)),
        ([[[[[[[[[[1]]]]]]]]]],),
        ([0] * 300,),
        ({(1, 2): [3, {4: None}]},),
        (snakepit.ImproperList([1], 2), (1,) * 300, float("1e300")),
        (float("nan"), float("-inf")),  # (atoms on the wire)
        ([[1]] * 40,),
        (_nest(200),),  # deeper than the C encoder goes
        (etf.decode(etf.encode(snakepit.Atom("z"))),),
    ],
    ids=lambda a: repr(a)[:30],
)
def test_a_beam_call_frame_of_any_args_is_the_codecs_encoding(road, args):
    owner = _Owner()
    beam = _beam.BeamCalls(owner.send)
    beam.announce(["f", "\u00e9"])
    ctx = type("Ctx", (), {"id": 3, "deadline": None})()
    for name in ("f", "\u00e9"):
        beam._refs = iter([5])
        beam._begin(name, args, 1.0, _beam._Waiter(ctx))
        opts = {snakepit.Atom("call_id"): 3, snakepit.Atom("timeout_ms"): 1000}
        assert owner.frames.pop() == etf.encode(
            (snakepit.Atom("beam_call"), 5, name, list(args), opts)
        )


def test_the_c_frame_leaves_what_is_not_for_it_to_python():
    if etf.beam_call_frame is None:
        pytest.skip("the codec's C accelerator is not in use")
    frame = etf.beam_call_frame
    assert frame(1, "f", (object(),), None, None) is None
    assert frame(1, "f", (2**70,), None, None) is None
    assert frame(1, "f", (float("nan"),), None, None) is None
    assert frame(1, "\ud800", (), None, None) is None  # a lone surrogate
    assert frame(1, "f", (), 2**70, None) is None
    assert frame(2**70, "f", (), None, None) is None
    assert frame(1, b"f", (), None, None) is None  # (the name is a str)
    assert frame(1, "f", iter(()), None, None) is None  # (args: a tuple or a list)
    with pytest.raises(TypeError):
        frame(1, "f", ())


@pytest.mark.parametrize("bad", [object(), "\ud800", [1, {2: object()}], {1: {2: 1j}}])
def test_a_beam_call_argument_the_codec_cannot_carry_sends_nothing(road, bad):
    owner = _Owner()
    beam = _beam.BeamCalls(owner.send)
    beam.announce(["f"])
    with pytest.raises(snakepit.EncodeError):
        beam._begin("f", (1, bad), None, _beam._Waiter(None))
    assert owner.frames == [] and beam._pending == {}


def _reply_heads(term) -> list[bytes]:
    """``term``'s encoding as OTP 26 writes it (SMALL_ATOM_UTF8_EXT) and as OTP 25 does."""
    new = etf.encode(term)
    old = new
    for name in ("beam_reply", "ok", "error"):
        raw = name.encode()
        old = old.replace(bytes((119, len(raw))) + raw, bytes((100, 0, len(raw))) + raw)
    return [new, old]


@pytest.mark.parametrize("ref", [0, 255, 256, 2**31 - 1])
@pytest.mark.parametrize("outcome", ["ok", "error"])
@pytest.mark.parametrize(
    "value, in_c",  # in_c: the C reader reads it (else it leaves it to Python: None)
    [(7, True), (None, True), ([1, "x", 2.5], True), ({"user": {"id": 2**30}}, True),
     ({"user": {"id": 2**40}}, False)],
)  # fmt: skip
def test_a_beam_reply_is_read_from_its_bytes_as_the_codec_reads_it(ref, outcome, value, in_c):
    term = (snakepit.Atom("beam_reply"), ref, (snakepit.Atom(outcome), value))
    for frame in _reply_heads(term):
        assert etf.decode(frame) == term
        assert _beam.reply_fields(frame) == (ref, outcome == "ok", value)
        if etf.beam_reply_fields is not None:
            got = etf.beam_reply_fields(frame)
            assert got == ((ref, outcome == "ok", value) if in_c else None)


# Values the C reader leaves to Python (None), and the Python road reads.
_FOR_PYTHON = [
    2**70,  # a big integer
    "x" * 5000,  # a binary over C's limit
    _nest(100),  # deeper than C goes
    snakepit.ImproperList([1], 2),
    snakepit.Atom("never_seen_before_by_the_atom_cache"),
]


@pytest.mark.parametrize("value", _FOR_PYTHON, ids=lambda v: repr(v)[:30])
def test_a_reply_value_c_does_not_read_is_read_by_python(value):
    term = (snakepit.Atom("beam_reply"), 300, (snakepit.Atom("ok"), value))
    for frame in _reply_heads(term):
        if etf.beam_reply_fields is not None and type(value) is not snakepit.Atom:
            assert etf.beam_reply_fields(frame) is None
        assert _beam.reply_fields(frame) == (300, True, value)
        beam = _beam.BeamCalls(_Owner().send)
        waiter = _beam._Waiter(None)
        beam._pending[300] = waiter
        assert beam.reply_frame(frame) is True
        assert waiter.outcome == (True, value) and beam._pending == {}


def test_a_reply_too_deep_for_the_codec_is_left_to_the_general_road():
    deep = b"l\x00\x00\x00\x01" * 600 + b"j" * 601  # [[[...]]], 600 deep (too deep to encode)
    for short in _reply_heads((snakepit.Atom("beam_reply"), 1, (snakepit.Atom("ok"), []))):
        frame = short[:-1] + deep  # (the value [] is the last byte)
        assert _beam.reply_fields(frame) is None
        if etf.beam_reply_fields is not None:
            assert etf.beam_reply_fields(frame) is None
        beam = _beam.BeamCalls(_Owner().send)
        beam._pending[1] = waiter = _beam._Waiter(None)
        assert beam.reply_frame(frame) is False
        assert waiter.outcome is None and 1 in beam._pending


@pytest.mark.parametrize(
    "term",
    [
        ("beam_reply", -1, ("ok", 1)),  # a negative ref: the general road refuses it
        ("beam_reply", 2**31, ("ok", 1)),  # a big ref: the general road
        ("beam_reply", 1, ("maybe", 1)),
        ("beam_reply", 1, ("ok", 1, 2)),
        ("beam_reply", 1, "ok"),
        ("beam_reply", 1),
        ("call", 1, ("ok", 1)),
    ],
)
def test_anything_else_is_left_to_the_general_road(term):
    atoms = tuple(snakepit.Atom(t) if isinstance(t, str) else t for t in term)
    atoms = tuple(
        tuple(snakepit.Atom(v) if isinstance(v, str) else v for v in t) if type(t) is tuple else t
        for t in atoms
    )
    readers = [_beam.reply_fields]
    if etf.beam_reply_fields is not None:
        readers.append(etf.beam_reply_fields)
    for read in readers:
        for frame in _reply_heads(atoms):
            assert read(frame) is None
        for good in _reply_heads((snakepit.Atom("beam_reply"), 1, (snakepit.Atom("ok"), [1, 2]))):
            for cut in range(len(good)):  # truncated anywhere
                assert read(good[:cut]) is None
            assert read(good + b"\x00") is None  # trailing bytes


def test_a_reply_for_an_unknown_ref_is_ignored(sup):
    sup.send_term((snakepit.Atom("beam_reply"), 10**6, (snakepit.Atom("ok"), 1)))
    assert sup.call("ask", "double", 2) == 4


@pytest.mark.parametrize("left, low, high", [(-5.0, 1, 1), (0.0, 1, 1), (2.5, 2000, 2500)])
def test_a_beam_call_under_a_deadline_sends_what_is_left_of_it(road, left, low, high):
    owner = _Owner()
    beam = _beam.BeamCalls(owner.send)
    beam.announce(["f"])
    beam._refs = iter([1])
    ctx = type("Ctx", (), {"id": 4, "deadline": time.monotonic() + left})()
    beam._begin("f", (), None, _beam._Waiter(ctx))
    term = etf.decode(owner.frames[0])
    ms = term[4][snakepit.Atom("timeout_ms")]
    assert type(ms) is int and low <= ms <= high
    assert _beam._timeout_ms(None, ctx) <= ms
