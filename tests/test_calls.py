"""Plain calls over the real protocol: results, every error kind, health, describe, events, logs."""

from __future__ import annotations

import time

import pytest
from conftest import worker_path

from snakepit_py import Atom
from snakepit_py.errors import CallError
from snakepit_py.testing import FakeSupervisor


def _error(fn, *args, **kwargs) -> CallError:
    with pytest.raises(CallError) as info:
        fn(*args, **kwargs)
    return info.value


def test_ready_info(basic):
    info = basic.ready
    assert info["protocol"] == 1
    assert info["pid"] == basic.pid
    assert info["worker_id"] == str(basic.pid)
    assert info["threads"] == 1 and info["max_inflight"] == 64
    assert "add" in info["methods"] and "_private" not in info["methods"]
    assert isinstance(info["python"], str) and isinstance(info["version"], str)


def test_call_positional_and_keyword(basic):
    assert basic.call("add", 1, 2) == 3
    assert basic.call("add", 1, kwargs={"b": 41}) == 42
    assert basic.call("scale", 3) == 6.0
    assert basic.call("concat", "a", "b", "c", kwargs={"sep": "-"}) == "a-b-c"


def test_kwargs_with_atom_keys_are_accepted(basic):
    assert basic.call("add", kwargs={Atom("a"): 1, Atom("b"): 2}) == 3


def test_echo_keeps_terms(basic):
    value = {"a": [1, 2.5, None, True], "b": (1, "x"), 3: b"\xff\x00", "big": 2**80}
    assert basic.call("echo", value) == value


def test_bytes_annotation_gets_bytes_even_for_utf8(basic):
    assert basic.call("raw", "hello") == {"type": "bytes", "len": 5}


def test_str_annotation_refuses_non_utf8(basic):
    err = _error(basic.call, "text", b"\xff\xfe")
    assert err.kind == "bad_arguments"
    assert "not valid UTF-8" in err.message


def test_exception_carries_type_message_and_chained_traceback(basic):
    err = _error(basic.call, "fail", "bad input")
    assert err.kind == "exception" and err.type == "ValueError" and err.message == "bad input"
    assert "KeyError: 'inner'" in err.traceback
    assert "direct cause" in err.traceback
    assert "raise ValueError(message) from exc" in err.traceback
    assert "_dispatcher.py" not in err.traceback  # the runtime's frames are left out
    assert basic.call("add", 1, 1) == 2  # and the worker keeps serving


def test_exception_details_attribute_is_carried(basic):
    err = _error(basic.call, "fail_with_details")
    assert err.kind == "exception" and err.type == "LookupError"
    assert err.details == {"known": ["a", "b"]}


def test_children_do_not_inherit_an_ignored_sigint(basic):
    # SIGINT is ignored by a handler, not SIG_IGN, so child processes get the default.
    assert "default_int_handler" in basic.call("child_sigint_disposition")


def test_system_exit_in_user_code_does_not_end_the_worker(basic):
    err = _error(basic.call, "exit_please")
    assert err.kind == "exception" and err.type == "SystemExit"
    assert basic.call("add", 2, 2) == 4


def test_unknown_method_lists_known(basic):
    err = _error(basic.call, "nope")
    assert err.kind == "unknown_method"
    assert "add" in err.details["known"]


def test_private_method_is_unknown(basic):
    err = _error(basic.call, "_private")
    assert err.kind == "unknown_method"


def test_bad_arguments_show_the_signature(basic):
    err = _error(basic.call, "add", 1)
    assert err.kind == "bad_arguments"
    assert err.details["signature"] == "add(a: int, b: int) -> int"
    err = _error(basic.call, "add", "1", 2)
    assert err.kind == "bad_arguments" and "must be int" in err.message


def test_unencodable_result_names_the_type(basic):
    err = _error(basic.call, "unencodable")
    assert err.kind == "unencodable"
    assert "object" in err.message
    assert basic.call("add", 1, 2) == 3


def test_async_methods(basic):
    assert basic.call("async_add", 20, 22) == 42
    err = _error(basic.call, "async_fail")
    assert err.kind == "exception" and err.type == "RuntimeError" and err.message == "async boom"


def test_worker_side_timeout(basic):
    err = _error(basic.call, "sleep", 5.0, timeout_ms=100)
    assert err.kind == "timeout"
    assert basic.call("add", 1, 2) == 3


def test_decorator_timeout_applies_without_timeout_ms(basic):
    t0 = time.monotonic()
    err = _error(basic.call, "limited_busy")
    assert err.kind == "timeout"
    assert time.monotonic() - t0 < 4


def test_current_call_context(basic):
    ctx = basic.call("context", meta={"trace": "abc"}, timeout_ms=5000)
    assert ctx["method"] == "context" and ctx["meta"] == {"trace": "abc"}
    assert ctx["has_deadline"] is True and isinstance(ctx["id"], int)
    assert basic.call("context")["meta"] == {}


def test_current_call_follows_the_context_handed_on(basic):
    # asyncio.to_thread and contextvars.copy_context().run carry the call along
    pending = basic.start_call("context_handed_on")
    assert pending.wait(10) == [pending.id, pending.id]


def test_health_and_describe_answer_while_every_slot_is_busy(basic):
    slow = basic.start_call("sleep", 1.0)
    time.sleep(0.1)
    t0 = time.monotonic()
    report = basic.health()
    assert time.monotonic() - t0 < 0.5
    assert report["status"] == "busy" and report["inflight"] == 1
    assert basic.describe()["methods"]
    assert slow.wait() == "slept"
    assert basic.health()["status"] == "healthy"


