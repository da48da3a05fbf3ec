"""The dispatcher in process: decoded messages in, frames into a list, no worker process.

Each test drives ``handle``/``accept_call`` and ``run_sync`` itself, on the
threads it chooses, so the concurrency edges (queued calls, cancels racing
terminals, duplicate ids, draining) run in milliseconds.
"""

from __future__ import annotations

import threading
import time

import pytest

from snakepit_py import current_call
from snakepit_py._dispatcher import Dispatcher
from snakepit_py._registry import Method, Registry
from snakepit_py.codec import Atom, get_codec

etf = get_codec("etf")
A = Atom
CALL, CANCEL, CREDIT, HEALTH, SHUTDOWN = map(A, ("call", "cancel", "credit", "health", "shutdown"))
WAIT = 5.0  # seconds: an upper bound for anything that should take milliseconds

gate = threading.Event()  # `wait` blocks on it (reset by the fixture)
entered = threading.Event()  # set by `wait` and `spin` once they run


def add(a, b):
    return a + b


def wait():
    entered.set()
    assert gate.wait(WAIT)
    return "waited"


def spin():
    entered.set()
    while True:  # stops only when interrupted
        pass


def count(n):
    yield from range(n)
    return "done"


def unencodable():
    return object()


def big():
    return "x" * 1000


async def sleepy():
    import asyncio

    entered.set()
    await asyncio.sleep(WAIT)


def whoami():
    return current_call().id


def typed(a: int, b: float, c: str = "c"):
    return [type(a).__name__, type(b).__name__, c]


METHODS = [add, wait, spin, count, unencodable, big, sleepy, whoami, typed]


harnesses: list[Harness] = []


class Harness:
    """A dispatcher whose frames go to a list, decoded on demand."""

    def __init__(self, **options) -> None:
        harnesses.append(self)
        self.frames: list[bytes] = []
        self.lock = threading.Lock()
        self.exited = threading.Event()
        registry = Registry([Method.build(f.__name__, f, None) for f in METHODS])
        self.d = Dispatcher(registry, etf, self.write, on_exit=self.exited.set, **options)

    def write(self, frame: bytes) -> None:
        with self.lock:
            self.frames.append(frame)

    def terms(self) -> list:
        with self.lock:
            return [etf.decode(f) for f in self.frames]

    def call(self, cid: int, method: str, *args, **opts):
        options = {A(k): v for k, v in opts.items()}
        return self.d.handle((CALL, cid, method, list(args), {}, options))

    def run(self, ctx) -> threading.Thread:
        t = threading.Thread(target=self.d.run_sync, args=(ctx,), daemon=True)
        t.start()
        return t

    def terminals(self, cid: int) -> list:
        return [t for t in self.terms() if t[0] in ("ok", "error") and t[1] == cid]

    def wait_terminal(self, cid: int) -> tuple:
        end = time.monotonic() + WAIT
        while not self.terminals(cid):
            assert time.monotonic() < end, f"no terminal for call {cid}: {self.terms()}"
            time.sleep(0.001)
        return self.terminals(cid)[0]


@pytest.fixture(autouse=True)
def _reset_events():
    gate.clear()
    entered.clear()
    yield
    gate.set()  # release anything still waiting
    while harnesses:
        harnesses.pop().d.exit()  # (no longer reached by snakepit.publish)


def kind(term: tuple) -> str:
    return term[2]["kind"] if term[0] == "error" else "ok"


def test_a_call_runs_on_the_thread_that_runs_it_and_answers_once():
    h = Harness()
    ctx = h.call(1, "add", 1, 2)
    assert ctx is not None  # a sync call for this thread to run
    h.d.run_sync(ctx)
    assert h.terms() == [(A("ok"), 1, 3)]
    assert h.d.table.calls == {} and h.d.table.sync_free == 1


def test_the_codecs_fast_road_and_the_general_road_agree():
    h = Harness()
    h.d.run_sync(h.d.accept_call(1, "add", [1, 2], {}, None, None, None))
    h.d.run_sync(h.call(2, "add", 1, 2))
    assert h.terms() == [(A("ok"), 1, 3), (A("ok"), 2, 3)]


