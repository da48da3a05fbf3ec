"""docs/troubleshooting.md quotes the errors users hit: each test here triggers one the
Python side produces and checks that what the user sees matches the doc's message under
that heading (``…`` in a message stands for the part that varies). The harness's own
messages are triggered by elixir_harness/test/snakepit/troubleshooting_test.exs; the last
test checks that every message in the doc is covered by one or the other."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, worker_path

import snakepit_py as snakepit
from snakepit_py.errors import CallError, ProtocolError
from snakepit_py.testing import FakeSupervisor

DOC = ROOT / "docs" / "troubleshooting.md"
EXUNIT = ROOT / "elixir_harness" / "test" / "snakepit" / "troubleshooting_test.exs"


def doc_messages() -> dict[str, str]:
    """Each ``### heading`` of the doc -> the first ```text block under it."""
    messages: dict[str, str] = {}
    heading: str | None = None
    block: list[str] | None = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if block is not None:
            if line == "```":
                if heading is not None:
                    messages.setdefault(heading, "\n".join(block))
                heading, block = None, None
            else:
                block.append(line)
        elif line.startswith("### "):
            heading = line[4:].strip()
        elif line.startswith("#"):
            heading = None
        elif line == "```text":
            block = []
    return messages


MESSAGES = doc_messages()


def pattern(heading: str) -> re.Pattern[str]:
    """The doc's message for ``heading`` as a regex (``…`` matches anything)."""
    assert heading in MESSAGES, f"no ```text block under '### {heading}' in {DOC}"
    return re.compile("[\\s\\S]*?".join(re.escape(part) for part in MESSAGES[heading].split("…")))


def assert_shown(heading: str, seen: str) -> None:
    """The message the doc gives under ``heading`` appears in ``seen``."""
    assert pattern(heading).search(seen), (
        f'docs/troubleshooting.md, "{heading}":\n{MESSAGES[heading]}\n\nnot in:\n{seen}'
    )


WORKER = """
import time

import snakepit_py


@snakepit_py.method
def add(a: int, b: int) -> int:
    return a + b


@snakepit_py.method
def spin():
    while True:  # (short sleeps: a cancel or a deadline interrupts it between two)
        time.sleep(0.01)


@snakepit_py.method
def stuck():
    time.sleep(3)  # (one long sleep: an interrupt lands only after it)


@snakepit_py.method
def weird():
    return object()


@snakepit_py.method
def big(n: int) -> bytes:
    return b"x" * n


@snakepit_py.method
def count(n: int):
    yield from range(n)


@snakepit_py.method
def die():
    import os

    os._exit(3)
"""

