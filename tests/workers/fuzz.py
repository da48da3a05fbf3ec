"""The target of the BEAM fuzz test (tests/beam/fuzz_worker.exs): fast, bounded methods only.

Mutated frames reach these methods with any arguments and options, so none
of them may sleep, start a process or stream without end: every method has a
short decorator timeout (a frame's own `timeout_ms` can only shorten it), and
the streams stop after a few items even when `n` is a huge number.
"""

import asyncio

import snakepit_py as snakepit

LIMIT = 1.0  # seconds; a stream starved of credit gives its slot back after this
MAX_ITEMS = 8


@snakepit.method(timeout=LIMIT)
def add(a: int, b: int) -> int:
    return a + b


@snakepit.method(timeout=LIMIT)
def echo(value):
    return value


@snakepit.method(timeout=LIMIT)
def text(s: str, sep: str = "") -> str:
    return sep.join([s.upper(), s])


@snakepit.method(timeout=LIMIT)
def raw(data: bytes) -> int:
    return len(data)


@snakepit.method(timeout=LIMIT)
def fail(message: str = "boom"):
    raise ValueError(message)


@snakepit.method(timeout=LIMIT)
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@snakepit.method(timeout=LIMIT)
def count(n: int):
    yield from range(min(n, MAX_ITEMS))
    return n


@snakepit.method(timeout=LIMIT)
async def async_count(n: int):
    for i in range(min(n, MAX_ITEMS)):
        await asyncio.sleep(0)
        yield i
