"""Tasks and actors registered for the Ray proxy tests (loaded with ``--tasks``)."""

from __future__ import annotations

import time

from snakepit_py import ray_proxy


@ray_proxy.task
def square(x: int) -> int:
    """x * x."""
    return x * x


@ray_proxy.task
def noop() -> None:
    """Nothing: a round trip."""
    return None


@ray_proxy.task(name="sleepy")
def sleep_then(value: int, seconds: float) -> int:
    """Return ``value`` after ``seconds`` (a Python loop, so a plain cancel interrupts it)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.02)
    return value


@ray_proxy.task
def block_in_c(seconds: float) -> str:
    """One long C-level sleep: only ``force`` cancels it."""
    time.sleep(seconds)
    return "woke"


@ray_proxy.task
def fail(message: str) -> None:
    """Raise ValueError(message) from a helper, so the traceback has two frames."""
    _explode(message)


def _explode(message: str) -> None:
    raise ValueError(message)


@ray_proxy.task
def count(n: int, delay: float = 0.0, fail_at: int = -1):
    """Yield 0..n-1, pausing ``delay`` s between items; raise at ``fail_at``."""
    for i in range(n):
        if i == fail_at:
            raise RuntimeError(f"failed at {i}")
        time.sleep(delay)
        yield i


@ray_proxy.actor
class Counter:
    """A counter that lives in one Ray worker process."""

    def __init__(self, start: int = 0) -> None:
        self.value = start

    def add(self, n: int = 1) -> int:
        self.value += n
        return self.value

    def get(self) -> int:
        return self.value

    def countdown(self, n: int):
        # Not `yield from range(...)`: Ray drives the generator with .send().
        for i in range(n, 0, -1):  # noqa: UP028
            yield i

    def _secret(self) -> str:
        return "never callable"


def not_registered(x: int) -> int:
    """A plain function: the proxy must refuse it by name."""
    return x
