"""Coercing arguments to their parameter's richer annotation (docs/types.md).

``converter(annotation)`` returns a function that turns what the BEAM sent
into the annotated type (an ISO string into a ``datetime``, a map into a
dataclass, a ``%Snakepit.Tensor{}`` or nested lists into a numpy array...)
and raises ``Mismatch(got, expected, where)`` when it cannot; or None for an
annotation it has nothing to do for (``Any``, a class it does not know),
which is then not checked, as before. ``elixir_type(annotation)`` is the
Elixir shape a parameter accepts, for ``describe``.

Simple annotations (``int``, ``str``...) never come here: ``_checks`` has
their cheaper converters. Nothing here runs when a worker starts unless one
of its methods has a richer annotation, and then only this module is
imported: numpy, pydantic and attrs are used only when the user's code has
imported them (an annotation naming them says it has).
"""

from __future__ import annotations

import sys

from ._checks import SIMPLE, Mismatch
from ._checks import converter as simple_converter
from .codec import Atom

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Conv = Callable[[Any], Any]

__all__ = ["converter", "elixir_type", "resolve"]

_NONE_TYPE = type(None)
_FLOAT_ATOMS = {"nan": float("nan"), "infinity": float("inf"), "neg_infinity": float("-inf")}


def resolve(annotation: Any, globalns: dict | None) -> Any:
    """The annotation itself, or the object a string annotation names (None if it cannot)."""
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, dict(globalns or {}))  # noqa: S307 - the user's own source text
    except Exception:
        return None


def _module_class(module: str, name: str) -> Any:
    """``module.name`` if ``module`` is imported already, else None (nothing is imported here)."""
    mod = sys.modules.get(module)
    return getattr(mod, name, None) if mod is not None else None


def _fail(got: Any, expected: str) -> Mismatch:
    """``Mismatch(got, expected, where)``: the value, what was expected, where in the value."""
    text = repr(got)
    text = text[:57] + "..." if len(text) > 60 else text
    return Mismatch(f"{text} ({type(got).__name__})", expected, "")


def converter(annotation: Any) -> Conv | None:
    """A converter for ``annotation`` (already resolved), or None when it has none."""
    made = _make(annotation)
    if made is None:
        return None
    conv, expected = made
    conv.expects = expected  # type: ignore[attr-defined]
    return conv


def elixir_type(annotation: Any) -> str | None:
    """The Elixir shape a parameter annotated ``annotation`` accepts, or None when unchecked."""
    kind = _simple(annotation)
    if kind is not None:
        return _SIMPLE_SHAPES[kind]
    made = _make(annotation)
    return made[1] if made is not None else None


_SIMPLE_SHAPES = {
    int: "integer()", float: "float() | integer() | :nan | :infinity | :neg_infinity",
    str: "String.t()", bytes: "binary()", bool: "boolean()", list: "list()", dict: "map()",
    tuple: "tuple()",
}  # fmt: skip


def _simple(annotation: Any) -> type | None:
    if isinstance(annotation, type) and SIMPLE.get(annotation.__name__) is annotation:
        return annotation
    return None


def _make(ann: Any) -> tuple[Conv, str] | None:
    """(converter, what it expects) for a resolved annotation, or None."""
    kind = _simple(ann)
    if kind is not None:
        return _simple_conv(kind), _SIMPLE_SHAPES[kind]
    if ann is None or ann is _NONE_TYPE:
        return _none, "nil"
    origin = getattr(ann, "__origin__", None)
    if origin is not None or _is_union(ann):
        return _generic(ann, origin)
    if not isinstance(ann, type):
        return None
    if hasattr(ann, "__snakepit_decode__"):
        return _own(ann)
    for module, name, make in _CLASS_RULES:
        base = _module_class(module, name)
        if base is not None and isinstance(base, type) and issubclass(ann, base):
            return make(ann)
    if hasattr(ann, "__dataclass_fields__") or hasattr(ann, "__attrs_attrs__"):
        return _record(ann)
    pydantic_base = _module_class("pydantic", "BaseModel")
    if pydantic_base is not None and issubclass(ann, pydantic_base):
        return _pydantic(ann)
    return None


def _simple_conv(kind: type) -> Conv:
    check = simple_converter(kind)

    def conv(v: Any) -> Any:
        if kind is float and type(v) is Atom and v in _FLOAT_ATOMS:
            return _FLOAT_ATOMS[v]
        try:
            return check(v)
        except Mismatch:
            raise _fail(v, _SIMPLE_SHAPES[kind]) from None

    return conv


