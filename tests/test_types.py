"""The types of docs/types.md: results as terms, Elixir structs and annotations as Python values.

In process: the codec's mapping (numpy scalars and arrays of every dtype,
datetimes, decimals...) and property tests of its round trips. Through a
worker (tests/workers/rich_types.py): coercion by annotation and its
errors, describe, and that none of this costs a worker's start its imports.
The round trips through a real BEAM are in elixir_harness/test/snakepit/types_test.exs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import uuid
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
from conftest import worker_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as nps

from snakepit_py import Atom
from snakepit_py._coerce import converter
from snakepit_py.codec import etf, msgpack
from snakepit_py.errors import CallError, EncodeError
from snakepit_py.testing import FakeSupervisor

TENSOR = Atom("Elixir.Snakepit.Tensor")
NX_TYPES = {
    "bool": ("u", 8), "int8": ("s", 8), "int16": ("s", 16), "int32": ("s", 32),
    "int64": ("s", 64), "uint8": ("u", 8), "uint16": ("u", 16), "uint32": ("u", 32),
    "uint64": ("u", 64), "float16": ("f", 16), "float32": ("f", 32), "float64": ("f", 64),
    "complex64": ("c", 64), "complex128": ("c", 128),
}  # fmt: skip


def round_trip(value: Any) -> Any:
    return etf.decode(etf.encode(value))


def to_array(term: Any) -> np.ndarray:
    conv = converter(np.ndarray)
    assert conv is not None
    return conv(term)


# --- results: numpy ---------------------------------------------------------------------


def test_numpy_scalars_become_integers_floats_and_booleans() -> None:
    values = [np.int64(3), np.uint8(7), np.float32(0.5), np.float64(2.25), np.bool_(True)]
    decoded = round_trip(values)
    assert decoded == [3, 7, 0.5, 2.25, True]
    assert [type(v) for v in decoded] == [int, int, float, float, bool]


@pytest.mark.parametrize("dtype", sorted(NX_TYPES))
@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3), (2, 1, 4)])
def test_an_array_is_a_tensor_map_in_nx_layout(dtype: str, shape: tuple) -> None:
    arr = (np.arange(math.prod(shape)) % 7).astype(dtype).reshape(shape)
    term = round_trip({"x": arr})["x"]
    assert term[Atom("__struct__")] == TENSOR
    assert term[Atom("type")] == NX_TYPES[dtype]
    assert term[Atom("shape")] == shape
    data = term[Atom("data")]
    # Row-major, little-endian: the bytes Nx.to_binary gives on a little-endian machine.
    raw = data.encode() if isinstance(data, str) else data
    little = arr.astype(arr.dtype.newbyteorder("<"))
    assert raw == (little.astype(np.uint8) if dtype == "bool" else little).tobytes(order="C")
    back = to_array(term)
    assert back.shape == shape and np.array_equal(back, arr)


def test_big_endian_and_non_contiguous_arrays_are_sent_little_endian_row_major() -> None:
    big = np.arange(6, dtype=">i4").reshape(2, 3)
    assert round_trip(big)[Atom("data")] == np.arange(6, dtype="<i4").tobytes().decode()
    strided = np.arange(12, dtype=np.float64).reshape(3, 4).T[::2]
    term = round_trip(strided)
    assert term[Atom("shape")] == (2, 3)
    assert np.array_equal(to_array(term), strided)


def test_the_same_array_through_msgpack() -> None:
    arr = np.linspace(0, 1, 5, dtype=np.float32)
    assert np.array_equal(to_array(msgpack.decode(msgpack.encode(arr))), arr)


@pytest.mark.parametrize(
    "value",
    [np.array([object()]), np.array(["a"]), np.ma.masked_array([1, 2], mask=[0, 1]),
     np.array([1], dtype=np.longdouble), np.longdouble(1)],
    ids=["object", "str", "masked", "longdouble-array", "longdouble"],
)  # fmt: skip
def test_arrays_with_no_tensor_form_are_refused_clearly(value: Any) -> None:
    with pytest.raises(EncodeError, match="no tensor form|convert it"):
        etf.encode(value)


def test_a_complex_scalar_is_a_tensor_of_shape_nothing() -> None:
    term = round_trip(np.complex64(1 + 2j))
    assert term[Atom("type")] == ("c", 64) and term[Atom("shape")] == ()
    assert to_array(term)[()] == 1 + 2j


# --- results: NaN and infinities --------------------------------------------------------


def test_nan_and_infinities_are_nx_atoms_for_scalars_and_bits_in_arrays() -> None:
    scalars = [math.nan, math.inf, -math.inf, np.float32("nan"), np.float64("-inf")]
    assert round_trip(scalars) == [Atom("nan"), Atom("infinity"), Atom("neg_infinity"),
                                   Atom("nan"), Atom("neg_infinity")]  # fmt: skip
    arr = np.array([math.nan, math.inf, -math.inf, 1.0], dtype=np.float32)
    back = to_array(round_trip(arr))
    assert np.isnan(back[0]) and back[1] == math.inf and back[2] == -math.inf and back[3] == 1


def test_a_float_parameter_takes_the_atoms_back() -> None:
    conv = converter(list[float])
    assert conv is not None
    out = conv([Atom("nan"), Atom("infinity"), Atom("neg_infinity"), 2])
    assert math.isnan(out[0]) and out[1:] == [math.inf, -math.inf, 2.0]


# --- results: the other types -----------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    TWO = 2


@dataclasses.dataclass
class Inner:
    at: dt.date


@dataclasses.dataclass
class Outer:
    name: str
    inner: Inner
    tags: frozenset


def test_uuid_path_enum_set_and_dataclasses_become_plain_terms() -> None:
    u = uuid.UUID(int=1)
    value = [u, PurePosixPath("/a/b"), Path("x"), Color.RED, Color.TWO, {3}, frozenset()]
    assert round_trip(value) == [str(u), "/a/b", "x", "red", 2, [3], []]
    nested = round_trip(Outer("o", Inner(dt.date(2020, 1, 2)), frozenset({1})))
    assert nested == {"name": "o", "inner": {"at": dt.date(2020, 1, 2)}, "tags": [1]}


def test_datetime_structs_carry_elixirs_exact_fields() -> None:
    utc = etf.decode(etf.encode([dt.datetime(2026, 12, 1, 12, 0, 0, 5, tzinfo=dt.timezone.utc)]))
    assert utc == [dt.datetime(2026, 12, 1, 12, 0, 0, 5, tzinfo=dt.timezone.utc)]
    from snakepit_py.codec import _types

    term = _types.to_term(dt.datetime(2020, 1, 1, 10, tzinfo=dt.timezone(dt.timedelta(hours=2))))
    fields = {str(k): v for k, v in term.items()}
    assert fields == {
        "__struct__": Atom("Elixir.DateTime"), "calendar": Atom("Elixir.Calendar.ISO"),
        "year": 2020, "month": 1, "day": 1, "hour": 10, "minute": 0, "second": 0,
        "microsecond": (0, 6), "time_zone": "+02:00", "zone_abbr": "+02:00",
        "utc_offset": 7200, "std_offset": 0,
    }  # fmt: skip
    naive = {str(k) for k in _types.to_term(dt.datetime(2020, 1, 1))}
    assert naive == {"__struct__", "calendar", "year", "month", "day", "hour", "minute",
                     "second", "microsecond"}  # fmt: skip
    assert round_trip([dt.date(1, 1, 1), dt.time(23, 59, 59, 999999)]) == [
        dt.date(1, 1, 1), dt.time(23, 59, 59, 999999)
    ]  # fmt: skip


def test_a_named_zone_keeps_its_name_abbreviation_and_offsets() -> None:
    from zoneinfo import ZoneInfo

    summer = dt.datetime(2020, 7, 1, 12, tzinfo=ZoneInfo("Europe/Paris"))
    back = round_trip(summer)
    assert back == summer and back.utcoffset() == summer.utcoffset()
    assert (back.tzinfo.key, back.tzname(), back.dst()) == ("Europe/Paris", "CEST",
                                                           dt.timedelta(hours=1))  # fmt: skip
    assert round_trip(back) == back and round_trip(back).tzinfo == back.tzinfo


def test_a_struct_with_odd_fields_stays_a_map() -> None:
    odd = {Atom("__struct__"): Atom("Elixir.Date"), Atom("calendar"): Atom("Elixir.Calendar.ISO"),
           Atom("year"): 2020, Atom("month"): 13, Atom("day"): 1}  # fmt: skip
    assert round_trip(odd) == odd
    other = {Atom("__struct__"): Atom("Elixir.URI"), Atom("host"): "x"}
    assert round_trip(other) == other
    # A binary key "__struct__" is no struct.
    assert round_trip({"__struct__": Atom("Elixir.Decimal")}) == {"__struct__": "Elixir.Decimal"}


# --- property tests ---------------------------------------------------------------------

_offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda m: dt.timezone(dt.timedelta(minutes=m))
)


@given(st.datetimes(timezones=st.one_of(st.none(), _offsets, st.just(dt.timezone.utc))))
def test_datetimes_with_any_offset_come_back_equal(value: dt.datetime) -> None:
    back = round_trip(value)
    assert back == value and back.utcoffset() == value.utcoffset()
    assert (back.year, back.hour, back.microsecond) == (value.year, value.hour, value.microsecond)


@given(st.decimals(allow_nan=True, allow_infinity=True).filter(lambda d: not d.is_snan()))
def test_decimals_come_back_exact(value: Decimal) -> None:
    back = round_trip(value)
    if value.is_nan():  # (a NaN's diagnostic digits have no place in the struct)
        assert back.is_qnan() and back.is_signed() == value.is_signed()
    else:
        assert back.as_tuple() == value.as_tuple()


_dtypes = st.sampled_from(sorted(NX_TYPES)).flatmap(
    lambda name: st.sampled_from([np.dtype(name), np.dtype(name).newbyteorder(">")])
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(_dtypes.flatmap(lambda d: nps.arrays(d, nps.array_shapes(min_dims=0, min_side=0))))
def test_arrays_of_every_dtype_come_back_equal(arr: np.ndarray) -> None:
    back = to_array(round_trip(arr))
    want = arr.astype(np.uint8) if arr.dtype == np.bool_ else arr
    assert back.shape == arr.shape and back.dtype == want.dtype.newbyteorder("=")
    assert np.array_equal(back, want, equal_nan=arr.dtype.kind in "fc")


# --- arguments, through a worker --------------------------------------------------------


@pytest.fixture(scope="module")
def rich() -> Any:
    with FakeSupervisor(worker_path("rich_types.py"), record=False) as sup:
        yield sup


def test_structs_arrive_as_python_values_whatever_the_annotation(rich: Any) -> None:
    values = [dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2020, 1, 1),
              dt.date(2020, 1, 1), dt.time(1), Decimal("1.5")]  # fmt: skip
    assert rich.call("types_of", *values) == ["datetime", "datetime", "date", "time", "Decimal"]


def test_strings_maps_and_lists_are_coerced_by_annotation(rich: Any) -> None:
    utc = dt.timezone.utc
    assert rich.call("when", "2026-12-01T12:00:00Z") == dt.datetime(2026, 12, 1, 12, tzinfo=utc)
    assert rich.call("later", "2026-12-01T12:00:00+02:00", 60).utcoffset() == dt.timedelta(hours=2)
    assert rich.call("day", "2020-02-29") == dt.date(2020, 2, 29)
    assert rich.call("clock", "10:11:12.5") == dt.time(10, 11, 12, 500000)
    assert rich.call("double", "0.10") == Decimal("0.20")
    assert rich.call("double", 3) == Decimal(6)
    assert rich.call("ident", "12345678-1234-5678-1234-567812345678") == "1234567812345678" * 2
    assert rich.call("parent", "/a/b/c") == "/a/b"
    assert rich.call("color", "red") == "red" and rich.call("color", Atom("BLUE")) == 2
    assert rich.call("shape", {Atom("name"): "tri", "points": [{"x": 1}, {"x": 2, "y": 3}]}) == {
        "name": "tri", "points": [{"x": 1.0, "y": 0.0}, {"x": 2.0, "y": 3.0}], "at": None
    }  # fmt: skip
    assert rich.call("box", {"width": 3}) == {"width": 3, "label": "box"}
    order = rich.call("order", {"id": 1, "total": "2.50", "placed": "2020-01-01T00:00:00Z"})
    assert order["total"] == Decimal("2.50") and order["placed"].year == 2020
    assert rich.call("points", [{"x": 1}], kwargs={"scale": {"k": "0.5"}}) == [
        (1.0, 0.0), ("k", Decimal("0.5"))
    ]  # fmt: skip


def test_an_array_parameter_takes_a_tensor_or_nested_lists(rich: Any) -> None:
    tensor = rich.call("array", "int16", [2, 3])
    assert rich.call("stats", tensor) == {"dtype": "int16", "shape": [2, 3], "sum": 15.0}
    assert rich.call("stats", [[1.5, 2.5]]) == {"dtype": "float64", "shape": [1, 2], "sum": 4.0}


@pytest.mark.parametrize(
    ("method", "args", "message"),
    [
        ("when", [5], "argument 't' must be DateTime.t() | NaiveDateTime.t() or an ISO 8601"),
        ("when", ["yesterday"], "got 'yesterday' (str)"),
        ("day", [dt.datetime(2020, 1, 1)], "argument 'd' must be Date.t()"),
        ("double", ["1,5"], "argument 'd' must be Decimal.t()"),
        ("ident", ["nope"], "argument 'u' must be a UUID string"),
        ("color", ["green"], "one of Color's values ('red', 2) or names"),
        ("shape", [{"name": "x", "points": [{"x": "no"}]}],
         "argument 's'['points'][0]['x'] must be float()"),
        ("shape", [{"points": []}], "got a map without 'name'"),
        ("shape", [{"name": "x", "points": [], "extra": 1}], "unknown keys 'extra'"),
        ("order", [{"id": "x", "total": 1, "placed": "2020-01-01"}], "Order refused"),
        ("stats", [[[1, 2], [3]]], "nested lists of numbers (of one rectangular shape)"),
        ("points", [[{"x": 1}], {"k": "x"}], "argument 'scale'['k'] must be Decimal.t()"),
    ],
)  # fmt: skip
def test_values_that_cannot_be_coerced_are_bad_arguments(
    rich: Any, method: str, args: list, message: str
) -> None:
    with pytest.raises(CallError) as info:
        rich.call(method, *args)
    assert info.value.kind == "bad_arguments"
    assert message in str(info.value), str(info.value)


def test_describe_shows_the_elixir_type_each_parameter_accepts(rich: Any) -> None:
    methods = {m["name"]: m for m in rich.describe()["methods"]}
    types = {p["name"]: p["type"] for p in methods["points"]["params"]}
    assert types == {
        "xs": "list(a map of Point's fields (string or atom keys))",
        "scale": "%{String.t() => Decimal.t() | integer() | float() | a decimal string} | nil",
    }
    assert methods["echo"]["params"][0]["type"] is None
    assert methods["stats"]["params"][0]["type"] == "Snakepit.Tensor.t() or nested lists of numbers"


def test_results_the_codec_cannot_carry_say_why(rich: Any) -> None:
    refusals = [("object", "dtype object has no tensor form"), ("sNaN", "no signalling NaN"),
                ("tz_time", "Time has no offset")]  # fmt: skip
    for what, why in refusals:
        with pytest.raises(CallError) as info:
            rich.call("refused", what)
        assert info.value.kind == "unencodable" and why in str(info.value)


# --- cost: nothing imported that the worker's code did not import ------------------------

LEAN = (
    "import sys\nimport snakepit_py as snakepit\n\n"
    "@snakepit.method\ndef loaded(names):\n    return [n for n in names if n in sys.modules]\n\n"
    "@snakepit.method\ndef take(x):\n    return 'ok'\n"
)
OPTIONAL = [
    "numpy", "pydantic", "attrs", "attr", "decimal", "uuid", "pathlib", "datetime",
    "dataclasses", "zoneinfo", "snakepit_py._coerce", "snakepit_py.codec._types",
]  # fmt: skip


def test_a_worker_imports_none_of_the_optional_types_it_does_not_use(tmp_path: Path) -> None:
    script = tmp_path / "lean_types_worker.py"
    script.write_text(LEAN)
    unmeasured = {"COVERAGE_PROCESS_CONFIG": "", "COVERAGE_PROCESS_START": ""}
    with FakeSupervisor(str(script), env=unmeasured) as sup:
        # Given a started worker that has served plain calls,
        assert sup.call("take", [1, {"a": 2.5}]) == "ok"
        # then none of the optional modules (nor the type mapping itself) is loaded;
        assert sup.call("loaded", OPTIONAL) == []
        # and a date the BEAM sends loads datetime, for that value, and nothing else.
        assert sup.call("take", dt.date(2020, 1, 1)) == "ok"
        assert sup.call("loaded", OPTIONAL) == ["datetime", "snakepit_py.codec._types"]


def test_a_type_with_its_own_hooks_goes_both_ways(rich: Any) -> None:
    assert rich.call("fee", ("10.00", "EUR"), "0.5") == ("5.000", "EUR")
    with pytest.raises(CallError) as info:
        rich.call("fee", "ten euros", "0.5")
    assert info.value.kind == "bad_arguments"
    assert "argument 'm' must be {amount :: String.t(), currency :: String.t()}" in str(info.value)
    methods = {m["name"]: m for m in rich.describe()["methods"]}
    assert methods["fee"]["params"][0]["type"] == "{amount :: String.t(), currency :: String.t()}"


def test_the_embeddings_example_returns_numpy_results_as_terms() -> None:
    example = str(Path(__file__).resolve().parent.parent / "examples" / "embeddings_worker.py")
    with FakeSupervisor(example, record=False) as sup:
        vectors = sup.call("embed", ["a good movie", "a bad plot"])
        assert vectors[Atom("type")] == ("f", 32) and vectors[Atom("shape")] == (2, 8)
        added = sup.call("add", ["a good movie", "a bad plot"])
        assert added["count"] == 2 and added["updated"].tzinfo is dt.timezone.utc
        first = to_array(vectors)[0]
        best = sup.call("search", first, 1)  # a tensor as the query (numpy encodes as one)
        assert best == sup.call("search", first.tolist(), 1)  # or a list of floats
        assert best[0]["index"] == 0 and best[0]["text"] == "a good movie"
