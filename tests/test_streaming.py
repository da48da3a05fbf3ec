"""Streaming, credit, cancellation and the terminal-exactly-once rule (docs/protocol.md §7)."""

from __future__ import annotations

import time

import pytest
from conftest import worker_path
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from snakepit_py.errors import CallError
from snakepit_py.testing import FakeSupervisor


def _drain_error(stream) -> CallError:
    with pytest.raises(CallError) as info:
        for _ in stream:
            pass
    return info.value


def test_chunks_in_order_with_seq_from_zero_then_return_value(basic):
    s = basic.stream("count", 50, "the end")
    assert list(s) == list(range(50))
    assert s.seqs == list(range(50))
    assert s.result == "the end"


def test_generator_without_return_ends_with_nil(basic):
    s = basic.stream("count", 2, None)
    assert list(s) == [0, 1] and s.result is None


def test_async_generator(basic):
    s = basic.stream("async_count", 5)
    assert list(s) == [0, 1, 2, 3, 4] and s.result is None


def test_push_streaming_with_send(basic):
    s = basic.stream("pushed", 3)
    assert list(s) == [{"step": 0}, {"step": 1}, {"step": 2}]
    assert s.result == "pushed"


def test_unencodable_chunk_ends_the_call_and_closes_the_generator(basic):
    s = basic.stream("bad_chunk")
    assert s.next_chunk(5) == 1
    err = _drain_error(s)
    assert err.kind == "unencodable" and "object" in err.message
    assert "bad_chunk" in basic.call("closed_log")


def test_exception_after_chunks(basic):
    s = basic.stream("gen_fail")
    assert s.next_chunk(5) == 1
    err = _drain_error(s)
    assert err.kind == "exception" and err.message == "stream broke"


def test_no_chunk_follows_the_terminal():
    with FakeSupervisor(worker_path("basic.py"), record=True) as sup:
        for _ in range(20):
            s = sup.stream("count_forever")
            s.next_chunk(5)
            s.cancel()
            _drain_error(s)
        sup.call("add", 1, 1)  # a barrier: everything before it has been read
        ended = set()
        for frame in sup.frames:
            if frame[0] in ("ok", "error"):
                assert frame[1] not in ended
                ended.add(frame[1])
            elif frame[0] == "chunk":
                assert frame[1] not in ended, "a chunk arrived after its call's terminal"