FILES = {
    "w.py": WORKER,
    "broken.py": "import a_module_that_is_not_installed\n",
    "empty.py": "def helper():\n    return 1\n",
    "needsargs.py": (
        "class Model:\n    def __init__(self, path):\n        self.path = path\n\n"
        "    def predict(self, x):\n        return x\n"
    ),
    "twoclasses.py": (
        "import snakepit_py\n\n\nclass A:\n    @snakepit_py.method\n    def a(self):\n"
        "        return 1\n\n\nclass B:\n    @snakepit_py.method\n    def b(self):\n"
        "        return 2\n"
    ),
    # a Python without Ray, as far as the Ray proxy can tell
    "noray/ray.py": "raise ImportError('Ray is not installed here')\n",
}


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("troubleshooting")
    for name, text in FILES.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def cli(folder: Path, *args: str, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``snakepit-py ARGS`` run in ``folder``, as a user would."""
    extra = dict(env or {})
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra.pop("PYTHONPATH", ""), str(ROOT)]))
    full_env.update(extra)
    return subprocess.run(
        [sys.executable, "-m", "snakepit_py", *args],
        capture_output=True, text=True, timeout=timeout, cwd=folder, env=full_env,
    )  # fmt: skip


def free_address() -> str:
    """An address nothing listens on (a port the kernel just handed out, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


# --- starting a worker ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heading", "target"),
    [
        ("The worker file is not found", "nofile.py"),
        ("The worker fails to import", "broken.py"),
        ("`module:Attr` names nothing", "w:Nope"),
        ("The worker's class takes arguments", "needsargs.py"),
        ("Several classes with methods", "twoclasses.py"),
    ],
)
def test_a_worker_that_cannot_load(workers: Path, heading: str, target: str) -> None:
    out = cli(workers, "call", target, "add", "1", "2")
    assert out.returncode == 1
    assert_shown(heading, out.stderr)
    assert_shown(
        "`snakepit-py call` or `FakeSupervisor`: the worker did not become ready", out.stderr
    )
    assert "Traceback" not in out.stderr.split("its output:")[0]  # the CLI's own: none


def test_fake_supervisor_says_the_worker_did_not_become_ready(workers: Path) -> None:
    with pytest.raises(ProtocolError) as info:
        FakeSupervisor(str(workers / "nofile.py")).start()
    assert_shown(
        "`snakepit-py call` or `FakeSupervisor`: the worker did not become ready", str(info.value)
    )
    assert_shown("The worker file is not found", str(info.value))


def test_no_methods_registered(workers: Path) -> None:
    out = cli(workers, "call", "empty.py", "helper")
    assert out.returncode == 1
    assert_shown("No methods registered", out.stderr)


# --- calls ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heading", "call"),
    [
        ("Unknown method", ["nope"]),
        ("Bad arguments", ["add", "1"]),
        ("Bad arguments", ["add", "1", "x"]),
        ("A call ran past its deadline", ["spin", "--timeout", "0.5"]),
        ("A result that cannot be encoded", ["weird"]),
        ("The worker exited before answering (test clients)", ["die"]),
    ],
)
def test_a_call_error_from_the_cli(workers: Path, heading: str, call: list[str]) -> None:
    out = cli(workers, "call", "w.py", *call)
    assert out.returncode == 1
    assert_shown(heading, out.stderr)


def test_frames_over_max_frame(workers: Path) -> None:
    with FakeSupervisor(str(workers / "w.py"), max_frame=10_000) as sup:
        with pytest.raises(CallError) as info:
            sup.call("big", 20_000)
        assert info.value.kind == "unencodable"
        assert_shown("A result over `--max-frame`", str(info.value))
        with pytest.raises(CallError) as info:
            sup.call("add", "x" * 20_000, 1)
        assert info.value.kind == "bad_request"
        assert_shown("A request over `--max-frame`", str(info.value))
        assert sup.call("add", 1, 2) == 3  # and the worker goes on


def test_too_many_calls_in_flight(workers: Path) -> None:
    with FakeSupervisor(str(workers / "w.py"), max_inflight=1) as sup:
        spinning = sup.start_call("spin")
        with pytest.raises(CallError) as info:
            sup.call("add", 1, 2)
        assert info.value.kind == "overloaded"
        assert_shown("Too many calls in flight", str(info.value))
        sup.cancel(spinning)
        with pytest.raises(CallError):
            spinning.wait(60)


@pytest.mark.slow
def test_a_stream_out_of_credit(workers: Path) -> None:
    with FakeSupervisor(str(workers / "w.py")) as sup:
        stream = sup.stream("count", 5, credit=2)
        with pytest.raises(TimeoutError) as info:
            list(stream)
        assert_shown("A stream stops: out of credit", str(info.value))
        stream.cancel()  # (it holds the worker's only sync thread, waiting for credit)
        with pytest.raises(CallError):
            list(stream)
        # the fix: auto_credit
        assert list(sup.stream("count", 5, credit=2, auto_credit=True)) == [0, 1, 2, 3, 4]


def test_a_call_back_that_would_deadlock() -> None:
    box: dict[str, FakeSupervisor] = {}

    def echo_back(x: object) -> object:  # the BEAM function, calling back into the worker
        sup = box["sup"]
        opts = {snakepit.Atom("beam_call"): sup.beam_calls[-1]["ref"]}
        cid = sup.next_id()
        pending = sup.expect(cid)
        sup.send_term((snakepit.Atom("call"), cid, "echo", [x], {}, opts))
        try:
            return pending.wait(60)
        except CallError as exc:
            raise RuntimeError(f"{exc.kind}: {exc.message}") from None

    with FakeSupervisor(
        worker_path("beam_caller.py"), beam_functions={"echo_back": echo_back}
    ) as s:
        box["sup"] = s
        error = s.call("ask_error", "echo_back", 5)
        assert error["message"].startswith("would_deadlock: ")
        assert_shown("A call back into the worker would deadlock", error["message"])


