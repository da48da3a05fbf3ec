"""Python types for Erlang terms that have no natural Python twin."""

from __future__ import annotations

from ._etf_tags import FUN_TAGS, PID_TAGS, PORT_TAGS, REFERENCE_TAGS

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from typing import Any


__all__ = ["Atom", "ImproperList", "Opaque", "Pid", "Port", "Reference", "Fun"]


NO_TERM = object()
"""What ``_types.to_term`` answers for a value it has no mapping for (here: no import cycle)."""


def type_name(obj: object) -> str:
    """The qualified name of ``obj``'s type, as EncodeError reports it."""
    cls = type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


class Atom(str):
    """An Erlang atom other than ``true``/``false``/``nil``.

    A ``str`` subclass, so it equals and hashes like the str:

    >>> Atom("ok") == "ok", {Atom("ok"): 1}["ok"]
    (True, 1)
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


class ImproperList(list):  # type: ignore[type-arg]  # (list[Any] at run time costs)
    """An Erlang list whose tail is not ``[]``: ``[1, 2 | tail]``.

    Attributes:
        tail: the last tail of the list (any term except a list).

    >>> ImproperList([1, 2], tail=3)  # [1, 2 | 3]
    ImproperList([1, 2], tail=3)
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

    __hash__ = None

    def __repr__(self) -> str:
        return f"ImproperList({list.__repr__(self)}, tail={self.tail!r})"


class Opaque:
    """A term Python cannot use but must hand back intact (pid, port, reference, fun).

    It keeps the term's exact encoding (tag byte included, version byte not)
    and encodes back to those bytes. Equal, hashable and ordered by type and
    bytes, so it can be a dict key or sit in a set.

    Attributes:
        raw: the term's bytes as they arrived.
    """

    __slots__ = ("raw",)

    _tags: frozenset[int] = frozenset()

    def __init__(self, raw: bytes) -> None:
        raw = bytes(raw)
        if self._tags and (not raw or raw[0] not in self._tags):
            raise ValueError(f"{type(self).__name__} needs the bytes of its term, tag included")
        self.raw = raw

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Opaque):
            return NotImplemented
        return type(self) is type(other) and self.raw == other.raw

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, Opaque):
            return NotImplemented
        return type(self) is not type(other) or self.raw != other.raw

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Opaque):
            return NotImplemented
        return (type(self).__name__, self.raw) < (type(other).__name__, other.raw)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.raw))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.raw!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.raw,))


class Pid(Opaque):
    """An Erlang process identifier (``PID_EXT`` or ``NEW_PID_EXT``)."""

    __slots__ = ()
    _tags = PID_TAGS


class Port(Opaque):
    """An Erlang port identifier (``PORT_EXT``, ``NEW_PORT_EXT`` or ``V4_PORT_EXT``)."""

    __slots__ = ()
    _tags = PORT_TAGS


class Reference(Opaque):
    """An Erlang reference (``REFERENCE_EXT``, ``NEW_REFERENCE_EXT``, ``NEWER_REFERENCE_EXT``)."""

    __slots__ = ()
    _tags = REFERENCE_TAGS


class Fun(Opaque):
    """An Erlang fun: a closure (``NEW_FUN_EXT``) or ``fun M:F/A`` (``EXPORT_EXT``)."""

    __slots__ = ()
    _tags = FUN_TAGS


def trusted_opaque(cls: type[Opaque], raw: bytes) -> Opaque:
    """A ``cls`` of bytes the decoder has already checked (``__init__``'s check skipped)."""
    obj = object.__new__(cls)
    obj.raw = raw
    return obj
