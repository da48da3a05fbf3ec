"""Rich Python values as terms, and Elixir's structs as Python values (docs/types.md).

``to_term(obj)`` maps a value the encoder has no exact type for (a class's
own ``__snakepit_encode__``, then numpy
scalars and arrays, datetimes, decimals, UUIDs, paths, enums, sets,
dataclasses, pydantic models, attrs classes) to plain terms: maps, tuples,
atoms, integers, binaries. Arrays become ``%Snakepit.Tensor{}`` maps, dates
and times Elixir's own ``DateTime``/``NaiveDateTime``/``Date``/``Time``
structs, decimals ``%Decimal{}``. ``from_struct(map)`` turns one of those
structs back into the Python value (tensors excepted: they need an
annotation, see ``snakepit_py._coerce``).

Only the encoder's and decoder's slow roads come here, so this module costs
nothing to calls that never meet these types; and it never imports numpy,
pydantic or attrs: a value can only be one of theirs if its library is
already in ``sys.modules``.
"""

from __future__ import annotations

import sys

from ..errors import EncodeError
from ._terms import NO_TERM, Atom
from ._terms import type_name as _type_name

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from typing import Any

__all__ = ["NO_TERM", "to_term", "from_struct", "tensor_type", "STRUCT", "NAN", "INFINITY",
           "NEG_INFINITY"]  # fmt: skip

STRUCT = Atom("__struct__")
NAN, INFINITY, NEG_INFINITY = Atom("nan"), Atom("infinity"), Atom("neg_infinity")

DATETIME = Atom("Elixir.DateTime")
NAIVE_DATETIME = Atom("Elixir.NaiveDateTime")
DATE = Atom("Elixir.Date")
TIME = Atom("Elixir.Time")
ISO = Atom("Elixir.Calendar.ISO")
DECIMAL = Atom("Elixir.Decimal")
TENSOR = Atom("Elixir.Snakepit.Tensor")

_K = {name: Atom(name) for name in (
    "calendar", "year", "month", "day", "hour", "minute", "second", "microsecond",
    "time_zone", "zone_abbr", "utc_offset", "std_offset", "sign", "coef", "exp",
    "type", "shape", "data",
)}  # fmt: skip
_COEF_ATOMS = {"NaN": Atom("NaN"), "inf": Atom("inf")}

# numpy dtype kind and item size -> Nx type; bool is {:u, 8}, as Nx stores it.
_NX_TYPES = {
    ("b", 1): ("u", 8),
    ("i", 1): ("s", 8), ("i", 2): ("s", 16), ("i", 4): ("s", 32), ("i", 8): ("s", 64),
    ("u", 1): ("u", 8), ("u", 2): ("u", 16), ("u", 4): ("u", 32), ("u", 8): ("u", 64),
    ("f", 2): ("f", 16), ("f", 4): ("f", 32), ("f", 8): ("f", 64),
    ("c", 8): ("c", 64), ("c", 16): ("c", 128),
}  # fmt: skip
# dtypes numpy has only through ml_dtypes, known by name.
_NX_NAMED = {"bfloat16": ("bf", 16), "float8_e5m2": ("f", 8)}


def tensor_type(dtype: Any) -> tuple[str, int] | None:
    """The Nx type (``("f", 32)``) of a numpy dtype, or None when Nx has none."""
    return _NX_TYPES.get((dtype.kind, dtype.itemsize)) or _NX_NAMED.get(dtype.name)


