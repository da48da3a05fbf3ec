"""Work for the Ray benchmarks: the same light and heavy functions as Ray tasks
(for the proxy) and as snakepit methods (for a plain harness pool)."""

from __future__ import annotations

import snakepit_py as snakepit
from snakepit_py import ray_proxy


def _spin(n: int) -> int:
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1_000_003
    return acc


# ~50 ms of pure-Python CPU on this machine (calibrated by bench_ray.py --calibrate).
HEAVY_N = 460_000


@ray_proxy.task
def noop(x: int = 0) -> None:
    """A trivial task: the round trip alone."""
    return None


@ray_proxy.task(name="light")
def light_task(x: int) -> int:
    """Microseconds of work."""
    return _spin(50) + x


@ray_proxy.task(name="heavy")
def heavy_task(x: int) -> int:
    """About 50 ms of CPU."""
    return _spin(HEAVY_N) + x


@snakepit.method
def light(x: int) -> int:
    """Microseconds of work."""
    return _spin(50) + x


@snakepit.method
def heavy(x: int) -> int:
    """About 50 ms of CPU."""
    return _spin(HEAVY_N) + x