def test_an_annotated_call_takes_the_typed_shortcut_and_still_checks_and_converts():
    # Given a method with simple annotations, once its signature is known
    h = Harness()
    h.d.run_sync(h.call(1, "typed", 1, 2.0))
    spec = h.d.registry.methods["typed"]
    assert spec.plain_arity is None and spec.exact_types == {2: (int, float), 3: (int, float, str)}
    # When values of exactly those types come, they bind as they came; any other
    # goes through the converters: an int for a float is converted, a bool for an
    # int and a missing argument are refused
    h.d.run_sync(h.call(2, "typed", 1, 2.0, "x"))
    h.d.run_sync(h.call(3, "typed", 1, 2))
    h.call(4, "typed", True, 2.0)
    h.call(5, "typed", 1)
    # Then
    assert h.terminals(2)[0] == (A("ok"), 2, ["int", "float", "x"])
    assert h.terminals(3)[0] == (A("ok"), 3, ["int", "float", "c"])
    assert kind(h.terminals(4)[0]) == "bad_arguments"
    assert "argument 'a' must be int" in h.terminals(4)[0][2]["message"]
    assert kind(h.terminals(5)[0]) == "bad_arguments"


def test_calls_beyond_the_free_slots_queue_and_run_in_arrival_order():
    h = Harness()
    first = h.call(1, "add", 1, 1)
    assert h.call(2, "add", 2, 2) is None  # queued: the one slot is taken
    assert h.call(3, "add", 3, 3) is None
    h.d.run_sync(first)  # runs the queue too
    assert h.terms() == [(A("ok"), 1, 2), (A("ok"), 2, 4), (A("ok"), 3, 6)]
    assert h.d.table.sync_free == 1


def test_run_one_hands_back_the_next_queued_call_with_its_slot():
    h = Harness()
    first = h.call(1, "add", 1, 1)
    h.call(2, "add", 2, 2)
    nxt = h.d.run_one(first)
    assert nxt is not None and nxt.id == 2 and h.d.table.sync_free == 0
    assert h.d.run_one(nxt) is None and h.d.table.sync_free == 1


def test_a_call_cancelled_while_queued_is_answered_at_once_and_skipped():
    h = Harness()
    first = h.call(1, "add", 1, 1)
    h.call(2, "add", 2, 2)
    h.d.handle((CANCEL, 2))
    assert kind(h.terminals(2)[0]) == "cancelled"
    h.d.run_sync(first)
    assert [t[1] for t in h.terms()] == [2, 1]  # call 2 never ran, never answered twice
    assert h.d.table.sync_free == 1


def test_a_duplicate_id_in_flight_is_logged_not_answered():
    # Given call 1 holding its slot
    h = Harness()
    first = h.call(1, "add", 1, 1)
    # When another call claims id 1
    assert h.call(1, "add", 5, 5) is None
    # Then the supervisor hears of it out of band, and call 1 keeps its one terminal
    (log,) = h.terms()
    assert log[0] == "log" and log[3][A("call_id")] == 1
    h.d.run_sync(first)
    assert h.terminals(1) == [(A("ok"), 1, 2)]


def test_calls_past_max_inflight_are_overloaded():
    h = Harness(max_inflight=2)
    first = h.call(1, "add", 1, 1)
    h.call(2, "add", 1, 1)
    assert h.call(3, "add", 1, 1) is None
    assert kind(h.terminals(3)[0]) == "overloaded"
    h.d.run_sync(first)
    assert [kind(h.terminals(i)[0]) for i in (1, 2)] == ["ok", "ok"]


def test_refusals_before_a_call_is_admitted():
    h = Harness()
    assert h.call(1, "nope") is None
    assert h.call(2, "add", 1) is None
    assert h.d.handle((CALL, -1, "add", [], {}, {})) is None
    assert h.d.handle((A("bogus"), 3)) is None
    kinds = [(t[1], t[2]["kind"]) for t in h.terms()]
    assert kinds == [(1, "unknown_method"), (2, "bad_arguments"), (None, "bad_request"),
                     (3, "bad_request")]  # fmt: skip
    assert h.d.table.failed == 4 and h.d.table.calls == {}


def test_an_unencodable_or_oversize_result_ends_the_call_with_unencodable():
    h = Harness(max_frame=200)
    h.d.run_sync(h.call(1, "unencodable"))
    h.d.run_sync(h.call(2, "big"))
    assert [kind(h.terminals(i)[0]) for i in (1, 2)] == ["unencodable", "unencodable"]
    assert h.terminals(2)[0][2]["details"][A("limit")] == 200


def test_a_stream_sends_numbered_chunks_then_its_return_value():
    h = Harness()
    h.d.run_sync(h.call(1, "count", 3))
    assert h.terms() == [(A("chunk"), 1, i, i) for i in range(3)] + [(A("ok"), 1, "done")]


