"""The snakepit-py command line, the pytest fixture, snakepit.run() and lazy imports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT, worker_path

HELLO = str(ROOT / "examples" / "hello_worker.py")
BASIC = worker_path("basic.py")


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snakepit_py", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )  # fmt: skip


def test_call_prints_the_result():
    out = _cli("call", HELLO, "hello", "World")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Hello, World!\n"
    out = _cli("call", HELLO, "add", "1", "2")
    assert out.stdout == "3\n"


def test_call_parses_json_arguments_and_keywords():
    out = _cli("call", BASIC, "echo", '{"a": [1, 2]}', "--json")
    assert json.loads(out.stdout) == {"a": [1, 2]}
    out = _cli("call", BASIC, "add", "1", "--kw", "b=41")
    assert out.stdout == "42\n"


def test_call_error_shows_traceback_and_exits_1():
    out = _cli("call", BASIC, "fail", "oops")
    assert out.returncode == 1
    assert "error (exception): ValueError: oops" in out.stderr
    assert "Traceback" in out.stderr and "KeyError" in out.stderr


def test_call_hides_the_workers_logs_unless_asked():
    # Given a method that logs at every level
    quiet = _cli("call", BASIC, "log_things")
    assert quiet.returncode == 0 and "line" not in quiet.stderr
    # When --logs is given, Then INFO and up reach stderr (stdout keeps the result alone)
    out = _cli("call", BASIC, "log_things", "--logs")
    assert out.returncode == 0, out.stderr
    assert out.stdout == quiet.stdout
    assert "[worker INFO tests.basic] info line" in out.stderr
    assert "[worker WARNING tests.basic] warning line 42" in out.stderr
    assert "[worker ERROR tests.basic] error line" in out.stderr
    assert "debug line" not in out.stderr
    # And --log-level picks the lowest level shown
    debug = _cli("call", BASIC, "log_things", "--log-level", "debug")
    assert "[worker DEBUG tests.basic] debug line" in debug.stderr
    # And what the worker printed is shown too
    assert "hello from print" in _cli("call", BASIC, "noisy", "--logs").stderr
    assert "hello from print" not in _cli("call", BASIC, "noisy").stderr


def test_call_streams_one_line_per_chunk():
    out = _cli("call", BASIC, "pushed", "3")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert [json.loads(x) for x in lines] == [{"step": 0}, {"step": 1}, {"step": 2}, "pushed"]


def test_call_ctrl_c_cancels_cleanly():
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakepit_py", "call", BASIC, "count_forever"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "0"  # streaming has started
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert "cancelled" in err and "Traceback" not in err


def test_describe_human_and_json():
    out = _cli("describe", BASIC)
    assert "add(a: int, b: int)" in out.stdout and "Add two numbers." in out.stdout
    assert 'count(n: int, result = "done")  [streaming]' in out.stdout
    data = json.loads(_cli("describe", BASIC, "--json").stdout)
    assert {m["name"] for m in data["methods"]} >= {"add", "count"}


def test_worker_without_protocol_fds_explains_itself():
    out = subprocess.run(
        [sys.executable, "-m", "snakepit_py", "worker", HELLO, "--fd", "97,98"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 2 and "not open" in out.stderr


def test_snakepit_run_serves_a_script(tmp_path):
    from snakepit_py.testing import FakeSupervisor

    script = tmp_path / "script_worker.py"
    script.write_text(
        "import snakepit_py as snakepit\n\n@snakepit.method\ndef twice(x: int) -> int:\n"
        "    return 2 * x\n\nif __name__ == '__main__':\n    snakepit.run()\n"
    )
    # FakeSupervisor runs `python -m snakepit_py worker`; run() must work as a plain script too.
    r, w = os.pipe()
    r2, w2 = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, str(script), "--fd", f"{r},{w2}", "--worker-id", "scripted"],
        pass_fds=(r, w2),
    )  # fmt: skip
    os.close(r)
    os.close(w2)
    from snakepit_py.codec import etf

    def read():
        size = int.from_bytes(os.read(r2, 4), "big")
        return etf.decode(os.read(r2, size))

    ready = read()
    assert ready[0] == "ready" and ready[1]["worker_id"] == "scripted"
    frame = etf.encode((etf.Atom("call"), 1, "twice", [21], {}, {}))
    os.write(w, len(frame).to_bytes(4, "big") + frame)
    assert read() == ("ok", 1, 42)
    os.close(w)
    assert proc.wait(5) == 0
    os.close(r2)
    assert FakeSupervisor  # the same protocol FakeSupervisor speaks


def test_worker_args_after_double_dash(tmp_path):
    from snakepit_py.testing import FakeSupervisor

    script = tmp_path / "args_worker.py"
    script.write_text(
        "import snakepit_py as snakepit\n\n@snakepit.method\ndef args():\n"
        "    return snakepit.worker_args()\n"
    )
    with FakeSupervisor(str(script), worker_args=["--model", "gpt2"]) as sup:
        assert sup.call("args") == ["--model", "gpt2"]


def test_pytest_fixture(snakepit_worker):
    sup = snakepit_worker(HELLO)
    assert sup.call("hello", "pytest") == "Hello, pytest!"


def test_importing_and_serving_never_loads_grpc_ray_numpy_or_asyncio():
    code = (
        "import sys, snakepit_py, snakepit_py.cli, snakepit_py._server, snakepit_py.testing\n"
        "from snakepit_py._registry import load_target\n"
        f"load_target({HELLO!r})\n"
        "bad = [m for m in ('grpc', 'ray', 'numpy', 'asyncio', 'google.protobuf', 'msgpack')"
        " if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "[]", out.stderr


def test_a_serving_worker_has_not_loaded_what_it_does_not_use(tmp_path):
    # Start-up cost: argparse, logging, asyncio and typing load only when something uses them.
    from snakepit_py.testing import FakeSupervisor

    script = tmp_path / "lean_worker.py"
    script.write_text(
        "import sys\nimport snakepit_py as snakepit\n\n@snakepit.method\ndef loaded(names):\n"
        "    return [n for n in names if n in sys.modules]\n"
    )
    # (a worker measured by coverage.py loads what coverage needs: this one is left unmeasured)
    unmeasured = {"COVERAGE_PROCESS_CONFIG": "", "COVERAGE_PROCESS_START": ""}
    with FakeSupervisor(str(script), env=unmeasured) as sup:
        assert sup.call("loaded", ["argparse", "logging", "asyncio", "typing", "grpc"]) == []


def test_logging_imported_late_is_still_forwarded(tmp_path):
    from snakepit_py.testing import FakeSupervisor

    script = tmp_path / "late_logging_worker.py"
    script.write_text(
        "import snakepit_py as snakepit\n\n@snakepit.method\ndef warn():\n"
        "    import logging\n    logging.getLogger('late').warning('imported late')\n"
        "    return 'ok'\n"
    )
    with FakeSupervisor(str(script)) as sup:
        assert sup.call("warn") == "ok"
        sup.wait_for(lambda: any(m[2] == "imported late" for m in sup.logs))
        assert sup.logs[0][3]["logger"] == "late" and sup.logs[0][1] == "warning"
