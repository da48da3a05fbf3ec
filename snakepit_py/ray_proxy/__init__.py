"""The bundled Ray proxy: a snakepit worker that hands work to a Ray cluster.

Launch it as any worker (Ray is imported only here, on first use)::

    snakepit-py worker snakepit_py.ray_proxy -- --ray-address local --tasks my_tasks.py

and register the code it may run in your task modules::

    from snakepit_py import ray_proxy

    @ray_proxy.task
    def square(x: int) -> int:
        return x * x

See ``docs/ray.md`` for the methods, options, auth and cancellation limits.
"""

from __future__ import annotations

from ._proxy import RayProxy
from ._registry import actor, registered, task
from .errors import (
    EntrypointNotAllowed,
    JobsDisabled,
    ProxyConfigError,
    RayProxyError,
    TaskFailed,
    UnknownActor,
    UnknownJob,
    UnknownTask,
)

__all__ = [
    # registering code
    "task",
    "actor",
    "registered",
    # the worker
    "RayProxy",
    # errors
    "RayProxyError",
    "ProxyConfigError",
    "UnknownTask",
    "UnknownActor",
    "UnknownJob",
    "TaskFailed",
    "JobsDisabled",
    "EntrypointNotAllowed",
]