def test_credit_exactly_n_then_silence_then_exactly_the_grant(basic):
    s = basic.stream("count_forever", credit=3)
    assert [s.next_chunk(5) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(TimeoutError):
        s.next_chunk(0.3)  # out of credit: silence
    s.credit(2)
    assert [s.next_chunk(5) for _ in range(2)] == [3, 4]
    with pytest.raises(TimeoutError):
        s.next_chunk(0.3)
    s.cancel()
    assert _drain_error(s).kind == "cancelled"


def test_zero_credit_sends_nothing_until_granted(basic):
    s = basic.stream("count", 3, credit=0)
    with pytest.raises(TimeoutError):
        s.next_chunk(0.3)
    s.credit(10)
    assert list(s) == [0, 1, 2] and s.result == "done"


def test_credit_applies_to_push_streaming_and_async_generators(basic):
    s = basic.stream("pushed", 4, credit=1)
    assert s.next_chunk(5) == {"step": 0}
    with pytest.raises(TimeoutError):
        s.next_chunk(0.3)
    s.credit(5)
    assert list(s) == [{"step": 1}, {"step": 2}, {"step": 3}]
    a = basic.stream("async_count", 4, credit=2)
    assert [a.next_chunk(5), a.next_chunk(5)] == [0, 1]
    with pytest.raises(TimeoutError):
        a.next_chunk(0.3)
    a.credit(2)
    assert list(a) == [2, 3]


def test_health_answers_while_a_producer_waits_for_credit(basic):
    s = basic.stream("count_forever", credit=1)
    s.next_chunk(5)
    assert basic.health()["inflight"] >= 1
    s.cancel()
    _drain_error(s)


# --- cancellation ---------------------------------------------------------------------------


def _cancel_after(sup, method, *args, delay=0.1):
    call = sup.start_call(method, *args)
    time.sleep(delay)
    t0 = time.monotonic()
    sup.cancel(call.id)
    with pytest.raises(CallError) as info:
        call.wait(10)
    return info.value, time.monotonic() - t0


def test_cancel_generator_runs_its_finally(basic):
    s = basic.stream("count_forever")
    s.next_chunk(5)
    s.cancel()
    err = _drain_error(s)
    assert err.kind == "cancelled" and err.details["reason"] == "cancelled"
    assert "count_forever" in basic.call("closed_log")


def test_cancel_async_method(basic):
    err, _ = _cancel_after(basic, "async_sleep", 30)
    assert err.kind == "cancelled"
    assert "async_sleep" in basic.call("closed_log")


def test_cancel_async_generator(basic):
    s = basic.stream("async_forever")
    s.next_chunk(5)
    s.cancel()
    assert _drain_error(s).kind == "cancelled"
    assert "async_forever" in basic.call("closed_log")


def test_cancel_cooperative_sync_code_sees_cancelled(basic):
    call = basic.start_call("cooperative", 30)
    time.sleep(0.1)
    basic.cancel(call.id)
    # Either the flag was seen (the method returned) or the interrupt landed first.
    try:
        assert call.wait(10) == "noticed"
    except CallError as err:
        assert err.kind == "cancelled"


def test_cancel_interrupts_a_pure_python_busy_loop(basic):
    err, took = _cancel_after(basic, "busy", 30)
    assert err.kind == "cancelled"
    assert took < 5
    assert basic.call("add", 1, 2) == 3  # the slot is free again


def test_cancel_interrupts_a_call_whose_helper_thread_keeps_sending(basic):
    # A user thread pushing chunks must not disarm the interrupt aimed at the call's thread.
    stream = basic.stream("pushed_from_a_thread", 30)
    stream.next_chunk(5)
    t0 = time.monotonic()
    stream.cancel()
    assert _drain_error(stream).kind == "cancelled"
    assert time.monotonic() - t0 < 5


def test_cancel_a_queued_call_answers_at_once(basic):
    running = basic.start_call("sleep", 0.5)
    queued = basic.start_call("add", 1, 2)
    basic.cancel(queued.id)
    with pytest.raises(CallError) as info:
        queued.wait(0.4)  # before the running call ends
    assert info.value.kind == "cancelled"
    assert running.wait() == "slept"


def test_cancel_unknown_id_is_ignored(basic):
    basic.cancel(987654)
    assert basic.call("add", 1, 2) == 3


def test_timeout_of_a_generator_and_of_an_async_method(basic):
    s = basic.stream("count_forever", credit=1, timeout_ms=200)
    s.next_chunk(5)
    assert _drain_error(s).kind == "timeout"
    with pytest.raises(CallError) as info:
        basic.call("async_sleep", 10, timeout_ms=150)
    assert info.value.kind == "timeout"


def test_timeout_of_a_busy_loop(basic):
    with pytest.raises(CallError) as info:
        basic.call("busy", 30, timeout_ms=150)
    assert info.value.kind == "timeout"


def test_cancel_racing_the_end_of_the_call_gives_exactly_one_terminal():
    with FakeSupervisor(worker_path("basic.py"), record=True) as sup:
        ids = []
        for i in range(200):
            call = sup.start_call("echo", i)
            sup.cancel(call.id)  # arrives while the call is queued, running or done
            ids.append(call.id)
        sup.call("add", 1, 1)
        terminals = [f[1] for f in sup.frames if f[0] in ("ok", "error")]
        for cid in ids:
            assert terminals.count(cid) == 1


# No shrinking: a failing example here waits out its timeouts, and shrinking
# would repeat that hundreds of times; the first failing example is reported.
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(
    actions=st.lists(
        st.tuples(
            st.sampled_from(["count", "sleep", "echo", "async_count", "busy", "count_forever"]),
            st.sampled_from(["none", "cancel", "credit", "timeout"]),
            st.floats(min_value=0, max_value=0.02),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_interleavings_always_end_with_exactly_one_terminal(module_worker, actions):
    sup = module_worker
    calls = []
    for method, action, delay in actions:
        args = {"count": [5], "sleep": [0.02], "echo": [1], "async_count": [3],
                "busy": [0.05], "count_forever": []}[method]  # fmt: skip
        timeout_ms = 30 if action == "timeout" or method == "count_forever" else None
        credit = 1 if action == "credit" else None
        call = sup.start_call(method, *args, timeout_ms=timeout_ms, credit=credit)
        calls.append(call)
        time.sleep(delay)
        if action == "cancel":
            sup.cancel(call.id)
        elif action == "credit":
            sup.credit(call.id, 100)
    for call in calls:
        seqs = []
        while True:
            kind, value, _ = call.next_event(10)
            if kind == "chunk":
                seqs.append(value)
            else:
                break
        assert seqs == list(range(len(seqs)))
    # Nothing more arrives for those calls: exactly one terminal each.
    sup.call("add", 0, 0)
    for call in calls:
        assert call.events.empty()


@pytest.fixture(scope="module")
def module_worker():
    with FakeSupervisor(worker_path("basic.py"), threads=2) as sup:
        yield sup


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_a_million_chunks_with_credit_64_keep_memory_flat():
    with FakeSupervisor(worker_path("basic.py"), timeout=120) as sup:
        s = sup.stream("small_chunks", 1_000_000, credit=64, auto_credit=True)
        start = None
        n = 0
        peak = 0
        for _ in s:
            n += 1
            if n == 1000:
                start = _rss_kb(sup.pid)
            elif n % 50_000 == 0:
                peak = max(peak, _rss_kb(sup.pid))
        assert n == 1_000_000
        assert start is not None
        assert peak - start < 5 * 1024, f"RSS grew by {(peak - start) / 1024:.1f} MB"


def test_cancels_and_deadlines_racing_the_end_of_busy_calls_never_lose_a_terminal():
    # Given two sync threads running pure-Python busy loops that a deadline and a
    # cancel interrupt just as they end (the interrupt must never land in the
    # runtime's own code: it did when interrupting first imported ctypes under
    # the call's lock, and the call never got its terminal)
    with FakeSupervisor(worker_path("basic.py"), threads=2) as sup:
        for _ in range(20):
            timed = sup.start_call("busy", 0.05, timeout_ms=30)
            time.sleep(0.005)
            cancelled = sup.start_call("busy", 0.05)
            time.sleep(0.0055)
            sup.cancel(cancelled.id)
            streamed = sup.start_call("sleep", 0.02, credit=1)
            sup.credit(streamed.id, 100)
            # Then every call gets its one terminal
            for call in (timed, cancelled, streamed):
                while call.next_event(10)[0] == "chunk":
                    pass
        assert sup.call("add", 1, 1) == 2
