"""No descendant outlives its worker, however the worker dies (docs/runtime.md, the guard).

The worker runs under a guard (the process the supervisor started): these
tests kill the worker in every abrupt way and check that the plain child, the
``setsid`` child and the double-forked daemon it started are gone with it.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import pid_alive, worker_path

from snakepit_py.testing import FakeSupervisor

KINDS = ("plain", "setsid", "daemon")


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        alive = [p for p in pids if pid_alive(p)]
        if not alive:
            return []
        time.sleep(0.01)
    return [p for p in pids if pid_alive(p)]


def _worker_with_descendants(reap_pids: list[int]) -> tuple[FakeSupervisor, list[int]]:
    sup = FakeSupervisor(worker_path("doomed.py")).start()
    pids = [sup.call("spawn", kind) for kind in KINDS]
    reap_pids.extend(pids)
    assert all(pid_alive(p) for p in pids)
    return sup, pids


@pytest.mark.parametrize(
    ("how", "status"),
    [("sigkill", 128 + 9), ("segfault", 128 + 11), ("exit", 7)],
)
def test_no_descendant_outlives_a_worker_that_dies_abruptly(reap_pids, how, status):
    # Given a worker with a plain child, a setsid child and a double-forked daemon
    sup, pids = _worker_with_descendants(reap_pids)
    assert sup.guard_pid is not None and sup.guard_pid != sup.pid
    # When the worker dies without a chance to clean up
    sup.start_call("die", how)
    code = sup.proc.wait(5)
    # Then every descendant is gone, and the guard exits with the worker's status
    assert _wait_gone(pids, 1.0) == []
    assert code == status
    sup.close()


def test_no_descendant_outlives_a_worker_killed_from_outside(reap_pids):
    # The OOM killer and `kill -9` both SIGKILL the worker's pid.
    sup, pids = _worker_with_descendants(reap_pids)
    os.kill(sup.pid, signal.SIGKILL)
    assert sup.proc.wait(5) == 128 + 9
    assert _wait_gone(pids, 1.0) == []
    sup.close()


def test_segfault_leaves_the_python_stack_on_stderr(reap_pids):
    sup, _ = _worker_with_descendants(reap_pids)
    sup.start_call("die", "segfault")
    sup.proc.wait(5)
    out = sup.close() and sup.output()
    assert "Fatal Python error: Segmentation fault" in out
    assert "in die" in out


def test_sigterm_to_the_guard_reaches_the_worker(reap_pids):
    # Given a guarded worker with descendants
    sup, pids = _worker_with_descendants(reap_pids)
    # When whoever launched it sends SIGTERM to the process it started
    os.kill(sup.proc.pid, signal.SIGTERM)
    # Then the worker shuts down cleanly (:bye, status 0) and takes its descendants along
    assert sup.proc.wait(10) == 0
    assert sup.bye is not None
    assert _wait_gone(pids, 1.0) == []
    sup.close()


def test_the_worker_does_not_outlive_its_guard(reap_pids):
    sup = FakeSupervisor(worker_path("doomed.py")).start()
    worker = sup.pid
    os.kill(sup.proc.pid, signal.SIGKILL)
    assert _wait_gone([worker], 2.0) == []
    sup.close()


def test_no_guard_when_turned_off():
    with FakeSupervisor(worker_path("doomed.py"), env={"SNAKEPIT_GUARD": "0"}) as sup:
        assert sup.guard_pid is None and sup.pid == sup.proc.pid


def _memory_cgroup(limit: int) -> str | None:
    """A fresh memory cgroup (v1, or v2 where delegated) limited to ``limit`` bytes, or None."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            base, files = "/sys/fs/cgroup/memory" + path, ("memory.limit_in_bytes",)
        elif controllers == "" and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            base, files = "/sys/fs/cgroup" + path, ("memory.max", "memory.swap.max")
        else:
            continue
        group = os.path.join(base, f"snakepit-oom-{os.getpid()}")
        try:
            os.mkdir(group)
            for name in files:
                with open(os.path.join(group, name), "w") as f:
                    f.write(str(limit) if name != "memory.swap.max" else "0")
            return group
        except OSError:
            try:
                os.rmdir(group)
            except OSError:
                pass
    return None


def test_no_descendant_outlives_a_worker_the_oom_killer_ends(reap_pids):
    # Given a worker with descendants, alone in a memory cgroup of 256 MiB
    group = _memory_cgroup(256 << 20)
    if group is None:
        pytest.skip("no memory cgroup can be made here (needs root and cgroup v1, or v2 delegated)")
    try:
        sup = FakeSupervisor(worker_path("doomed.py")).start()
        with open(os.path.join(group, "cgroup.procs"), "w") as f:
            f.write(str(sup.pid))
        pids = [sup.call("spawn", kind) for kind in KINDS]
        reap_pids.extend(pids)
        # When it allocates until the kernel's OOM killer ends it
        sup.start_call("die", "oom")
        # Then the guard sweeps its descendants and reports SIGKILL
        assert sup.proc.wait(30) == 128 + 9
        assert _wait_gone(pids, 1.0) == []
        sup.close()
    finally:
        for _ in range(100):  # the cgroup can go once its last process has
            try:
                os.rmdir(group)
                break
            except OSError:
                time.sleep(0.05)
