"""A worker whose methods take and return the types of docs/types.md (numpy, datetimes...)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Optional

import attrs
import numpy as np
import pydantic

import snakepit_py as snakepit


class Color(enum.Enum):
    RED = "red"
    BLUE = 2


@dataclasses.dataclass
class Point:
    x: float
    y: float = 0.0


@dataclasses.dataclass
class Shape:
    name: str
    points: list[Point]
    at: Optional[dt.datetime] = None  # noqa: UP045 - Optional[...] on purpose


@attrs.define
class Box:
    width: int
    label: str = "box"


class Order(pydantic.BaseModel):
    id: int
    total: Decimal
    placed: dt.datetime


@snakepit.method
def echo(x):
    return x


@snakepit.method
def array(dtype: str, shape: list) -> np.ndarray:
    """np.arange over the shape, as dtype."""
    n = int(np.prod(shape)) if shape else 1
    return (np.arange(n) % 100).astype(dtype).reshape(shape)


@snakepit.method
def classify(text: str) -> dict:
    return {"label": "pos", "scores": np.array([0.1, 0.9], dtype=np.float32), "n": np.int64(2)}


@snakepit.method
def when(t: dt.datetime) -> dt.datetime:
    return t


@snakepit.method
def later(t: dt.datetime, seconds: int) -> dt.datetime:
    return t + dt.timedelta(seconds=seconds)


@snakepit.method
def day(d: dt.date) -> dt.date:
    return d


@snakepit.method
def clock(t: dt.time) -> dt.time:
    return t


@snakepit.method
def double(d: Decimal) -> Decimal:
    return d * 2


@snakepit.method
def ident(u: uuid.UUID) -> str:
    return u.hex


@snakepit.method
def parent(p: Path) -> Path:
    return p.parent


@snakepit.method
def color(c: Color) -> Color:
    return c


@snakepit.method
def shape(s: Shape) -> Shape:
    return s


@snakepit.method
def box(b: Box) -> Box:
    return b


@snakepit.method
def order(o: Order) -> Order:
    return o


@snakepit.method
def stats(a: np.ndarray) -> dict:
    return {"dtype": str(a.dtype), "shape": list(a.shape), "sum": float(np.real(a.sum()))}


@snakepit.method
def points(xs: list[Point], scale: dict[str, Decimal] | None = None) -> list:
    return [(p.x, p.y) for p in xs] + ([] if scale is None else sorted(scale.items()))


@snakepit.method
def types_of(*values):
    return [type(v).__name__ for v in values]


@snakepit.method
def nonfinite():
    return [float("nan"), float("inf"), float("-inf"), np.float32("nan")]


@snakepit.method
def refused(what: str):
    return {
        "object": np.array([object()]),
        "strings": np.array(["a", "b"]),
        "sNaN": Decimal("sNaN"),
        "tz_time": dt.time(1, tzinfo=dt.timezone.utc),
    }[what]


class Money:
    """A user type with its own hook both ways (docs/types.md, "Your own types")."""

    __snakepit_type__ = "{amount :: String.t(), currency :: String.t()}"

    def __init__(self, amount: Decimal, currency: str) -> None:
        self.amount, self.currency = amount, currency

    def __snakepit_encode__(self) -> tuple:
        return (str(self.amount), self.currency)

    @classmethod
    def __snakepit_decode__(cls, term: object) -> Money:
        amount, currency = term  # a tuple or list of two: anything else is a TypeError/ValueError
        return cls(Decimal(amount), str(currency))


@snakepit.method
def fee(m: Money, rate: Decimal) -> Money:
    return Money(m.amount * rate, m.currency)
