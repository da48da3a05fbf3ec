"""The worker the benchmarks call: the cheapest useful methods."""

import snakepit_py as snakepit


@snakepit.method
def add(a, b):
    return a + b


@snakepit.method
def echo(value):
    return value


@snakepit.method
def stream(n: int, size: int = 16):
    chunk = b"x" * size
    for _ in range(n):
        yield chunk


@snakepit.method
def forever():
    """A generator that never ends on its own (for cancellation latency)."""
    i = 0
    while True:
        yield i
        i += 1


@snakepit.method
def spin():
    """A pure-Python busy loop that never checks for cancellation."""
    n = 0
    while True:
        n += 1


@snakepit.method
async def nap(seconds: float = 60.0):
    """An async method parked in ``await`` (for cancellation latency)."""
    import asyncio

    await asyncio.sleep(seconds)
