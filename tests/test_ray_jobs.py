"""The proxy's Ray Jobs methods: the entrypoint check alone (fast, no Ray), then
the methods (and tasks on an existing cluster) against a real
``ray start --head --block`` started here as a child and stopped by pid
(``ray``, ``slow``: it brings up a full head node with its dashboard)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from snakepit_py.errors import CallError
from snakepit_py.ray_proxy import EntrypointNotAllowed, ProxyConfigError
from snakepit_py.ray_proxy._jobs import JobsClient
from snakepit_py.ray_proxy._procs import descendants, start_time
from snakepit_py.testing import FakeSupervisor

ROOT = Path(__file__).resolve().parent.parent
TASKS = str(ROOT / "tests" / "ray_tasks.py")
BIN = os.path.dirname(sys.executable)

# Every character a string entrypoint may not hold (docs/ray.md, "Ray Jobs").
SHELL_CHARS = list("$`;&|<>()\\*?[]{}~#!")
CONTROL_CHARS = ["\n", "\r", "\t", "\0", "\x1b", "\x7f", "\x85"]
# A script that prints the arguments it got, so a test can see what reached it.
TRAIN_PY = 'import json, sys\nprint("train argv " + json.dumps(sys.argv[1:]))\n'


# --- the entrypoint check (no Ray) --------------------------------------------------------


@pytest.mark.parametrize("char", SHELL_CHARS + CONTROL_CHARS)
def test_a_string_entrypoint_with_shell_syntax_is_refused_naming_the_character(char: str) -> None:
    jobs = JobsClient(None, ["*"])  # refused even when any command is allowed
    for entrypoint in (f"python train.py a{char}b", f"python x '{char}'", f'python "{char}"'):
        with pytest.raises(EntrypointNotAllowed) as info:
            jobs.check(entrypoint)
        assert info.value.char == char
        assert repr(char) in str(info.value) and "give a list of words" in str(info.value)


def test_the_injections_of_issue_11_are_refused_as_strings() -> None:
    jobs = JobsClient(None, ["python train.py"])
    for entrypoint, char in [("python train.py $(touch pwned)", "$"),
                             ("python train.py || touch pwned", "|"),
                             ("python train.py\ntouch pwned", "\n")]:  # fmt: skip
        with pytest.raises(EntrypointNotAllowed) as info:
            jobs.check(entrypoint)
        assert info.value.char == char


def test_list_words_reach_a_real_shell_as_plain_arguments(tmp_path: Path) -> None:
    # Given words full of shell syntax, as the BEAM may send them
    words = ["$(touch a)", "`touch b`", "x; touch c", "||", "touch", "d", "&&", "> e", "< f",
             "*", "~", "{g,h}", "!", "#", "line\ntouch i", "tab\there", "back\\slash", "it's",
             '"q"', "", " ", "--", "-x"]  # fmt: skip
    command = JobsClient(None, ["printf"]).check(["printf", "%s\\0", *words])
    # When /bin/sh runs the command, as Ray does
    out = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, timeout=10,
                         check=True).stdout  # fmt: skip
    # Then printf got exactly those words and nothing else ran
    assert out.split(b"\0")[:-1] == [w.encode() for w in words]
    assert list(tmp_path.iterdir()) == []


def test_the_entrypoints_of_the_ray_md_snippet_are_checked_as_it_says() -> None:
    # docs/ray.md's Ray Jobs snippet (its <!-- snippet: checked-by --> points here):
    # two allowed forms and one refused, with the message it quotes
    import re

    from snippets import blocks

    [block] = [b for b in blocks(ROOT / "docs" / "ray.md") if "submit_job" in b.code]
    first, second, refused = re.findall(r"args: \[(.+?)\]\}\)", block.code)
    jobs = JobsClient(None, ["python train.py"])
    assert jobs.check(json.loads(first)) == "python train.py --lr 1e-3"
    assert jobs.check(json.loads(second)) == "python train.py --lr 1e-3"
    quoted = re.search(r'# message: "(.+?) \.\.\."', block.code, re.S)
    assert quoted
    with pytest.raises(EntrypointNotAllowed) as info:
        jobs.check(json.loads(refused))
    assert str(info.value).startswith(" ".join(quoted.group(1).replace("#", "").split()))


def test_string_words_are_quoted_afresh() -> None:
    jobs = JobsClient(None, ["python train.py"])
    assert jobs.check("python train.py --name 'a b' \"c\"") == "python train.py --name 'a b' c"
    assert jobs.check(("python", "train.py", "a b", "$x")) == "python train.py 'a b' '$x'"


def test_the_allow_list_compares_whole_words() -> None:
    jobs = JobsClient(None, ["python train.py", "echo"])
    for entrypoint in ("python train.py", "  python   train.py --epochs 3", "'python' train.py",
                       ["python", "train.py", "--epochs", "3"], "echo", ["echo", "x"]):  # fmt: skip
        jobs.check(entrypoint)
    refused = ["python train.pyx", "python train.py.evil", "python3 train.py", "python",
               "python -c pass", "pythontrain.py", ["python train.py"], "echoes"]  # fmt: skip
    for entrypoint in refused:
        with pytest.raises(EntrypointNotAllowed, match="does not start with an --allow-entrypoint"):
            jobs.check(entrypoint)


def test_malformed_entrypoints_are_refused() -> None:
    jobs = JobsClient(None, ["*"])
    for entrypoint in ("", "   ", "''", [], [""], ["python", 3], ["python", b"x"], None, 42,
                       {"python": "x"}, "python 'unclosed", ["python", "a\0b"],
                       "FOO=1 python train.py", ["PATH=/tmp", "python"]):  # fmt: skip
        with pytest.raises(EntrypointNotAllowed, match="got: "):
            jobs.check(entrypoint)


def test_an_empty_or_unparsable_allow_prefix_is_a_launch_error() -> None:
    for prefix in ("", "  ", "python 'train.py"):
        with pytest.raises(ProxyConfigError, match="--allow-entrypoint"):
            JobsClient("http://127.0.0.1:8265", [prefix])


# --- against a real head node -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, within: float) -> None:
    end = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError:
            return  # it answers (401 without the token): the dashboard is up
        except OSError:
            if time.monotonic() > end:
                raise TimeoutError(f"{url} did not answer within {within} s") from None
            time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict]:
    """A token-protected head node: ``ray start --head --block`` as our child."""
    gcs, dash, agent = _free_port(), _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PATH=BIN + os.pathsep + env.get("PATH", ""), RAY_DISABLE_USAGE_STATS="1",
               RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))  # fmt: skip
    temp = tempfile.mkdtemp(prefix="snakepit-rayjobs-")
    head = subprocess.Popen(
        [os.path.join(BIN, "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
         "--include-dashboard", "true", "--dashboard-agent-listen-port", str(agent),
         "--num-cpus", "1", "--object-store-memory", str(128 * 2**20), "--temp-dir", temp,
         "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    procs: dict[int, int] = {}
    try:
        _wait_http(f"http://127.0.0.1:{dash}/api/version", within=90.0)
        procs = descendants(head.pid)
        yield {"gcs": f"127.0.0.1:{gcs}", "jobs": f"http://127.0.0.1:{dash}", "env": env}
    finally:
        procs.update(descendants(head.pid))
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops its node on SIGTERM
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait(5)
        left = _sweep(procs)
        subprocess.run(["rm", "-rf", temp], check=False)
        assert left == [], f"Ray processes outlived the head: {left}"


def _sweep(procs: dict[int, int]) -> list[int]:
    """Wait for the recorded processes to go; SIGKILL (and report) stragglers."""
    end = time.monotonic() + 15.0
    alive = list(procs)
    while alive and time.monotonic() < end:
        alive = [p for p, st in procs.items() if start_time(p) == st]
        time.sleep(0.1)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    return alive


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding train.py (the allowed script); nothing else should appear."""
    path = tmp_path_factory.mktemp("rayjobs")
    (path / "train.py").write_text(TRAIN_PY)
    return path


