"""CallContext alone, in process: credit, chunks, cancellation, interrupts, one terminal.

The context writes its chunks through a ChunkOutlet; here the outlet's writer
is a list, so every edge runs in milliseconds with no worker process.
"""

from __future__ import annotations

import sys
import threading
import time

import pytest

from snakepit_py import current_call
from snakepit_py._context import DONE, RUNNING, CallContext, ChunkOutlet, _set_async_exc, call_var
from snakepit_py._methods import Method
from snakepit_py._wire import ChunkUnencodable
from snakepit_py.codec import Atom, get_codec
from snakepit_py.errors import CallCancelled

etf = get_codec("etf")
WAIT = 5.0  # seconds: an upper bound for anything that should take milliseconds


def make(credit: int | None = None, max_frame: int = 2**20) -> tuple[CallContext, list[bytes]]:
    """A context for call 7 of method ``m`` whose chunks land in the returned list."""
    frames: list[bytes] = []
    outlet = ChunkOutlet(etf, frames.append, max_frame)
    spec = Method.build("m", lambda: None, None)
    return CallContext(outlet, 7, spec, (), {}, {}, None, credit), frames


def chunks(frames: list[bytes]) -> list[tuple]:
    return [etf.decode(f) for f in frames]


def in_thread(fn) -> tuple[threading.Thread, list]:
    """Run ``fn`` in a daemon thread; the list gets its result or the exception it raised."""
    box: list = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            box.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def wait_for(predicate, what: str) -> None:
    end = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.001)


def test_chunks_are_numbered_from_zero_through_the_outlet():
    ctx, frames = make()
    ctx.emit("a")
    ctx.send({"b": 1})
    assert chunks(frames) == [(Atom("chunk"), 7, 0, "a"), (Atom("chunk"), 7, 1, {"b": 1})]


def test_without_credit_the_producer_waits_until_credit_arrives():
    # Given a call whose caller granted one chunk
    ctx, frames = make(credit=1)
    ctx.emit(0)
    # When the producer sends a second one, it blocks
    t, box = in_thread(lambda: ctx.emit(1))
    time.sleep(0.02)
    assert len(frames) == 1 and not box
    # Then a grant lets it through
    ctx.add_credit(1)
    t.join(WAIT)
    assert box == [None] and [c[2] for c in chunks(frames)] == [0, 1]


def test_a_cancel_wakes_a_producer_waiting_for_credit():
    ctx, frames = make(credit=0)
    t, box = in_thread(lambda: ctx.emit("never"))
    time.sleep(0.02)
    assert ctx.request_cancel("cancelled") == 0  # it was queued (never entered)
    t.join(WAIT)
    assert isinstance(box[0], CallCancelled) and frames == []
    assert ctx.cancelled


def test_credit_on_a_call_without_flow_control_is_ignored():
    ctx, frames = make(credit=None)
    ctx.add_credit(5)
    for i in range(3):
        ctx.emit(i)
    assert len(frames) == 3


def test_one_close_wins_and_no_chunk_follows_it():
    ctx, frames = make()
    assert ctx.close() is True
    assert ctx.close() is False  # a second terminal is never written
    assert ctx.state == DONE
    with pytest.raises(CallCancelled):
        ctx.emit("late")
    assert frames == []


def test_enter_refuses_a_call_answered_or_cancelled_while_queued():
    answered, _ = make()
    answered.close()
    assert answered.enter() is False
    cancelled, _ = make()
    cancelled.request_cancel("timeout")
    with pytest.raises(CallCancelled, match="timeout"):
        cancelled.enter()


def test_a_cancel_after_the_terminal_changes_nothing():
    ctx, _ = make()
    ctx.close()
    assert ctx.request_cancel("cancelled") == DONE
    assert not ctx.cancelled


def test_an_unencodable_or_oversize_chunk_is_refused_before_anything_is_written():
    ctx, frames = make(max_frame=200)
    with pytest.raises(ChunkUnencodable):
        ctx.emit(object())
    with pytest.raises(ChunkUnencodable) as info:
        ctx.emit("x" * 500)
    assert info.value.error.details["limit"] == 200
    ctx.emit("fits")
    assert chunks(frames) == [(Atom("chunk"), 7, 0, "fits")]  # seq did not move