def _none(v: Any) -> Any:
    if v is None:
        return None
    raise _fail(v, "nil")


# --- typing constructs: Optional, unions, list[T], dict[K, V], tuple[...], set[T] -----------


def _is_union(ann: Any) -> bool:
    union_type = _module_class("types", "UnionType")
    return union_type is not None and isinstance(ann, union_type)


def _generic(ann: Any, origin: Any) -> tuple[Conv, str] | None:
    args = getattr(ann, "__args__", ()) or ()
    typing_union = _module_class("typing", "Union")
    if _is_union(ann) or (typing_union is not None and origin is typing_union):
        return _union(args)
    numpy_array = _module_class("numpy", "ndarray")
    if numpy_array is not None and origin is numpy_array:  # numpy.typing.NDArray[...]
        return _make(numpy_array)
    if origin is list or origin is set or origin is frozenset:
        return _sequence(origin, args[0] if args else None)
    if origin is tuple:
        return _tuple(args)
    if origin is dict:
        return _mapping(args)
    return None  # Annotated, Literal, Callable...: not checked


def _union(args: tuple) -> tuple[Conv, str] | None:
    parts = [_make(a) for a in args]
    if any(p is None for p in parts):
        return None  # a member we cannot check: the whole union is left alone
    convs = [p[0] for p in parts]  # type: ignore[index]
    expected = " | ".join(p[1] for p in parts)  # type: ignore[index]
    optional = _NONE_TYPE in args
    if optional and len(args) == 2:  # Optional[T]: T's own converter says what failed
        inner = convs[0] if args[1] is _NONE_TYPE else convs[1]

        def optional_conv(v: Any) -> Any:
            return None if v is None else inner(v)

        return optional_conv, expected

    def conv(v: Any) -> Any:
        if v is None and optional:
            return None
        for c in convs:
            try:
                return c(v)
            except Mismatch:
                continue
        raise _fail(v, expected)

    return conv, expected


def _sequence(origin: type, item: Any) -> tuple[Conv, str] | None:
    inner = _make(item) if item is not None else None
    each = inner[0] if inner is not None else None
    expected = f"list({inner[1] if inner else 'term()'})"

    def conv(v: Any) -> Any:
        if not isinstance(v, (list, tuple, set, frozenset)):
            raise _fail(v, expected)
        items = list(v) if each is None else [_at(each, x, f"[{i}]") for i, x in enumerate(v)]
        return items if origin is list else origin(items)

    return conv, expected


def _tuple(args: tuple) -> tuple[Conv, str] | None:
    if len(args) == 2 and args[1] is Ellipsis:
        made = _sequence(list, args[0])
        if made is None:
            return None
        seq, expected = made
        return (lambda v: tuple(seq(v))), f"tuple() | {expected}"
    parts = [_make(a) for a in args]
    if any(p is None for p in parts):
        return None
    expected = "{" + ", ".join(p[1] for p in parts) + "}"  # type: ignore[index]

    def conv(v: Any) -> Any:
        if not isinstance(v, (tuple, list)) or len(v) != len(parts):
            raise _fail(v, expected)
        return tuple(_at(p[0], x, f"[{i}]") for i, (p, x) in enumerate(zip(parts, v, strict=True)))  # type: ignore[index]

    return conv, expected


def _mapping(args: tuple) -> tuple[Conv, str] | None:
    key = _make(args[0]) if args else None
    value = _make(args[1]) if len(args) > 1 else None
    expected = f"%{{{key[1] if key else 'term()'} => {value[1] if value else 'term()'}}}"

    def conv(v: Any) -> Any:
        if not isinstance(v, dict):
            raise _fail(v, expected)
        out = {}
        for k, x in v.items():
            k2 = _at(key[0], k, f"(key {k!r})") if key is not None else k
            out[k2] = _at(value[0], x, f"[{k!r}]") if value is not None else x
        return out

    return conv, expected


def _at(conv: Conv, value: Any, where: str) -> Any:
    """``conv(value)``; a failure says where in the argument it happened."""
    try:
        return conv(value)
    except Mismatch as exc:
        got, expected, inner = (*exc.args, "", "", "")[:3] if exc.args else (repr(value), "", "")
        raise Mismatch(got, expected or "the annotated type", where + inner) from None


