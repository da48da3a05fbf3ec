"""The bundled Ray proxy: launch options, registry and process sweep (fast, no Ray),
then the proxy driven through FakeSupervisor against one real private Ray
(``@pytest.mark.ray``; deselect with ``-m 'not ray'``)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from snakepit_py.errors import CallError, RegistryError
from snakepit_py.ray_proxy import ProxyConfigError, UnknownTask, actor, task
from snakepit_py.ray_proxy._auth import configure_auth
from snakepit_py.ray_proxy._options import parse_options
from snakepit_py.ray_proxy._procs import descendants, start_time
from snakepit_py.ray_proxy._registry import Catalog, registered
from snakepit_py.testing import FakeSupervisor

ROOT = Path(__file__).resolve().parent.parent
TASKS = str(ROOT / "tests" / "ray_tasks.py")
PROXY_ARGS = ["--ray-address", "local", "--num-cpus", "2", "--tasks", TASKS]
# Never let a developer's RAY_ADDRESS pick the cluster.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}


def _proxy(worker_args: list[str]) -> FakeSupervisor:
    return FakeSupervisor(
        "snakepit_py.ray_proxy", worker_args=worker_args, env=ENV, cwd=str(ROOT),
        ready_timeout=60.0, timeout=60.0,
    )  # fmt: skip


def _wait_gone(procs: dict[int, int], within: float) -> list[int]:
    end = time.monotonic() + within
    alive = list(procs)
    while alive and time.monotonic() < end:
        alive = [p for p, st in procs.items() if start_time(p) == st]
        time.sleep(0.05)
    return alive


# --- launch options, auth, registry (no Ray) --------------------------------------------------


class TestOptions:
    def test_ray_address_is_required(self) -> None:
        with pytest.raises(ProxyConfigError, match="--ray-address"):
            parse_options(["--num-cpus", "2"])

    def test_bad_address_names_the_value(self) -> None:
        with pytest.raises(ProxyConfigError, match="got: 'http://x'"):
            parse_options(["--ray-address", "http://x"])

    def test_local_defaults(self) -> None:
        opts = parse_options(["--ray-address", "local"])
        assert (opts.num_cpus, opts.object_store_mb, opts.auth_mode) == (2, 128, "token")

    def test_connects_before_ready_unless_told_to_wait_for_a_call(self) -> None:
        assert parse_options(["--ray-address", "auto"]).connect_at_start is True
        lazy = parse_options(["--ray-address", "auto", "--connect-on-first-call"])
        assert lazy.connect_at_start is False
        # the old opt-in still parses (it is the default now)
        assert parse_options(["--ray-address", "auto", "--connect-at-start"]).connect_at_start

    def test_remote_auth_defaults_to_the_environment(self) -> None:
        assert parse_options(["--ray-address", "ray://h:10001"]).auth_mode == "env"

    def test_entrypoints_need_a_jobs_address(self) -> None:
        with pytest.raises(ProxyConfigError, match="--jobs-address"):
            parse_options(["--ray-address", "auto", "--allow-entrypoint", "python"])


class TestAuth:
    def test_local_token_is_fresh_and_only_in_the_environment(self) -> None:
        env = {"RAY_AUTH_TOKEN_PATH": "/somewhere"}
        assert configure_auth("token", True, None, env) == "token"
        assert env["RAY_AUTH_MODE"] == "token"
        assert len(env["RAY_AUTH_TOKEN"]) == 64 and "RAY_AUTH_TOKEN_PATH" not in env

    def test_env_mode_leaves_the_environment_alone(self) -> None:
        env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "t"}
        assert configure_auth("env", False, None, env) == "env:token"
        assert env == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "t"}

    def test_token_file(self, tmp_path: Path) -> None:
        (tmp_path / "tok").write_text("abc\n")
        env: dict[str, str] = {}
        configure_auth("token", False, str(tmp_path / "tok"), env)
        assert env == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "abc"}

    def test_disabled(self) -> None:
        env = {"RAY_AUTH_TOKEN": "x"}
        configure_auth("disabled", True, None, env)
        assert env == {"RAY_AUTH_MODE": "disabled"}


class TestRegistry:
    def test_unknown_option_fails_at_decoration(self) -> None:
        with pytest.raises(RegistryError, match="did you mean 'num_cpus'"):
            task(num_cpu=1)

    def test_duplicate_name_fails_at_decoration(self) -> None:
        @task(name="test_dup_name")
        def one() -> None: ...

        with pytest.raises(RegistryError, match="duplicate Ray task name 'test_dup_name'"):

            @task(name="test_dup_name")
            def two() -> None: ...

    def test_actor_needs_a_class(self) -> None:
        with pytest.raises(RegistryError, match="decorates a class"):
            actor(lambda: None)

    def test_names_outside_the_registry_are_refused_without_import(self) -> None:
        # Given an allow-list that does not cover "json"
        catalog = Catalog(["tests.allowpkg"])
        sys.modules.pop("json.tool", None)
        # When a frame names a function in json.tool, Then nothing is imported
        with pytest.raises(UnknownTask):
            catalog.get("json.tool.main", "task")
        assert "json.tool" not in sys.modules

    def test_a_frame_never_causes_an_import(self) -> None:
        # Given the allowed package, imported at start-up (its public modules only)
        _forget_allowpkg()
        catalog = Catalog(["tests.allowpkg"])
        imported = sorted(_allowpkg_imports())
        assert imported == ["tests.allowpkg", "tests.allowpkg.side_effect", "tests.allowpkg.task",
                            "tests.allowpkg.tasks"]  # fmt: skip
        # When frames name modules under the prefix, loaded or not
        for name in ("tests.allowpkg.side_effect.nothing", "tests.allowpkg.absent.fn",
                     "tests.allowpkg._hidden.reach", "tests.allowpkg.tasks.nothing"):  # fmt: skip
            with pytest.raises(UnknownTask):
                catalog.get(name, "task")
        # Then no module was imported (nor imported again) after start-up
        assert sorted(_allowpkg_imports()) == imported
        assert "tests.allowpkg._hidden" not in sys.modules
        assert "tests.allowpkg.absent" not in sys.modules

    def test_allow_prefix_that_does_not_import_fails_at_start(self) -> None:
        with pytest.raises(ProxyConfigError, match="--allow 'tests.no_such_pkg'"):
            Catalog(["tests.no_such_pkg"])

    def test_allow_prefix_resolves_functions_defined_there(self) -> None:
        catalog = Catalog(["tests.allowpkg"])
        spec = catalog.get("tests.allowpkg.tasks.double", "task")
        assert spec.target(7) == 14
        assert catalog.get("tests.allowpkg.tasks.Box", "actor").target().get() == 1
        with pytest.raises(UnknownTask):  # private names never resolve
            catalog.get("tests.allowpkg.tasks._private", "task")
        with pytest.raises(UnknownTask):  # a task is not an actor
            catalog.get("tests.allowpkg.tasks.double", "actor")

    def test_prefix_matches_on_module_boundaries(self) -> None:
        with pytest.raises(UnknownTask):
            Catalog(["tests.allowpkg.task"]).get("tests.allowpkg.tasks.double", "task")

    def test_registered_tasks_keep_their_function(self) -> None:
        import tests.ray_tasks as mod

        assert registered()["square"].target is mod.square and mod.square(3) == 9
        assert registered()["count"].is_generator


def _allowpkg_imports() -> list[str]:
    import builtins

    return list(getattr(builtins, "_snakepit_allowpkg_imported", []))


def _forget_allowpkg() -> None:
    import builtins

    for name in [n for n in sys.modules if n.partition(".")[2].startswith("allowpkg")]:
        del sys.modules[name]
    builtins.__dict__.pop("_snakepit_allowpkg_imported", None)


def test_descendants_tracks_children_by_pid() -> None:
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        procs = descendants()
        assert child.pid in procs and procs[child.pid] == start_time(child.pid)
    finally:
        child.kill()
        child.wait()
    assert start_time(child.pid) is None


def test_priv_script_serves_the_proxy_without_starting_ray() -> None:
    with FakeSupervisor(
        str(ROOT / "priv" / "python" / "ray_proxy.py"),
        worker_args=["--ray-address", "local", "--connect-on-first-call"], env=ENV,
        ready_timeout=30.0,
    ) as sup:  # fmt: skip
        names = {m["name"]: m for m in sup.describe()["methods"]}
        assert {"submit", "results", "status", "cancel", "create_actor", "submit_job"} <= set(names)
        assert names["results"]["streaming"] and names["call_actor"]["streaming"]
        assert sup.health()["extra"]["ray"]["connected"] is False


def test_a_proxy_without_ray_address_refuses_to_start() -> None:
    sup = FakeSupervisor("snakepit_py.ray_proxy", env=ENV, ready_timeout=30.0)
    with pytest.raises(Exception, match="ray-address"):
        sup.start()
    sup.close()


# --- the proxy against a real private Ray -----------------------------------------------------


# The proxy's health report as it stood when :ready came, before any call.
_AT_READY: dict[str, dict] = {}


@pytest.fixture(scope="session")
def proxy() -> Iterator[FakeSupervisor]:
    """One proxy and its private Ray for every Ray test of the session."""
    with _proxy(PROXY_ARGS) as sup:
        _AT_READY["health"] = sup.health()  # a health request, not a call
        yield sup


@pytest.mark.ray
def test_the_proxy_is_connected_before_its_first_call(proxy: FakeSupervisor) -> None:
    # Given a proxy launched with the default options, whose :ready has come
    # Then Ray was up before any call arrived: the first call pays no ray.init
    # (which took ~10 s here, more than Snakepit.call's default 5 s timeout)
    ray_info = _AT_READY["health"]["extra"]["ray"]
    assert ray_info["connected"] is True and ray_info["error"] is None
    assert ray_info["ray_pids"] and ray_info["temp_dir"]
    assert proxy.ready is not None and "submit" in proxy.ready["methods"]


@pytest.mark.ray
class TestTasks:
    def test_submit_status_results_for_n_replicas(self, proxy: FakeSupervisor) -> None:
        job = proxy.call("submit", "square", [4], kwargs={"num_replicas": 5})
        assert proxy.call("status", job)["total"] == 5
        stream = proxy.stream("results", job)
        chunks = list(stream)
        assert sorted(c["index"] for c in chunks) == [0, 1, 2, 3, 4]
        assert {c["result"] for c in chunks} == {16}
        assert stream.result["status"] == "complete" and stream.result["completed"] == 5
        status = proxy.call("get_job_status", job)
        assert (status["status"], status["completed"], status["total"]) == ("complete", 5, 5)

    def test_submit_ray_job_blocks_for_all_results(self, proxy: FakeSupervisor) -> None:
        out = proxy.call("submit_ray_job", "square", [3], 3)
        assert out["status"] == "complete" and out["results"] == [9, 9, 9]
        assert out["num_completed"] == 3

    def test_submit_batch_runs_one_task_per_entry(self, proxy: FakeSupervisor) -> None:
        job = proxy.call("submit_batch", "square", [[1], [2], 3])
        results = {c["index"]: c["result"] for c in proxy.stream("results", job)}
        assert results == {0: 1, 1: 4, 2: 9}

    def test_results_stream_before_the_job_ends(self, proxy: FakeSupervisor) -> None:
        # Given a fast replica and a slow one
        job = proxy.call("submit_batch", "sleepy", [[1, 0.0], [2, 3.0]])
        stream = proxy.stream("results", job)
        # When the first result arrives, Then the job is still running
        first = stream.next_chunk(30.0)
        assert first == {"index": 0, "result": 1}
        assert proxy.call("status", job)["status"] == "running"
        assert list(stream) == [{"index": 1, "result": 2}]
        assert stream.result["status"] == "complete"

    def test_generator_task_items_stream_one_by_one(self, proxy: FakeSupervisor) -> None:
        job = proxy.call("submit", "count", [4], kwargs={"kwargs": {"delay": 0.05},
                                                         "num_replicas": 2})  # fmt: skip
        chunks = list(stream := proxy.stream("results", job))
        for index in (0, 1):
            assert [c["item"] for c in chunks if c["index"] == index] == [0, 1, 2, 3]
        assert stream.result["status"] == "complete"
        with pytest.raises(CallError, match="already streamed"):
            list(proxy.stream("results", job))

    def test_generator_failure_ends_the_stream_with_its_traceback(
        self, proxy: FakeSupervisor
    ) -> None:
        job = proxy.call("submit", "count", [5], kwargs={"kwargs": {"fail_at": 2}})
        stream = proxy.stream("results", job)
        items = []
        with pytest.raises(CallError) as info:
            for chunk in stream:
                items.append(chunk["item"])
        assert items == [0, 1]
        assert info.value.type == "TaskFailed" and "failed at 2" in info.value.traceback

    def test_a_failing_task_carries_its_remote_traceback(self, proxy: FakeSupervisor) -> None:
        with pytest.raises(CallError) as info:
            proxy.call("submit_ray_job", "fail", ["boom"])
        err = info.value
        assert (err.kind, err.type) == ("exception", "TaskFailed")
        assert "ValueError: boom" in err.message
        assert "in _explode" in err.traceback and "raise ValueError(message)" in err.traceback

    def test_failures_as_chunks_when_asked(self, proxy: FakeSupervisor) -> None:
        job = proxy.call("submit", "fail", ["x"], kwargs={"num_replicas": 2})
        stream = proxy.stream("results", job, kwargs={"stop_on_error": False})
        chunks = list(stream)
        assert [c["error"]["type"] for c in chunks] == ["ValueError", "ValueError"]
        assert stream.result["status"] == "failed" and stream.result["failed"] == 2

    def test_an_unregistered_task_is_refused(self, proxy: FakeSupervisor) -> None:
        for name in ("not_registered", "os.system", "tests.ray_tasks.square"):
            with pytest.raises(CallError) as info:
                proxy.call("submit", name, [1])
            assert info.value.type == "UnknownTask" and "square" in info.value.message

    def test_unknown_job_id(self, proxy: FakeSupervisor) -> None:
        with pytest.raises(CallError, match="UnknownJob"):
            proxy.call("status", "job-0-nope")


@pytest.mark.ray
class TestCancel:
    def test_cancel_queued_and_running_work(self, proxy: FakeSupervisor) -> None:
        # Given more 30 s replicas than CPUs: two run, the rest queue
        job = proxy.call("submit", "sleepy", [0, 30.0], kwargs={"num_replicas": 4})
        time.sleep(1.5)
        # When the job is cancelled
        assert proxy.call("cancel", job)["status"] == "cancelled"
        # Then every replica ends as cancelled, well before 30 s
        stream = proxy.stream("results", job, kwargs={"stop_on_error": False})
        chunks = list(stream)
        assert len(chunks) == 4 and all(c.get("cancelled") for c in chunks)
        assert stream.result["cancelled"] == 4 and stream.result["status"] == "cancelled"

    def test_force_cancel_stops_a_task_blocked_in_c(self, proxy: FakeSupervisor) -> None:
        job = proxy.call("submit", "block_in_c", [60.0])
        time.sleep(1.5)
        proxy.call("cancel", job, kwargs={"force": True})
        stream = proxy.stream("results", job, kwargs={"stop_on_error": False})
        chunks = list(stream)
        assert len(chunks) == 1 and "result" not in chunks[0]

    def test_cancelling_submit_ray_job_cancels_its_tasks(self, proxy: FakeSupervisor) -> None:
        pending = proxy.start_call("submit_ray_job", "sleepy", [0, 30.0], 2)
        time.sleep(1.0)
        proxy.cancel(pending.id)
        with pytest.raises(CallError) as info:
            pending.wait(30.0)
        assert info.value.kind == "cancelled"
        # The Ray tasks were cancelled too: a fresh job gets the CPUs at once.
        assert proxy.call("submit_ray_job", "square", [2], 2)["results"] == [4, 4]


@pytest.mark.ray
class TestActors:
    def test_create_call_kill(self, proxy: FakeSupervisor) -> None:
        actor_id = proxy.call("create_actor", "Counter", [10])
        assert proxy.call("call_actor", actor_id, "add", [5]) == 15
        assert proxy.call("call_actor", actor_id, "get") == 15
        assert any(a["actor_id"] == actor_id for a in proxy.health()["extra"]["actors"])
        assert proxy.call("kill_actor", actor_id) is True
        with pytest.raises(CallError, match="UnknownActor"):
            proxy.call("call_actor", actor_id, "get")

    def test_generator_method_streams(self, proxy: FakeSupervisor) -> None:
        actor_id = proxy.call("create_actor", "Counter", kwargs={"kwargs": {"start": 1}})
        stream = proxy.stream("call_actor", actor_id, "countdown", [3])
        assert list(stream) == [3, 2, 1] and stream.result is None
        proxy.call("kill_actor", actor_id)

    def test_only_public_methods_of_registered_classes(self, proxy: FakeSupervisor) -> None:
        actor_id = proxy.call("create_actor", "Counter")
        with pytest.raises(CallError, match="no public method '_secret'"):
            proxy.call("call_actor", actor_id, "_secret")
        with pytest.raises(CallError, match="UnknownTask"):
            proxy.call("create_actor", "square")
        proxy.call("kill_actor", actor_id)


@pytest.mark.ray
def test_health_reports_cluster_resources(proxy: FakeSupervisor) -> None:
    extra = proxy.health()["extra"]
    assert extra["ray"]["connected"] is True and extra["ray"]["auth"] == "token"
    assert extra["ray"]["resources"]["CPU"] == 2.0
    assert extra["ray"]["ray_pids"]
    assert proxy.call("health_check")["ray"]["address"] == "local"


@pytest.mark.ray
def test_jobs_api_is_off_without_a_jobs_address(proxy: FakeSupervisor) -> None:
    with pytest.raises(CallError, match="EntrypointNotAllowed|JobsDisabled"):
        proxy.call("submit_job", "echo hi")


# --- no Ray process outlives the proxy ----------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("how", ["shutdown", "sigkill"])
def test_no_ray_process_outlives_the_proxy(how: str) -> None:
    with _proxy(["--ray-address", "local", "--num-cpus", "1", "--tasks", TASKS]) as sup:
        health = sup.call("connect")
        temp_dir = health["ray"]["temp_dir"]
        assert sup.call("submit_ray_job", "square", [2], 1)["results"] == [4]
        procs = descendants(sup.pid)
        assert len(procs) >= 4  # gcs, raylet, agents, workers...
        if how == "shutdown":
            sup.shutdown(grace_ms=1000, timeout=15.0)
        else:
            os.kill(sup.pid, signal.SIGKILL)
        assert _wait_gone(procs, within=10.0) == []
        end = time.monotonic() + 5.0
        while os.path.exists(temp_dir) and time.monotonic() < end:
            time.sleep(0.05)
        assert not os.path.exists(temp_dir)
