"""The public surface of snakepit_py.testing: two stub supervisors over one shared core."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, worker_path

import snakepit_py.testing as testing
from snakepit_py.errors import CallError
from snakepit_py.testing import FakeSupervisor, GrpcSupervisor, PendingCall, Stream

BASIC = worker_path("basic.py")


def _needs_grpc(cls: type) -> None:
    if cls is GrpcSupervisor:
        pytest.importorskip("grpc")


def test_the_public_names_are_the_two_supervisors_and_their_call_handles():
    assert sorted(testing.__all__) == ["FakeSupervisor", "GrpcSupervisor", "PendingCall", "Stream"]
    for name in testing.__all__:
        assert getattr(testing, name) is not None


def test_importing_testing_does_not_import_grpc():
    code = "import sys, snakepit_py.testing\nprint('grpc' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         cwd=ROOT)  # fmt: skip
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (FakeSupervisor, {}),
        (GrpcSupervisor, {}),
        (FakeSupervisor, {"threads": 2}),
        (GrpcSupervisor, {"threads": 2}),
    ],
)
def test_both_supervisors_make_the_same_round_trip(cls, options):
    # Given the same worker behind each supervisor class, built by its own name
    _needs_grpc(cls)
    with cls(BASIC, **options) as sup:
        assert type(sup) is cls
        # When calls, a stream, an error and the control requests go through
        pending = sup.start_call("add", 1, 2)
        assert isinstance(pending, PendingCall) and pending.wait() == 3
        stream = sup.stream("count", 3, "the end")
        assert isinstance(stream, Stream)
        assert list(stream) == [0, 1, 2] and stream.result == "the end"
        with pytest.raises(CallError) as info:
            sup.call("fail", "nope")
        assert "nope" in str(info.value)
        assert sup.health()["status"] == "healthy"
        assert "add" in {m["name"] for m in sup.describe()["methods"]}
        # Then the pid is the worker's own, as its :ready said
        assert sup.ready["pid"] == sup.pid
    assert sup.proc.returncode is not None


@pytest.mark.parametrize("cls", [FakeSupervisor, GrpcSupervisor])
def test_a_supervisor_class_is_its_transport(cls):
    # No switch: each class builds itself and takes no transport option.
    _needs_grpc(cls)
    with pytest.raises(TypeError):
        cls(BASIC, transport="grpc").start()


def test_the_fixture_refuses_an_unknown_transport_with_what_was_given(snakepit_worker):
    with pytest.raises(ValueError, match="got: 'pigeon'"):
        snakepit_worker(BASIC, transport="pigeon")


def test_the_fixture_takes_the_transport_option(snakepit_worker):
    pytest.importorskip("grpc")
    sup = snakepit_worker(BASIC, transport="grpc")
    assert type(sup) is GrpcSupervisor and sup.call("add", 1, 1) == 2


def _imports(path: Path) -> set[str]:
    """Every snakepit_py module ``path`` imports anywhere (lazily too), as dotted names."""
    package = ".".join(path.relative_to(ROOT).parent.parts)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            mod = ".".join(filter(None, [base, node.module]))
            names |= {mod} | {f"{mod}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_no_two_testing_modules_import_each_other_and_each_is_small():
    paths = [ROOT / "snakepit_py" / "testing.py", *(ROOT / "snakepit_py" / "_testing").glob("*.py")]
    name = {p: ".".join(p.relative_to(ROOT).with_suffix("").parts) for p in paths}
    graph = {name[p]: _imports(p) for p in paths}
    pairs = {(a, b) for a in graph for b in graph if a < b and b in graph[a] and a in graph[b]}
    assert not pairs
    assert {p.name: len(p.read_text().splitlines()) < 400 for p in paths} == {
        p.name: True for p in paths
    }


# --- credit: a stream that used up its grant says so, at once -------------------------------


def test_a_stream_out_of_credit_fails_fast_and_says_so(basic, monkeypatch):
    from snakepit_py._testing import calls

    monkeypatch.setattr(calls, "CREDIT_WAIT_S", 1.0)  # (10 s by default)
    # Given a stream granted 2 chunks, without auto_credit, of a worker that would send 5
    stream = basic.stream("count", 5, credit=2)
    # When the test iterates it to the end
    with pytest.raises(TimeoutError) as info:
        list(stream)
    # Then it fails within the credit wait, not the supervisor's 30 s, and says why
    assert stream.seqs == [0, 1]
    message = str(info.value)
    assert "all 2 chunks of credit" in message and "stream.credit(n)" in message
    assert "auto_credit=True" in message
    # And granting more lets it finish
    stream.credit(10)
    assert list(stream) == [2, 3, 4] and stream.result == "done"


def test_a_stream_that_ends_on_its_last_credited_chunk_ends_normally(basic):
    stream = basic.stream("count", 2, "end", credit=2)
    assert list(stream) == [0, 1] and stream.result == "end"


def test_credit_granted_through_the_supervisor_counts_too(basic):
    stream = basic.stream("count", 3, credit=1)
    assert stream.next_chunk(5.0) == 0
    basic.credit(stream.id, 2)
    assert list(stream) == [1, 2] and stream.call.done()


def test_cancel_takes_the_handle_or_the_id(basic):
    stream = basic.stream("count_forever", credit=0)
    basic.cancel(stream)
    with pytest.raises(CallError) as info:
        list(stream)
    assert info.value.kind == "cancelled"