# --- gRPC -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grpc_worker(workers: Path) -> Iterator[object]:
    pytest.importorskip("grpc")
    from snakepit_py.testing import GrpcSupervisor

    with GrpcSupervisor(str(workers / "w.py"), token="s3cret", threads=2) as sup:
        yield sup


def test_a_bad_or_missing_token(grpc_worker: object) -> None:
    from snakepit_py.client import GrpcClient
    from snakepit_py.errors import TransportError

    for token in ("wrong", None):
        with GrpcClient(grpc_worker.address, token=token) as client:  # type: ignore[attr-defined]
            with pytest.raises(TransportError) as info:
                client.call("add", 1, 2, timeout=60)
        assert info.value.status == "UNAUTHENTICATED"
        assert_shown("A bad or missing token", str(info.value))


def test_the_rpc_deadline_passed(grpc_worker: object) -> None:
    from snakepit_py.client import GrpcClient

    with GrpcClient(grpc_worker.address, token="s3cret") as client:  # type: ignore[attr-defined]
        with pytest.raises(CallError) as info:
            # (the worker's own deadline is the RPC's: with a method it interrupts at
            # once, the two race; one it cannot interrupt for 3 s loses the race)
            client.start_call("stuck", timeout=0.5).wait(60)
        assert info.value.kind == "timeout"
        assert_shown("The RPC's deadline passed", str(info.value))
        assert client.call("add", 1, 2, timeout=60) == 3


def test_an_unreachable_worker(workers: Path) -> None:
    pytest.importorskip("grpc")
    from snakepit_py.client import GrpcClient
    from snakepit_py.errors import TransportError

    address = free_address()
    with GrpcClient(address) as client:
        with pytest.raises(TransportError) as info:
            client.call("add", 1, 2, timeout=60)
        assert_shown("The worker is unreachable", str(info.value))
        with pytest.raises(TimeoutError) as timed_out:
            client.wait_ready(1)
        assert_shown("`GrpcClient.wait_ready` times out", str(timed_out.value))
    out = cli(workers, "health", address, "--timeout", "30")
    assert out.returncode == 1
    assert_shown("`snakepit-py health` fails", out.stderr)


# --- Ray, the accelerator -------------------------------------------------------------------


def test_ray_is_not_installed(workers: Path) -> None:
    out = cli(
        workers, "call", "snakepit_py.ray_proxy:RayProxy", "health_check",
        "--", "--ray-address", "local",
        env={"PYTHONPATH": str(workers / "noray")},
    )  # fmt: skip
    assert out.returncode == 1
    assert_shown("Ray is not installed", out.stderr)
    assert_shown("The proxy cannot connect to Ray", out.stderr)


def test_the_c_accelerator_not_in_use(workers: Path) -> None:
    out = cli(workers, "doctor", env={"SNAKEPIT_PY_PURE": "1"})
    assert out.returncode == 0
    assert_shown("The C accelerator is not in use", out.stdout)


# --- every message is covered ---------------------------------------------------------------


def test_every_message_in_the_doc_is_covered_by_a_test() -> None:
    # A heading is covered when a test names it: a string literal in this file (passed to
    # assert_shown directly or through parametrize) or in the ExUnit file's assert_shown.
    literal = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
    here = set(literal.findall(Path(__file__).read_text(encoding="utf-8"))) & set(MESSAGES)
    shown = re.compile(r'assert_shown\(\s*"((?:[^"\\]|\\.)*)"')
    there = set(shown.findall(EXUNIT.read_text(encoding="utf-8")))
    assert not there - set(MESSAGES), f"the ExUnit test names headings the doc lacks: {there}"
    assert here | there >= set(MESSAGES), sorted(set(MESSAGES) - here - there)
    assert len(MESSAGES) >= 30
