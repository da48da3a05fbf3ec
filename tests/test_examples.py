"""Every Python example runs, driven the way its docstring says."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from snakepit_py.errors import CallError
from snakepit_py.testing import FakeSupervisor

EX = ROOT / "examples"


def test_hello_worker_through_the_cli():
    out = subprocess.run(
        [sys.executable, "-m", "snakepit_py", "call", str(EX / "hello_worker.py"), "hello", "Wo"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.stdout == "Hello, Wo!\n"


def test_train_progress_streams_epochs_and_returns_a_summary():
    with FakeSupervisor(str(EX / "train_progress.py")) as sup:
        stream = sup.stream("train", 4, 0.001)
        epochs = list(stream)
        assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
        assert epochs[-1]["loss"] < epochs[0]["loss"]
        assert stream.result == {"model_id": "m-1", "final_loss": epochs[-1]["loss"]}


def test_train_progress_is_cancellable():
    with FakeSupervisor(str(EX / "train_progress.py")) as sup:
        stream = sup.stream("train", 1000, 0.05)
        stream.next_chunk(10)
        t0 = time.monotonic()
        stream.cancel()
        with pytest.raises(CallError) as info:
            list(stream)
        assert info.value.kind == "cancelled"
        assert time.monotonic() - t0 < 2
        assert sup.call("last_run")["run"] == 1  # its finally block ran


def test_train_progress_through_the_cli_prints_json_lines():
    out = subprocess.run(
        [sys.executable, str(EX / "train_progress.py"), "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "--threads" in out.stdout  # snakepit.run() takes the worker options
    out = subprocess.run(
        [sys.executable, "-m", "snakepit_py", "call", str(EX / "train_progress.py"), "train", "2",
         "0.001"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [x.get("epoch") for x in lines[:2]] == [1, 2] and lines[2]["model_id"] == "m-1"


def test_file_lines_streams_per_line_with_credit(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("one two\n\nthree four five\nsix\n")
    with FakeSupervisor(str(EX / "file_lines.py")) as sup:
        stream = sup.stream("word_counts", str(text), credit=1)
        assert stream.next_chunk(5) == {"line": 1, "words": 2}
        with pytest.raises(TimeoutError):
            stream.next_chunk(0.2)  # paced by the consumer
        stream.credit(10)
        assert list(stream) == [{"line": 3, "words": 3}, {"line": 4, "words": 1}]
        assert stream.result == {"lines": 3, "words": 6}
        grep = sup.stream("grep", str(text), "four")
        assert list(grep) == [{"line": 3, "text": "three four five"}] and grep.result == 1


def test_repl_keeps_its_namespace():
    with FakeSupervisor(str(EX / "repl_worker.py")) as sup:
        assert sup.call("run", "x = 21")["error"] is None
        assert sup.call("run", "x * 2")["value"] == "42"
        out = sup.call("run", "print('hi', x)")
        assert out["stdout"] == "hi 21\n"
        assert "ZeroDivisionError" in sup.call("run", "1/0")["error"]
        assert sup.call("names") == ["x"]
