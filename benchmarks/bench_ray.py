"""Ray proxy overhead: 1 000 trivial tasks, Ray directly vs through the proxy.

    python benchmarks/bench_ray.py [--tasks 1000] [--repeat 5] [--json]

Measured side by side in one run: (1) Ray directly from this Python process,
(2) the same batch through the proxy (FakeSupervisor over the real protocol:
``submit_ray_job`` and ``submit`` + streamed ``results``). The BEAM side of the
comparison is ``benchmarks/bench_ray_beam.exs``. Each figure is the median of
``--repeat`` runs after one warm-up; ratios are to the direct Ray figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = os.path.join(HERE, "ray_bench_tasks.py")


def _median(fn, repeat: int) -> float:
    fn()  # warm-up: workers started, functions exported
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def direct(n: int, repeat: int, cpus: int) -> dict[str, float]:
    """Ray from this process: one round trip, and a batch of ``n``."""
    import ray

    ray.init(address="local", num_cpus=cpus, object_store_memory=128 * 2**20,
             include_dashboard=False, log_to_driver=False)  # fmt: skip
    try:
        noop = ray.remote(lambda: None)
        one = _median(lambda: ray.get(noop.remote()), repeat * 20)
        batch = _median(lambda: ray.get([noop.remote() for _ in range(n)]), repeat)
    finally:
        ray.shutdown()
    return {"round_trip_ms": one * 1000, "batch_s": batch}


def proxied(n: int, repeat: int, cpus: int) -> dict[str, float]:
    """The same through the proxy, over the real protocol."""
    sys.path.insert(0, os.path.dirname(HERE))
    from snakepit_py.testing import FakeSupervisor

    args = ["--ray-address", "local", "--num-cpus", str(cpus), "--tasks", TASKS]
    with FakeSupervisor("snakepit_py.ray_proxy", worker_args=args, ready_timeout=60.0,
                        timeout=300.0) as sup:  # fmt: skip
        sup.call("connect")
        one = _median(lambda: sup.call("submit_ray_job", "noop", [], 1), repeat * 20)
        blocking = _median(lambda: sup.call("submit_ray_job", "noop", [], n), repeat)

        def streamed() -> None:
            job = sup.call("submit", "noop", [], kwargs={"num_replicas": n})
            for _ in sup.stream("results", job):
                pass

        stream = _median(streamed, repeat)
    return {"round_trip_ms": one * 1000, "batch_s": blocking, "batch_streamed_s": stream}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--json", action="store_true")
    p.add_argument("--kv", action="store_true", help="key=value lines (for bench_ray_beam.exs)")
    ns = p.parse_args()
    os.environ["RAY_DISABLE_USAGE_STATS"] = "1"
    os.environ.pop("RAY_ADDRESS", None)
    d = direct(ns.tasks, ns.repeat, ns.num_cpus)
    x = proxied(ns.tasks, ns.repeat, ns.num_cpus)
    import ray

    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}, Ray {ray.__version__}",
        "tasks": ns.tasks, "direct": d, "proxy": x,
        "overhead_blocking": x["batch_s"] / d["batch_s"] - 1,
        "overhead_streamed": x["batch_streamed_s"] / d["batch_s"] - 1,
    }  # fmt: skip
    if ns.json:
        print(json.dumps(out, indent=2))
        return
    if ns.kv:
        for side in ("direct", "proxy"):
            for key, value in out[side].items():
                print(f"{side}.{key}={value}")
        return
    print(out["machine"])
    print(f"{'':34}{'round trip':>12}{'batch of ' + str(ns.tasks):>16}{'vs direct':>11}")
    print(f"{'Ray directly (Python)':34}{d['round_trip_ms']:>9.2f} ms{d['batch_s']:>14.3f} s"
          f"{1:>10.2f}x")  # fmt: skip
    print(f"{'proxy, submit_ray_job (Python)':34}{x['round_trip_ms']:>9.2f} ms"
          f"{x['batch_s']:>14.3f} s{x['batch_s'] / d['batch_s']:>10.2f}x")  # fmt: skip
    print(f"{'proxy, submit + results stream':34}{'':>12}{x['batch_streamed_s']:>14.3f} s"
          f"{x['batch_streamed_s'] / d['batch_s']:>10.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