def test_a_stream_waits_for_credit_on_its_own_thread_while_the_dispatcher_goes_on():
    # Given a stream granted one chunk, run on its own thread
    h = Harness(threads=2)
    t = h.run(h.call(1, "count", 3, credit=1))
    end = time.monotonic() + WAIT
    while not h.terms():
        assert time.monotonic() < end
        time.sleep(0.001)
    # When other calls come meanwhile, they are answered
    h.d.run_sync(h.call(2, "add", 1, 1))
    assert h.terminals(2) == [(A("ok"), 2, 2)] and not h.terminals(1)
    # Then credit lets the stream finish
    h.d.handle((CREDIT, 1, 5))
    t.join(WAIT)
    assert [c[2] for c in h.terms() if c[0] == "chunk"] == [0, 1, 2]
    assert h.terminals(1) == [(A("ok"), 1, "done")]


def test_cancel_interrupts_running_pure_python_code():
    h = Harness()
    t = h.run(h.call(1, "spin"))
    assert entered.wait(WAIT)
    h.d.handle((CANCEL, 1))
    t.join(WAIT)
    assert kind(h.wait_terminal(1)) == "cancelled"
    assert h.d.table.calls == {} and h.d.table.sync_free == 1


def test_a_deadline_ends_a_queued_call_with_timeout():
    h = Harness()
    first = h.call(1, "wait")
    h.call(2, "add", 1, 1, timeout_ms=5)
    assert kind(h.wait_terminal(2)) == "timeout"
    gate.set()
    h.d.run_sync(first)
    assert len(h.terminals(2)) == 1 and kind(h.terminals(1)[0]) == "ok"


def test_a_lazy_deadline_is_armed_when_the_transport_says_the_call_lasts():
    h = Harness(lazy_deadlines=True)
    t = h.run(h.call(1, "spin", timeout_ms=5))
    assert entered.wait(WAIT)
    time.sleep(0.02)
    assert not h.terminals(1)  # run in place: its deadline is not armed yet
    h.d.arm_deadlines()
    t.join(WAIT)
    assert kind(h.wait_terminal(1)) == "timeout"


def test_a_cancel_racing_the_terminal_never_makes_a_second_one():
    # Many calls on two threads, each cancelled from a third at a random moment
    h = Harness(threads=2, max_inflight=1000)
    n = 300
    ctxs = [h.call(i, "add", i, i) for i in range(n)]
    runnable = [c for c in ctxs if c is not None]
    runners = [h.run(c) for c in runnable]
    for i in range(0, n, 3):
        h.d.handle((CANCEL, i))
    for t in runners:
        t.join(WAIT)
    for i in range(n):
        got = h.terminals(i)
        assert len(got) == 1, (i, got)
        assert kind(got[0]) in ("ok", "cancelled")
    assert h.d.table.calls == {} and h.d.table.sync_free == 2
    assert h.d.table.served + h.d.table.failed == n


def test_the_context_is_the_calls_own_while_it_runs():
    h = Harness()
    h.d.run_sync(h.call(41, "whoami"))
    assert h.terms() == [(A("ok"), 41, 41)]


def test_health_counts_a_running_call_as_busy():
    h = Harness()
    t = h.run(h.call(1, "wait"))
    assert entered.wait(WAIT)
    h.d.handle((HEALTH, 9))
    report = [t for t in h.terms() if t[0] == "health"][0][2]
    assert report[A("status")] == "busy" and report[A("inflight")] == 1
    gate.set()
    t.join(WAIT)
    assert h.d.health_report()[A("status")] == "healthy"


def test_shutdown_refuses_new_calls_drains_and_says_bye():
    # Given a call running
    h = Harness()
    t = h.run(h.call(1, "wait"))
    assert entered.wait(WAIT)
    # When a shutdown comes with a grace the call fits in
    h.d.handle((SHUTDOWN, 2000))
    assert h.call(2, "add", 1, 1) is None
    assert kind(h.terminals(2)[0]) == "shutting_down"
    gate.set()
    t.join(WAIT)
    # Then the call finishes, :bye follows with the counts, and the transport is told to exit
    assert h.exited.wait(WAIT)
    tag, stats = h.terms()[-1]
    assert tag == "bye" and (stats[A("served")], stats[A("failed")]) == (1, 1)


def test_end_of_input_cancels_what_runs_and_exits():
    h = Harness()
    t = h.run(h.call(1, "spin"))
    assert entered.wait(WAIT)
    h.d.abort()
    t.join(WAIT)
    assert h.exited.is_set() and h.d.aborted
    assert kind(h.terminals(1)[0]) == "cancelled"


def test_an_async_call_is_cancelled_at_its_await():
    h = Harness()
    assert h.call(1, "sleepy") is None  # async calls never take a sync slot
    assert entered.wait(WAIT)
    h.d.handle((CANCEL, 1))
    assert kind(h.wait_terminal(1)) == "cancelled"
    assert h.d.table.sync_free == 1
