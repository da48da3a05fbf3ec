"""What mypy sees of ``@snakepit.method`` (tests/typecheck/test_method_types.py; never run).

Each ``reveal_type`` line's expected output is in the comment after it; a
line that misuses the API ends with ``# E: <error code>``.
"""
# ruff: noqa: F821 (reveal_type is mypy's)

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import snakepit_py as snakepit


@snakepit.method
def add(a: int, b: int) -> int:
    return a + b


@snakepit.method(name="predict", timeout=5.0, doc="Predict.", streaming=False, idempotent=True)
async def predict(model: str, text: str) -> dict[str, float]:
    return {}


@snakepit.method
def train(epochs: int = 10) -> Iterator[dict[str, int]]:
    yield {"epoch": epochs}


@snakepit.method(streaming=True)
async def tokens(text: str) -> AsyncIterator[str]:
    yield text


class Worker:
    scale = 2

    @snakepit.method
    def load(self, name: str) -> bool:
        return bool(name)

    @snakepit.method(name="run")
    def run_it(self, n: int, *, fast: bool = False) -> list[int]:
        return [n]

    @snakepit.method
    @staticmethod
    def double(x: int) -> int:
        return 2 * x

    @snakepit.method(timeout=1.0)
    @classmethod
    def scaled(cls, x: float) -> float:
        return cls.scale * x


reveal_type(add)  # def (a: int, b: int) -> int
reveal_type(predict)  # def (model: str, text: str) -> typing.Coroutine[Any, Any, dict[str, float]]
reveal_type(train)  # def (epochs: int =) -> typing.Iterator[dict[str, int]]
reveal_type(tokens)  # def (text: str) -> typing.AsyncIterator[str]
reveal_type(Worker().load)  # def (name: str) -> bool
reveal_type(Worker().run_it)  # def (n: int, *, fast: bool =) -> list[int]
reveal_type(Worker.double)  # def (x: int) -> int
reveal_type(Worker.scaled)  # def (x: float) -> float

add(1, "2")  # E: arg-type
Worker().load(3)  # E: arg-type
Worker.double("x")  # E: arg-type
text: str = add(1, 2)  # E: assignment


@snakepit.method(nmae="typo")  # E: call-overload
def misspelled() -> None: ...


@snakepit.method(timeout="5s")  # E: call-overload
def bad_timeout() -> None: ...


snakepit.method("predict")  # E: call-overload
