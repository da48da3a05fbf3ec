"""Python types for Erlang terms that have no natural Python twin."""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from typing import Any


__all__ = ["Atom", "ImproperList", "type_name"]


def type_name(obj: object) -> str:
    """The qualified name of ``obj``'s type, as EncodeError reports it."""
    cls = type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


class Atom(str):
    """An Erlang atom other than ``true``/``false``/``nil``.

    A ``str`` subclass, so ``Atom("ok") == "ok"`` and it hashes like the str.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


class ImproperList(list):
    """An Erlang list whose tail is not ``[]``: ``[1, 2 | tail]``.

    Attributes:
        tail: the last tail of the list (any term except a list).
    """

    __slots__ = ("tail",)

    def __init__(self, items: Any = (), tail: Any = None) -> None:
        super().__init__(items)
        self.tail = tail

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImproperList):
            return NotImplemented
        return list.__eq__(self, other) and self.tail == other.tail

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ImproperList({list.__repr__(self)}, tail={self.tail!r})"