def start_user_code(ctx: CallContext, stop: threading.Event) -> tuple[threading.Thread, list]:
    """Run ``ctx`` in a thread whose user code spins in pure Python until ``stop`` or an
    interrupt; its box gets "interrupted" or "not interrupted". Returns once it spins."""
    spinning = threading.Event()

    def user_code() -> str:
        ctx.enter()
        spinning.set()
        try:
            while not stop.is_set():  # pure Python: an asynchronous exception lands here
                pass
            return "not interrupted"
        except CallCancelled:
            return "interrupted"
        finally:
            ctx.leave_user()

    thread, box = in_thread(user_code)
    assert spinning.wait(WAIT)
    return thread, box


def test_interrupt_reaches_only_a_thread_running_user_code_and_only_once():
    ctx, _ = make()
    assert ctx.interrupt() is False  # not started: nothing to interrupt
    t, box = start_user_code(ctx, threading.Event())
    assert ctx.state == RUNNING
    assert ctx.interrupt() is True
    assert ctx.interrupt() is False  # at most once per call
    t.join(WAIT)
    assert box == ["interrupted"]


def test_an_interrupted_call_leaves_nothing_behind_for_a_traced_thread():
    # Given a call interrupted in user code, which then left it (dropping the interrupt)
    ctx, _ = make()
    t, box = start_user_code(ctx, threading.Event())
    assert ctx.interrupt() is True
    t.join(WAIT)
    assert box == ["interrupted"]

    # When a thread under a tracer (coverage, a debugger, a profiler) calls a function
    def traced() -> str:
        sys.settrace(lambda *_: None)
        try:
            return (lambda: "ran")()
        finally:
            sys.settrace(None)

    tt, tbox = in_thread(traced)
    tt.join(WAIT)
    ran = tbox == ["ran"]
    if tt.is_alive():  # it spins at the function's entry: end it, which resets the flag
        _set_async_exc(tt.ident, CallCancelled)
        tt.join(WAIT)
    # Then it runs: clearing a pending interrupt with SetAsyncExc(id, NULL) would leave
    # CPython's (3.11) interpreter-wide async-exception flag set, and a traced thread
    # loops for ever on entering a function (the deadline thread under coverage did)
    assert ran, tbox


def test_no_interrupt_lands_after_the_thread_left_user_code():
    ctx, _ = make()
    left = threading.Event()
    go_on = threading.Event()

    def user_code() -> str:
        ctx.enter()
        ctx.leave_user()
        left.set()
        go_on.wait(WAIT)
        for _ in range(10000):  # bytecode an interrupt would land in
            pass
        return "finished"

    t, box = in_thread(user_code)
    assert left.wait(WAIT)
    assert ctx.interrupt() is False
    go_on.set()
    t.join(WAIT)
    assert box == ["finished"]


def test_a_helper_thread_sending_does_not_disarm_the_calls_own_interrupt():
    # Given a call running user code in its own thread
    ctx, frames = make()
    stop = threading.Event()
    t, box = start_user_code(ctx, stop)
    # When a helper thread of the user's sends a chunk for it
    helper, hbox = in_thread(lambda: ctx.emit("from a helper"))
    helper.join(WAIT)
    assert hbox == [None] and len(frames) == 1
    # Then the call's thread still counts as in user code, and can be interrupted
    assert ctx.interrupt() is True
    t.join(WAIT)
    stop.set()
    assert box == ["interrupted"]


def test_current_call_is_the_context_set_for_this_thread_only():
    ctx, _ = make()
    with pytest.raises(RuntimeError, match="outside"):
        current_call()
    token = call_var.set(ctx)
    try:
        assert current_call() is ctx
        _, box = in_thread(lambda: call_var.get())
        wait_for(lambda: box, "the other thread")
        assert box == [None]
    finally:
        call_var.reset(token)