def to_term(obj: Any) -> Any:
    """The term ``obj`` stands for, or ``NO_TERM`` when it is none of the types above.

    Raises:
        EncodeError: a value of a known family that has no term (an object
            array, a signalling NaN, a time with an offset).
    """
    modules = sys.modules
    cls = type(obj)
    own = getattr(cls, "__snakepit_encode__", None)
    if own is not None:  # the user type's own hook (docs/types.md, "Your own types")
        return own(obj)
    np = modules.get("numpy")
    if np is not None:
        if isinstance(obj, np.ndarray):
            return _tensor(np, obj)
        if isinstance(obj, np.generic):
            return _numpy_scalar(np, obj)
    dt = modules.get("datetime")
    if dt is not None and isinstance(obj, (dt.date, dt.time)):
        return _datetime(dt, obj)
    dec = modules.get("decimal")
    if dec is not None and isinstance(obj, dec.Decimal):
        return _decimal(obj)
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if hasattr(cls, "__dataclass_fields__") and not isinstance(obj, type):
        import dataclasses

        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    attrs_fields = getattr(cls, "__attrs_attrs__", None)
    if attrs_fields is not None and not isinstance(obj, type):
        return {a.name: getattr(obj, a.name) for a in attrs_fields}
    pydantic = modules.get("pydantic")
    if pydantic is not None and isinstance(obj, pydantic.BaseModel):
        dump = getattr(obj, "model_dump", None)
        return dump() if dump is not None else obj.dict()  # (pydantic 1: .dict())
    enum = modules.get("enum")
    if enum is not None and isinstance(obj, enum.Enum):
        return obj.value
    uuid = modules.get("uuid")
    if uuid is not None and isinstance(obj, uuid.UUID):
        return str(obj)
    pathlib = modules.get("pathlib")
    if pathlib is not None and isinstance(obj, pathlib.PurePath):
        return str(obj)
    return NO_TERM


# --- numpy --------------------------------------------------------------------------------


def _numpy_scalar(np: Any, obj: Any) -> Any:
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        if obj.dtype.itemsize > 8:
            raise EncodeError(f"a {obj.dtype} has no BEAM float: convert it to float", "numpy")
        return float(obj)  # (exact for float16/32; NaN and infinities as floats do)
    if isinstance(obj, np.complexfloating):
        return _tensor(np, np.asarray(obj))  # a complex scalar: a tensor of shape {}
    value = obj.item()  # datetime64, str_, bytes_, void: their Python value
    if type(value) is type(obj):
        raise EncodeError(f"cannot encode a numpy {obj.dtype} value", _type_name(obj))
    return value


def _tensor(np: Any, arr: Any) -> dict:
    ma = getattr(np, "ma", None)
    if ma is not None and isinstance(arr, ma.MaskedArray):
        raise EncodeError(
            "a masked array has no tensor form: send .filled(value) or .compressed()",
            _type_name(arr),
        )
    dtype = arr.dtype
    nx = tensor_type(dtype)
    if nx is None:
        raise EncodeError(
            f"a numpy array of dtype {dtype} has no tensor form (Nx has no such type): "
            "convert it (.astype(...), or .tolist() for objects and strings)",
            "numpy.ndarray",
        )
    if dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big"):
        arr = arr.astype(dtype.newbyteorder("<"))  # the tensor's data is little-endian
    # Row-major and contiguous: a view when it already is, else one copy.
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    return {
        STRUCT: TENSOR,
        _K["type"]: (Atom(nx[0]), nx[1]),
        _K["shape"]: tuple(int(n) for n in arr.shape),
        _K["data"]: memoryview(flat),
    }


# --- dates and times ----------------------------------------------------------------------


def _datetime(dt: Any, obj: Any) -> dict:
    k = _K
    if isinstance(obj, dt.datetime):
        offset = obj.utcoffset()
        term = {
            STRUCT: NAIVE_DATETIME if offset is None else DATETIME,
            k["calendar"]: ISO,
            k["year"]: obj.year, k["month"]: obj.month, k["day"]: obj.day,
            k["hour"]: obj.hour, k["minute"]: obj.minute, k["second"]: obj.second,
            k["microsecond"]: (obj.microsecond, 6),
        }  # fmt: skip
        if offset is not None:
            term.update(_zone(dt, obj, offset))
        return term
    if isinstance(obj, dt.date):
        return {STRUCT: DATE, k["calendar"]: ISO, k["year"]: obj.year, k["month"]: obj.month,
                k["day"]: obj.day}  # fmt: skip
    if obj.utcoffset() is not None:
        raise EncodeError(
            "Elixir's Time has no offset: send a datetime, or the time without its tzinfo",
            "datetime.time",
        )
    return {STRUCT: TIME, k["calendar"]: ISO, k["hour"]: obj.hour, k["minute"]: obj.minute,
            k["second"]: obj.second, k["microsecond"]: (obj.microsecond, 6)}  # fmt: skip