def _own(cls: Any) -> tuple[Conv, str]:
    """A class with its own hook: ``cls.__snakepit_decode__(term)`` (docs/types.md)."""
    expected = getattr(cls, "__snakepit_type__", None) or f"a term {cls.__name__} decodes"
    decode = cls.__snakepit_decode__

    def conv(v: Any) -> Any:
        if isinstance(v, cls):
            return v
        try:
            return decode(v)
        except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
            raise Mismatch(f"{_fail(v, expected).args[0]}: {exc}", expected, "") from None

    return conv, expected


# --- classes: datetimes, Decimal, UUID, paths, enums ---------------------------------------


def _iso(cls: type, shape: str) -> tuple[Conv, str]:
    datetime_class = _module_class("datetime", "datetime")
    expected = f"{shape} or an ISO 8601 string"

    def conv(v: Any) -> Any:
        if isinstance(v, cls) and (cls is datetime_class or not isinstance(v, datetime_class)):
            return v
        if isinstance(v, str):
            text = v[:-1] + "+00:00" if v.endswith("Z") and cls is datetime_class else v
            try:
                return cls.fromisoformat(text)  # type: ignore[attr-defined]
            except ValueError:
                pass
        if isinstance(v, dict):  # a struct the decoder left as a map (msgpack)
            from .codec._types import from_struct

            made = from_struct(v)
            if made is not v:
                return conv(made)
        raise _fail(v, expected)

    return conv, expected


def _datetime(cls: type) -> tuple[Conv, str]:
    return _iso(cls, "DateTime.t() | NaiveDateTime.t()")


def _date(cls: type) -> tuple[Conv, str]:
    if issubclass(cls, _module_class("datetime", "datetime")):
        return _datetime(cls)
    return _iso(cls, "Date.t()")


def _time(cls: type) -> tuple[Conv, str]:
    return _iso(cls, "Time.t()")


def _decimal(cls: type) -> tuple[Conv, str]:
    expected = "Decimal.t() | integer() | float() | a decimal string"

    def conv(v: Any) -> Any:
        if isinstance(v, cls):
            return v
        if isinstance(v, dict):
            from .codec._types import from_struct

            made = from_struct(v)
            if isinstance(made, cls):
                return made
        if isinstance(v, (int, str)) and not isinstance(v, bool) and type(v) is not Atom:
            try:
                return cls(v.strip() if isinstance(v, str) else v)
            except ArithmeticError:
                pass
        if type(v) is float:
            return cls(repr(v))  # the shortest text that reads back as the float
        raise _fail(v, expected)

    return conv, expected


def _uuid(cls: type) -> tuple[Conv, str]:
    expected = "a UUID string (String.t()) or 16-byte binary()"

    def conv(v: Any) -> Any:
        if isinstance(v, cls):
            return v
        try:
            if isinstance(v, str):
                return cls(v)
            if isinstance(v, bytes) and len(v) == 16:
                return cls(bytes=v)
        except ValueError:
            pass
        raise _fail(v, expected)

    return conv, expected


def _path(cls: type) -> tuple[Conv, str]:
    expected = "a path (String.t())"

    def conv(v: Any) -> Any:
        if isinstance(v, cls):
            return v
        if isinstance(v, str) and type(v) is not Atom:
            return cls(v)
        raise _fail(v, expected)

    return conv, expected


def _enum(cls: Any) -> tuple[Conv, str]:
    values = [m.value for m in cls]
    shown = ", ".join(repr(x) for x in values[:8]) + (", ..." if len(values) > 8 else "")
    expected = f"one of {cls.__name__}'s values ({shown}) or names"

    def conv(v: Any) -> Any:
        if isinstance(v, cls):
            return v
        try:
            return cls(v)
        except (ValueError, TypeError):
            pass
        if isinstance(v, str) and v in cls.__members__:
            return cls.__members__[v]
        raise _fail(v, expected)

    return conv, expected


# --- numpy arrays ---------------------------------------------------------------------------

_DTYPES = {"s": "<i", "u": "<u", "f": "<f", "c": "<c"}


