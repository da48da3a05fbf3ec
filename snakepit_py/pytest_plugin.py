"""pytest plugin (auto-loaded once snakepit_py is installed): the ``snakepit_worker`` fixture."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .testing import FakeSupervisor


@pytest.fixture
def snakepit_worker() -> Iterator[Callable[..., FakeSupervisor]]:
    """Start workers with ``snakepit_worker(target, **options)``; all are stopped after the test.

    The options are FakeSupervisor's (``threads``, ``worker_args``, ``codec``...).
    """
    started: list[FakeSupervisor] = []

    def start(target: str, **options: Any) -> FakeSupervisor:
        sup = FakeSupervisor(target, **options).start()
        started.append(sup)
        return sup

    yield start
    for sup in started:
        sup.close()