_UTC_NAMES = frozenset(("UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Zulu", "Zulu", "Etc/GMT",
                        "GMT", "Etc/Universal", "Universal"))  # fmt: skip


def _zone(dt: Any, obj: Any, offset: Any) -> dict:
    """DateTime's zone fields: a named zone keeps its name, UTC is Etc/UTC, else the offset."""
    dst = obj.dst() or dt.timedelta(0)
    total, std = offset // dt.timedelta(seconds=1), dst // dt.timedelta(seconds=1)
    if offset % dt.timedelta(seconds=1) or dst % dt.timedelta(seconds=1):
        raise EncodeError("Elixir's DateTime offsets are whole seconds", "datetime.datetime")
    tz = obj.tzinfo
    name = getattr(tz, "key", None) or getattr(tz, "zone", None)  # zoneinfo, pytz
    if not isinstance(name, str):
        name = None
    if total == 0 and std == 0 and (name is None or name in _UTC_NAMES):
        name, abbr = "Etc/UTC", "UTC"
    elif name is None:
        name = abbr = _offset_text(total)
    else:
        abbr = obj.tzname() or _offset_text(total)
    k = _K
    return {k["time_zone"]: name, k["zone_abbr"]: abbr, k["utc_offset"]: total - std,
            k["std_offset"]: std}  # fmt: skip


def _offset_text(seconds: int) -> str:
    sign = "-" if seconds < 0 else "+"
    minutes, secs = divmod(abs(seconds), 60)
    text = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    return f"{text}:{secs:02d}" if secs else text


# --- decimals -----------------------------------------------------------------------------


def _decimal(obj: Any) -> dict:
    sign, digits, exp = obj.as_tuple()
    if exp == "N":
        raise EncodeError("Elixir's Decimal has no signalling NaN", "decimal.Decimal")
    if exp == "n" or exp == "F":
        coef: Any = _COEF_ATOMS["NaN" if exp == "n" else "inf"]
        exp = 0
    else:
        coef = int("".join(map(str, digits))) if digits else 0
    k = _K
    return {STRUCT: DECIMAL, k["sign"]: -1 if sign else 1, k["coef"]: coef, k["exp"]: exp}


# --- Elixir structs -> Python -------------------------------------------------------------


def from_struct(term: dict) -> Any:
    """The Python value of an Elixir ``DateTime``/``NaiveDateTime``/``Date``/``Time``/``Decimal``.

    Any other map (another struct, a tensor, one with odd fields) is returned
    as it is: a map the BEAM sent is never refused for its contents.
    """
    kind = None
    for key, value in term.items():
        if key == "__struct__" and type(key) is Atom:
            kind = value
            break
    if type(kind) is not Atom:
        return term
    try:
        if kind == DECIMAL:
            return _to_decimal(term)
        if kind in (DATETIME, NAIVE_DATETIME, DATE, TIME):
            return _to_datetime(term, kind)
    except (KeyError, TypeError, ValueError, OverflowError, ArithmeticError):
        pass
    return term


def _to_decimal(term: dict) -> Any:
    import decimal

    sign, coef, exp = term[_K["sign"]], term[_K["coef"]], term[_K["exp"]]
    if sign not in (1, -1) or type(exp) is not int or len(term) != 4:
        raise ValueError
    if type(coef) is Atom:
        special = {"NaN": "NaN", "inf": "Infinity"}[coef]
        return decimal.Decimal(("-" if sign < 0 else "") + special)
    if type(coef) is not int or coef < 0:
        raise ValueError
    digits = tuple(map(int, str(coef)))
    return decimal.Decimal((0 if sign > 0 else 1, digits, exp))


