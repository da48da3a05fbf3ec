"""The proxy's Ray Jobs methods (and tasks on an existing cluster) against a real
``ray start --head --block`` started here as a child and stopped by pid. Slower
than test_ray_proxy.py: it brings up a full head node with its dashboard."""

from __future__ import annotations

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
from snakepit_py.ray_proxy._procs import descendants, start_time
from snakepit_py.testing import FakeSupervisor

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
TASKS = str(ROOT / "tests" / "ray_tasks.py")
BIN = os.path.dirname(sys.executable)


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
def proxy(cluster: dict) -> Iterator[FakeSupervisor]:
    args = ["--ray-address", cluster["gcs"], "--auth", "env", "--tasks", TASKS,
            "--jobs-address", cluster["jobs"], "--allow-entrypoint", "python -c"]  # fmt: skip
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


def test_tasks_run_on_an_existing_cluster_with_token_auth(proxy: FakeSupervisor) -> None:
    assert proxy.call("submit_ray_job", "square", [6], 2)["results"] == [36, 36]
    ray = proxy.health()["extra"]["ray"]
    assert ray["auth"] == "env:token" and ray["temp_dir"] is None and ray["ray_pids"] == []


def test_submit_job_streams_its_logs_and_succeeds(proxy: FakeSupervisor) -> None:
    job_id = proxy.call("submit_job", "python -c \"print('hello from a ray job')\"")
    stream = proxy.stream("job_logs", job_id)
    text = "".join(stream)
    assert "hello from a ray job" in text
    assert _wait_status(proxy, job_id, {"succeeded", "failed"}, 60.0)["status"] == "succeeded"


def test_stop_job(proxy: FakeSupervisor) -> None:
    job_id = proxy.call("submit_job", 'python -c "import time; time.sleep(120)"')
    _wait_status(proxy, job_id, {"running"}, 60.0)
    assert proxy.call("stop_job", job_id) is True
    assert _wait_status(proxy, job_id, {"stopped"}, 60.0)["status"] == "stopped"


def test_entrypoints_outside_the_allow_list_are_refused(proxy: FakeSupervisor) -> None:
    for entrypoint in ("bash -c 'rm -rf /'", "python script.py", "python"):
        with pytest.raises(CallError) as info:
            proxy.call("submit_job", entrypoint)
        assert info.value.type == "EntrypointNotAllowed"
