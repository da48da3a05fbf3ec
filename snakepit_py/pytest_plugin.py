"""pytest plugin (auto-loaded once snakepit_py is installed): the ``snakepit_worker`` fixture."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ._testing.core import check_transport
from .testing import FakeSupervisor, GrpcSupervisor

Supervisor = FakeSupervisor | GrpcSupervisor


@pytest.fixture
def snakepit_worker() -> Iterator[Callable[..., Supervisor]]:
    """Start workers with ``snakepit_worker(target, **options)``; all are stopped after the test.

    The options are FakeSupervisor's (``threads``, ``worker_args``, ``codec``...);
    ``transport="grpc"`` starts a GrpcSupervisor instead.
    """
    started: list[Supervisor] = []

    def start(target: str, *, transport: str = "port", **options: Any) -> Supervisor:
        check_transport(transport)
        cls = GrpcSupervisor if transport == "grpc" else FakeSupervisor
        sup = cls(target, **options).start()
        started.append(sup)
        return sup

    yield start
    for sup in started:
        sup.close()