def test_health_report_fields_and_hook(basic):
    basic.call("load_model", "gpt2")
    report = basic.health()
    for key in ("status", "worker_id", "pid", "uptime_ms", "memory_mb", "inflight", "served",
                "failed", "loaded_models", "extra"):  # fmt: skip
        assert key in report
    assert report["loaded_models"] == ["gpt2"]
    assert report["extra"] == {"gpu": "none"}
    assert report["pid"] == basic.pid and report["served"] >= 1


def test_report_loaded_pushes_an_event(basic):
    basic.call("load_model", "bert")
    basic.wait_for(lambda: any(e[1] == "loaded_models" and "bert" in e[2] for e in basic.events))


def test_publish_pushes_an_event(basic):
    basic.call("publish", "progress", {"pct": 50})
    basic.wait_for(lambda: ("event", "progress", {"pct": 50}) in basic.events)


def test_describe_catalogue(basic):
    methods = {m["name"]: m for m in basic.describe()["methods"]}
    add = methods["add"]
    assert add["doc"] == "Add two numbers." and add["streaming"] is False
    assert [p["name"] for p in add["params"]] == ["a", "b"]
    assert add["params"][0] == {
        "name": "a", "kind": "positional_or_keyword", "required": True,
        "default": None, "annotation": "int", "type": "integer()",
    }  # fmt: skip
    assert methods["count"]["streaming"] is True
    assert methods["async_add"]["async"] is True
    assert methods["limited"]["timeout_ms"] == 200
    assert methods["pushed"]["streaming"] is True


def test_logging_is_forwarded_at_warning_and_up(basic):
    basic.logs.clear()
    basic.call("log_things")
    basic.wait_for(lambda: len(basic.logs) >= 2)
    levels = [m[1] for m in basic.logs]
    assert levels == ["warning", "error"]
    _, _, message, meta = basic.logs[0]
    assert message == "warning line 42"
    assert meta["logger"] == "tests.basic" and isinstance(meta["call_id"], int)


def test_log_level_option():
    with FakeSupervisor(worker_path("basic.py"), extra_args=["--log-level", "DEBUG"]) as sup:
        sup.call("log_things")
        ours = lambda: [m for m in sup.logs if m[3]["logger"] == "tests.basic"]  # noqa: E731
        sup.wait_for(lambda: len(ours()) >= 4)
        assert [m[1] for m in ours()] == ["debug", "info", "warning", "error"]


def test_prints_and_fd1_writes_do_not_corrupt_frames(basic):
    assert basic.call("noisy") == "quiet result"
    assert basic.call("add", 1, 2) == 3


def test_stdio_mode_keeps_fd1_writes_out_of_the_stream(tmp_path):
    # Given a worker speaking the protocol on fds 0/1
    import subprocess
    import sys

    from snakepit_py.codec import etf

    proc = subprocess.Popen(
        [sys.executable, "-m", "snakepit_py", "worker", worker_path("basic.py"), "--stdio"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip

    def read_frame():
        size = int.from_bytes(proc.stdout.read(4), "big")
        return etf.decode(proc.stdout.read(size))

    def send(term):
        data = etf.encode(term)
        proc.stdin.write(len(data).to_bytes(4, "big") + data)
        proc.stdin.flush()

    try:
        assert read_frame()[0] == "ready"
        # When user code prints and writes to fd 1 directly (as a C extension would)
        send((Atom("call"), 1, "noisy", [], {}, {}))
        # Then the next frame is still the call's result, and the noise went to stderr
        assert read_frame() == ("ok", 1, "quiet result")
        send((Atom("call"), 2, "add", [1, 2], {}, {}))
        assert read_frame() == ("ok", 2, 3)
    finally:
        _, err = proc.communicate(timeout=5)  # closes stdin: end of input
    assert b"hello from print" in err and b"junk from os.write(1)" in err
    assert proc.returncode == 0


def test_overloaded_when_max_inflight_reached():
    with FakeSupervisor(worker_path("basic.py"), max_inflight=2) as sup:
        a = sup.start_call("sleep", 0.5)
        b = sup.start_call("sleep", 0.5)
        err = _error(sup.call, "add", 1, 2)
        assert err.kind == "overloaded"
        assert a.wait() == "slept" and b.wait() == "slept"
        assert sup.call("add", 1, 2) == 3


def test_threads_option_runs_sync_calls_at_once():
    with FakeSupervisor(worker_path("basic.py"), threads=3) as sup:
        assert sup.ready["threads"] == 3
        t0 = time.monotonic()
        calls = [sup.start_call("block", 0.5) for _ in range(3)]
        assert [c.wait() for c in calls] == ["blocked"] * 3
        assert time.monotonic() - t0 < 1.4  # serial would take 1.5 s


def test_sync_calls_run_in_arrival_order_with_one_thread(basic):
    calls = [basic.start_call("echo", i) for i in range(20)]
    assert [c.wait() for c in calls] == list(range(20))


def test_async_calls_do_not_wait_behind_sync_calls(basic):
    slow = basic.start_call("sleep", 0.8)
    time.sleep(0.05)
    t0 = time.monotonic()
    assert basic.call("async_add", 1, 2) == 3
    assert time.monotonic() - t0 < 0.5
    slow.wait()


def test_msgpack_codec():
    pytest.importorskip("msgpack")
    with FakeSupervisor(worker_path("basic.py"), codec="msgpack") as sup:
        assert sup.ready["protocol"] == 1
        assert sup.call("add", 1, 2) == 3
        assert sup.call("echo", {"t": (1, 2), "b": b"\xff"}) == {"t": (1, 2), "b": b"\xff"}
        err = _error(sup.call, "fail")
        assert err.kind == "exception"
        assert list(sup.stream("count", 3)) == [0, 1, 2]
