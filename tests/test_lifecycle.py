"""Lifecycle guarantees (docs/protocol.md §6): end of input, SIGTERM, :shutdown, SIGINT."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import pid_alive, worker_path

from snakepit_py.errors import CallError
from snakepit_py.testing import FakeSupervisor


def _wait_gone(pid: int, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not pid_alive(pid):
            return True
        time.sleep(0.01)
    return not pid_alive(pid)


def test_end_of_input_exits_within_a_second_with_a_call_running():
    sup = FakeSupervisor(worker_path("basic.py")).start()
    sup.start_call("busy", 60)
    time.sleep(0.1)
    t0 = time.monotonic()
    code = sup.close(timeout=5)
    assert time.monotonic() - t0 < 1.0
    assert code == 0


def test_end_of_input_takes_a_child_that_ignores_sigterm(reap_pids):
    # Given a worker whose child ignores SIGTERM
    sup = FakeSupervisor(worker_path("basic.py")).start()
    child = sup.call("spawn_stubborn_child")
    reap_pids.append(child)
    assert pid_alive(child)
    # When the supervisor closes the port
    t0 = time.monotonic()
    sup.close(timeout=5)
    # Then the worker and its child are gone within a second
    assert _wait_gone(child, 1.0 - (time.monotonic() - t0) + 0.05)
    assert time.monotonic() - t0 < 1.0


def test_end_of_input_takes_an_orphaned_grandchild(reap_pids):
    sup = FakeSupervisor(worker_path("basic.py")).start()
    grandchild = sup.call("spawn_grandchild")
    reap_pids.append(grandchild)
    assert pid_alive(grandchild)
    sup.close(timeout=5)
    assert _wait_gone(grandchild, 1.0)


def test_shutdown_drains_then_says_bye_and_exits_zero():
    sup = FakeSupervisor(worker_path("basic.py")).start()
    running = sup.start_call("sleep", 0.3)
    time.sleep(0.05)
    sup.send_term((__import__("snakepit_py").Atom("shutdown"), 5000))
    time.sleep(0.05)
    # New calls are refused while draining...
    with pytest.raises(CallError) as info:
        sup.call("add", 1, 2)
    assert info.value.kind == "shutting_down"
    # ...the running one finishes...
    assert running.wait() == "slept"
    assert sup.proc.wait(5) == 0
    sup.close()
    # ...and :bye is the last frame, with the stats.
    assert sup.bye is not None
    assert sup.bye["served"] >= 1 and sup.bye["failed"] >= 1 and sup.bye["uptime_ms"] >= 0


def test_health_reports_draining():
    sup = FakeSupervisor(worker_path("basic.py")).start()
    sup.start_call("sleep", 0.5)
    sup.send_term((__import__("snakepit_py").Atom("shutdown"), 5000))
    assert sup.health()["status"] == "draining"
    sup.proc.wait(5)
    sup.close()


def test_shutdown_grace_running_out_cancels_with_reason_shutdown():
    sup = FakeSupervisor(worker_path("basic.py")).start()
    call = sup.start_call("busy", 60)
    time.sleep(0.05)
    bye = sup.shutdown(grace_ms=100)
    with pytest.raises(CallError) as info:
        call.wait(1)
    assert info.value.kind == "cancelled" and info.value.details["reason"] == "shutdown"
    assert bye is not None and sup.proc.returncode == 0


def test_sigterm_behaves_like_shutdown():
    sup = FakeSupervisor(worker_path("basic.py")).start()
    call = sup.start_call("sleep", 0.3)
    time.sleep(0.05)
    os.kill(sup.pid, signal.SIGTERM)
    assert call.wait() == "slept"
    assert sup.proc.wait(5) == 0
    sup.close()
    assert sup.bye is not None


def test_sigint_is_ignored():
    with FakeSupervisor(worker_path("basic.py")) as sup:
        os.kill(sup.pid, signal.SIGINT)
        time.sleep(0.1)
        assert sup.call("add", 1, 2) == 3


def test_a_worker_that_fails_to_import_exits_with_its_traceback(tmp_path):
    bad = tmp_path / "bad_worker.py"
    bad.write_text("import snakepit_py\nraise RuntimeError('cannot start')\n")
    sup = FakeSupervisor(str(bad), ready_timeout=10)
    with pytest.raises(Exception) as info:
        sup.start()
    assert "RuntimeError: cannot start" in str(info.value)


def test_prints_at_import_time_do_not_corrupt_the_stream(tmp_path):
    noisy = tmp_path / "noisy_worker.py"
    noisy.write_text(
        "import os, snakepit_py\nprint('import-time noise')\n"
        "os.write(1, b'\\x00\\x00\\x00\\x01!')\n"
        "@snakepit_py.method\ndef ok():\n    return 'ok'\n"
    )
    with FakeSupervisor(str(noisy)) as sup:
        assert sup.call("ok") == "ok"
    assert "import-time noise" in sup.output()


def test_heap_tuning_can_be_turned_off():
    from snakepit_py import _lifecycle

    assert _lifecycle.keep_heap_memory() in (True, False)  # glibc or not: never raises
    os.environ["SNAKEPIT_MALLOC_TUNING"] = "0"
    try:
        assert _lifecycle.keep_heap_memory() is False
    finally:
        del os.environ["SNAKEPIT_MALLOC_TUNING"]


def test_a_worker_whose_reader_fails_exits_instead_of_going_deaf():
    # Given a worker whose refusal path raises (a bug in the runtime itself)
    sup = FakeSupervisor(worker_path("broken_runtime.py")).start()
    assert sup.call("add", 1, 2) == 3
    # When a frame makes the reading thread fail
    sup.send_raw(b"\x00garbage")
    # Then the worker exits with EX_SOFTWARE and says why, so its supervisor restarts it
    assert sup.proc.wait(5) == 70
    sup.close()
    assert "a reading thread failed" in sup.output()
    assert "bad_request is broken on purpose" in sup.output()


def test_the_runtime_threads_take_the_hooks_set_for_new_threads(tmp_path):
    # Given a worker that sets a trace hook for new threads (as a debugger,
    # a profiler or coverage.py does) when it is imported
    script = tmp_path / "traced_worker.py"
    script.write_text(
        "import threading\nimport snakepit_py as snakepit\n\nSEEN = []\n\n"
        "def tracer(frame, event, arg):\n"
        "    if event == 'call' and frame.f_code.co_name == 'probe':\n"
        "        SEEN.append(1)\n\n"
        "threading.settrace(tracer)\n\n"
        "@snakepit.method\ndef probe():\n    return 'probed'\n\n"
        "@snakepit.method\ndef seen():\n    return len(SEEN)\n"
    )
    # When a call runs (in place, on a reading thread the runtime started with _thread)
    with FakeSupervisor(str(script)) as sup:
        assert sup.call("probe") == "probed"
        # Then the hook saw it, as it would in a threading.Thread
        assert sup.call("seen") >= 1


def test_ready_means_ready_the_first_call_waits_for_no_set_up(tmp_path):
    # Given a worker whose methods are annotated, as real ones are
    target = tmp_path / "annotated_worker.py"
    target.write_text(
        "import sys\n"
        "import snakepit_py as snakepit\n\n"
        "BEFORE = set(sys.modules)  # (coverage, when it runs the tests, imports inspect)\n\n"
        "@snakepit.method\n"
        "def late_imports(a: int, b: str = 'x') -> list:\n"
        "    return [m for m in ('inspect', 'ctypes') if m in sys.modules and m not in BEFORE]\n\n"
        "@snakepit.method\n"
        "def subreaper() -> int:\n"
        "    import ctypes\n"
        "    flag = ctypes.c_int(0)\n"
        "    ctypes.CDLL(None).prctl(37, ctypes.byref(flag), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER\n"
        "    return flag.value\n"
    )
    sup = FakeSupervisor(str(target)).start()
    try:
        # When its first call comes right after :ready
        # Then binding it imported nothing (no inspect) and no set-up ran on it (no ctypes)
        assert sup.call("late_imports", 1) == []
        # And the worker became a subreaper before :ready (C process controls)
        from snakepit_py._lifecycle import c_controls

        if c_controls() is not None and os.uname().sysname == "Linux":
            assert sup.call("subreaper") == 1
    finally:
        sup.close()


def test_a_worker_told_to_stop_as_it_starts_starts_every_thread_cleanly(tmp_path):
    # Given workers that import nothing (so shutdown is the first to import
    # `threading`, while the reading threads are still starting), whose input
    # ends right after :ready
    import subprocess
    import sys

    from snakepit_py.codec import etf

    target = tmp_path / "bare_worker.py"
    target.write_text("def add(a, b):\n    return a + b\n")
    for _ in range(10):
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        proc = subprocess.Popen(
            [sys.executable, "-m", "snakepit_py", "worker", str(target),
             "--fd", f"{to_r},{from_w}"],
            pass_fds=(to_r, from_w), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        os.close(to_r)
        os.close(from_w)
        head = os.read(from_r, 4)
        ready = etf.decode(os.read(from_r, int.from_bytes(head, "big")))
        assert ready[0] == "ready"
        # When the input ends at once
        os.close(to_w)
        _, err = proc.communicate(timeout=10)
        os.close(from_r)
        # Then it exits cleanly, no thread of it having died on a half-imported module
        assert proc.returncode == 0
        assert b"Exception ignored" not in err, err.decode(errors="replace")


@pytest.mark.parametrize("pure", [False, True])
def test_ready_and_health_say_which_c_accelerators_are_in_use(pure):
    import importlib.util

    from snakepit_py._health import _ACCELERATORS

    built = {what: importlib.util.find_spec(module) is not None for what, module in _ACCELERATORS}
    env = {"SNAKEPIT_PY_PURE": "1"} if pure else {}
    with FakeSupervisor(worker_path("basic.py"), env=env) as sup:
        assert sup.ready is not None
        ready = sup.ready["accelerators"]
        assert set(ready) == {"codec", "process_controls", "metrics"}
        assert ready == sup.health()["accelerators"]
        # the codec runs in pure Python when told to; the rest as built
        assert ready["codec"] is (False if pure else built["codec"])
        assert ready["process_controls"] is built["process_controls"]