def _usec(term: dict) -> int:
    usec = term[_K["microsecond"]]
    if type(usec) is not tuple or len(usec) != 2 or type(usec[0]) is not int:
        raise ValueError
    return usec[0]


def _to_datetime(term: dict, kind: Atom) -> Any:
    import datetime as dt

    k = _K
    if term[k["calendar"]] != ISO:
        raise ValueError  # another calendar: left as the map it is
    names = _FIELDS[kind]
    fields = [term[k[n]] for n in names]
    if "microsecond" in names:
        fields[-1] = _usec(term)
    if any(type(f) is not int for f in fields) or len(term) != len(names) + _EXTRA[kind]:
        raise ValueError
    if kind == DATE:
        return dt.date(*fields)
    if kind == TIME:
        return dt.time(*fields)
    if kind == NAIVE_DATETIME:
        return dt.datetime(*fields)
    return dt.datetime(*fields, tzinfo=_tzinfo(dt, term))  # type: ignore[misc]  # (no 8th field)


_DAY = ("year", "month", "day")
_CLOCK = ("hour", "minute", "second", "microsecond")
_FIELDS = {DATE: _DAY, TIME: _CLOCK, NAIVE_DATETIME: _DAY + _CLOCK, DATETIME: _DAY + _CLOCK}
_EXTRA = {DATE: 2, TIME: 2, NAIVE_DATETIME: 2, DATETIME: 6}  # __struct__, calendar, zone fields


def _tzinfo(dt: Any, term: dict) -> Any:
    k = _K
    name, abbr = term[k["time_zone"]], term[k["zone_abbr"]]
    utc, std = term[k["utc_offset"]], term[k["std_offset"]]
    if not (type(name) is str and type(abbr) is str and type(utc) is int and type(std) is int):
        raise ValueError
    if name == "Etc/UTC" and utc == 0 and std == 0:
        return dt.timezone.utc
    if std == 0 and name == abbr == _offset_text(utc):
        return dt.timezone(dt.timedelta(seconds=utc))
    return elixir_zone(name, abbr, utc, std)


_zone_class: Any = None


def elixir_zone(name: str, abbr: str, utc_offset: int, std_offset: int) -> Any:
    """A fixed ``tzinfo`` that keeps an Elixir DateTime's zone fields, for an exact way back.

    ``.key`` is the zone's name (``ZoneInfo(dt.tzinfo.key)`` gives the full
    rules where the tz database has them); the offsets are the ones the
    DateTime had, so arithmetic across a DST change keeps them, as Elixir's
    own DateTime without a time zone database does.
    """
    global _zone_class
    if _zone_class is None:
        import datetime as dt

        class ElixirZone(dt.tzinfo):
            """A zone as an Elixir ``DateTime`` carried it: name, abbreviation, offsets."""

            __slots__ = ("key", "abbr", "utc_offset", "std_offset")

            def __init__(self, key: str, abbr: str, utc_offset: int, std_offset: int) -> None:
                self.key, self.abbr = key, abbr
                self.utc_offset, self.std_offset = utc_offset, std_offset

            def utcoffset(self, _dt: Any) -> Any:
                return dt.timedelta(seconds=self.utc_offset + self.std_offset)

            def dst(self, _dt: Any) -> Any:
                return dt.timedelta(seconds=self.std_offset)

            def tzname(self, _dt: Any) -> str:
                return self.abbr

            def __eq__(self, other: object) -> bool:
                if not isinstance(other, ElixirZone):
                    return NotImplemented
                return self.__reduce__()[1] == other.__reduce__()[1]

            def __hash__(self) -> int:
                return hash(self.__reduce__()[1])

            def __reduce__(self) -> tuple:
                return (elixir_zone, (self.key, self.abbr, self.utc_offset, self.std_offset))

            def __repr__(self) -> str:
                return f"ElixirZone({self.key!r}, {self.abbr!r}, {self.utc_offset}, " \
                       f"{self.std_offset})"  # fmt: skip

        _zone_class = ElixirZone
    return _zone_class(name, abbr, utc_offset, std_offset)