def _ndarray(cls: type) -> tuple[Conv, str]:
    expected = "Snakepit.Tensor.t() or nested lists of numbers"
    np = sys.modules["numpy"]

    def conv(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return v
        if isinstance(v, dict):
            return _from_tensor(np, v, expected)
        if isinstance(v, (list, int, float)) and not isinstance(v, bool):
            try:
                arr = np.asarray(v)
            except ValueError:  # ragged lists
                raise _fail(v, expected + " (of one rectangular shape)") from None
            if arr.dtype.kind in "biufc":
                return arr
        raise _fail(v, expected)

    return conv, expected


def _from_tensor(np: Any, term: dict, expected: str) -> Any:
    """A read-only array over a ``%Snakepit.Tensor{}``'s data (no copy)."""
    from .codec._types import STRUCT, TENSOR

    try:
        if term.get(STRUCT) != TENSOR:
            raise ValueError
        (kind, bits), shape, data = term[Atom("type")], term[Atom("shape")], term[Atom("data")]
        if kind == "bf" and bits == 16:
            dtype = getattr(sys.modules.get("ml_dtypes"), "bfloat16", None)
            if dtype is None:
                raise Mismatch("a {:bf, 16} tensor (numpy needs ml_dtypes for it)", expected, "")
        else:
            dtype = np.dtype(f"{_DTYPES[kind]}{bits // 8}")
        if isinstance(data, str):
            data = data.encode()  # a binary that happened to be valid UTF-8
        return np.frombuffer(data, dtype=dtype).reshape(tuple(shape))
    except Mismatch:
        raise
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _fail(term, expected) from None


# --- records: dataclasses, attrs classes, pydantic models ----------------------------------


def _record(cls: Any) -> tuple[Conv, str]:
    expected = f"a map of {cls.__name__}'s fields (string or atom keys)"
    fields: list[tuple[str, bool, Conv | None]] | None = None  # built on first use

    def build() -> list[tuple[str, bool, Conv | None]]:
        import typing

        try:
            hints = typing.get_type_hints(cls)
        except Exception:
            hints = {}
        if hasattr(cls, "__dataclass_fields__"):
            import dataclasses

            found = [(f.name, f.init, f.default is dataclasses.MISSING
                      and f.default_factory is dataclasses.MISSING)
                     for f in dataclasses.fields(cls)]  # fmt: skip
        else:
            nothing = _module_class("attr", "NOTHING")
            found = [(a.name, a.init, a.default is nothing) for a in cls.__attrs_attrs__]
        out = []
        for name, init, required in found:
            if init:
                made = _make(hints[name]) if name in hints else None
                out.append((name, required, made[0] if made else None))
        return out

    def conv(v: Any) -> Any:
        nonlocal fields
        if isinstance(v, cls):
            return v
        if not isinstance(v, dict):
            raise _fail(v, expected)
        if fields is None:
            fields = build()
        given = {str(k) if isinstance(k, str) else k: x for k, x in v.items()}
        kwargs = {}
        for name, required, field_conv in fields:
            if name in given:
                x = given.pop(name)
                kwargs[name] = _at(field_conv, x, f"[{name!r}]") if field_conv else x
            elif required:
                raise Mismatch(f"a map without {name!r}", expected, "")
        if given:
            raise Mismatch(
                f"a map with unknown keys {', '.join(sorted(map(repr, given)))}", expected, ""
            )
        return cls(**kwargs)

    return conv, expected


def _pydantic(cls: Any) -> tuple[Conv, str]:
    expected = f"a map {cls.__name__} validates (string or atom keys)"
    validate = getattr(cls, "model_validate", None) or cls.parse_obj  # (pydantic 1)

    def conv(v: Any) -> Any:
        if isinstance(v, cls):
            return v
        if not isinstance(v, dict):
            raise _fail(v, expected)
        try:
            return validate({str(k) if isinstance(k, str) else k: x for k, x in v.items()})
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            lines = str(exc).splitlines()
            refused = " ".join(lines[:3])
            raise Mismatch(f"a map {cls.__name__} refused: {refused}", expected, "") from None

    return conv, expected


# (module, class, rule) for classes found only if their module is imported
_CLASS_RULES = (
    ("datetime", "datetime", _datetime),
    ("datetime", "date", _date),
    ("datetime", "time", _time),
    ("decimal", "Decimal", _decimal),
    ("uuid", "UUID", _uuid),
    ("pathlib", "PurePath", _path),
    ("enum", "Enum", _enum),
    ("numpy", "ndarray", _ndarray),
)