@pytest.fixture(scope="module")
def proxy(cluster: dict, workdir: Path) -> Iterator[FakeSupervisor]:
    args = ["--ray-address", cluster["gcs"], "--auth", "env", "--tasks", TASKS,
            "--jobs-address", cluster["jobs"], "--allow-entrypoint", "python -c",
            "--allow-entrypoint", f"python {workdir / 'train.py'}"]  # fmt: skip
    with FakeSupervisor("snakepit_py.ray_proxy", worker_args=args, env=cluster["env"],
                        cwd=str(ROOT), ready_timeout=60.0, timeout=90.0) as sup:  # fmt: skip
        # The dashboard answers before its job agent registers ("No available agent
        # to submit job"): wait until a trivial job is accepted.
        end = time.monotonic() + 90.0
        while True:
            try:
                sup.call("submit_job", "python -c pass")
                break
            except CallError as exc:
                if "No available agent" not in str(exc) or time.monotonic() > end:
                    raise
                time.sleep(1.0)
        yield sup


def _wait_status(sup: FakeSupervisor, job_id: str, wanted: set[str], within: float) -> dict:
    end = time.monotonic() + within
    while True:
        status = sup.call("job_status", job_id)
        if status["status"] in wanted or time.monotonic() > end:
            return status
        time.sleep(0.5)


