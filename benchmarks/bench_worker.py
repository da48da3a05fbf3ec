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