def _run_job(sup: FakeSupervisor, entrypoint: list[str] | str) -> tuple[str, str]:
    """Submit, wait (at most 60 s) for the job to end; its final status and whole log."""
    job_id = sup.call("submit_job", entrypoint)
    status = _wait_status(sup, job_id, {"succeeded", "failed", "stopped"}, 60.0)
    return status["status"], "".join(sup.stream("job_logs", job_id, False))


@pytest.mark.ray
@pytest.mark.slow
def test_tasks_run_on_an_existing_cluster_with_token_auth(proxy: FakeSupervisor) -> None:
    assert proxy.call("submit_ray_job", "square", [6], 2)["results"] == [36, 36]
    ray = proxy.health()["extra"]["ray"]
    assert ray["auth"] == "env:token" and ray["temp_dir"] is None and ray["ray_pids"] == []


@pytest.mark.ray
@pytest.mark.slow
def test_submit_job_streams_its_logs_and_succeeds(proxy: FakeSupervisor) -> None:
    job_id = proxy.call("submit_job", ["python", "-c", "print('hello from a ray job')"])
    stream = proxy.stream("job_logs", job_id)
    text = "".join(stream)
    assert "hello from a ray job" in text
    assert _wait_status(proxy, job_id, {"succeeded", "failed"}, 60.0)["status"] == "succeeded"


@pytest.mark.ray
@pytest.mark.slow
def test_stop_job(proxy: FakeSupervisor) -> None:
    job_id = proxy.call("submit_job", ["python", "-c", "import time; time.sleep(120)"])
    _wait_status(proxy, job_id, {"running"}, 60.0)
    assert proxy.call("stop_job", job_id) is True
    assert _wait_status(proxy, job_id, {"stopped"}, 60.0)["status"] == "stopped"


@pytest.mark.ray
@pytest.mark.slow
def test_entrypoints_outside_the_allow_list_are_refused(proxy: FakeSupervisor) -> None:
    for entrypoint in ("bash -c 'rm -rf /'", "python script.py", "python"):
        with pytest.raises(CallError) as info:
            proxy.call("submit_job", entrypoint)
        assert info.value.type == "EntrypointNotAllowed"


@pytest.mark.ray
@pytest.mark.slow
def test_shell_injection_through_a_string_entrypoint_never_runs(
    proxy: FakeSupervisor, workdir: Path
) -> None:
    train, pwned = workdir / "train.py", workdir / "pwned"
    # Given the three entrypoints of issue 11, each of which ran `touch` before the fix
    attempts = [f"python {train} $(touch {pwned})", f"python {train} || touch {pwned}",
                f"python {train}\ntouch {pwned}"]  # fmt: skip
    # When the BEAM submits them, each is refused before reaching Ray
    for entrypoint in attempts:
        with pytest.raises(CallError) as info:
            proxy.call("submit_job", entrypoint)
        assert info.value.type == "EntrypointNotAllowed", entrypoint
    # Then a job submitted after them runs to the end, and none of them ran
    assert _run_job(proxy, f"python {train}")[0] == "succeeded"
    assert not pwned.exists()


@pytest.mark.ray
@pytest.mark.slow
def test_list_entrypoint_words_reach_the_program_as_plain_arguments(
    proxy: FakeSupervisor, workdir: Path
) -> None:
    train, pwned = workdir / "train.py", workdir / "pwned"
    words = [f"$(touch {pwned})", "||", "touch", str(pwned), f"x\ntouch {pwned}",
             f"`touch {pwned}`; touch {pwned} &", f"> {pwned}", "*"]  # fmt: skip
    status, log = _run_job(proxy, ["python", str(train), *words])
    assert status == "succeeded", log
    assert "train argv " + json.dumps(words) in log
    assert not pwned.exists()


@pytest.mark.ray
@pytest.mark.slow
def test_the_allowed_command_runs_as_a_list_and_as_a_plain_string(
    proxy: FakeSupervisor, workdir: Path
) -> None:
    train = workdir / "train.py"
    for entrypoint in (["python", str(train), "--epochs", "2"], f"python {train} --epochs '2'"):
        status, log = _run_job(proxy, entrypoint)
        assert status == "succeeded", log
        assert 'train argv ["--epochs", "2"]' in log
