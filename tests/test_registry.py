"""The method registry: declaring, finding, binding and describing methods (no subprocess)."""

from __future__ import annotations

import sys
import textwrap
import types

import pytest

import snakepit_py as snakepit
from snakepit_py._registry import (
    Registry,
    load_target,
    registry_from_class,
    registry_from_module,
)
from snakepit_py.errors import BadArguments, MethodNotFound, RegistryError


def _module(name: str, source: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    sys.modules[name] = mod
    exec(compile(textwrap.dedent(source), f"<{name}>", "exec"), mod.__dict__)
    return mod


def test_bare_and_configured_decorator():
    mod = _module(
        "reg_bare",
        """
        import snakepit_py as snakepit

        @snakepit.method
        def add(a: int, b: int) -> int:
            "Add two numbers."
            return a + b

        @snakepit.method(name="mul", timeout=2.5, doc="Multiply.")
        def multiply(a, b):
            return a * b
        """,
    )
    reg = registry_from_module(mod)
    assert sorted(reg.methods) == ["add", "mul"]
    assert reg.get("add").doc == "Add two numbers."
    assert reg.get("mul").timeout == 2.5
    assert reg.get("mul").doc == "Multiply."
    # The decorated function is still an ordinary function.
    assert mod.add(1, 2) == 3


def test_unknown_option_fails_at_import_with_a_hint():
    with pytest.raises(RegistryError, match="unknown option 'timout'.*did you mean 'timeout'"):

        @snakepit.method(timout=1)
        def f():
            pass


def test_positional_option_is_explained():
    with pytest.raises(RegistryError, match="keyword-only options"):
        snakepit.method("name")


def test_bad_timeout_is_refused():
    with pytest.raises(RegistryError, match="positive number"):
        snakepit.method(timeout=-1)


def test_duplicate_names_in_a_module_fail_at_import():
    with pytest.raises(RegistryError, match="duplicate method name 'x'"):
        _module(
            "reg_dup",
            """
            import snakepit_py as snakepit

            @snakepit.method(name="x")
            def one(): pass

            @snakepit.method(name="x")
            def two(): pass
            """,
        )


def test_duplicate_names_in_a_class_fail_when_loaded():
    class Dup:
        @snakepit.method(name="same")
        def a(self):
            pass

        @snakepit.method(name="same")
        def b(self):
            pass

    with pytest.raises(RegistryError, match="duplicate method name 'same'"):
        registry_from_class(Dup)


def test_private_names_are_never_callable():
    with pytest.raises(RegistryError, match="starting with '_'"):

        @snakepit.method
        def _hidden():
            pass

    class Plain:
        def visible(self):
            return 1

        def _hidden(self):
            return 2

    reg = registry_from_class(Plain)
    assert list(reg.methods) == ["visible"]
    with pytest.raises(MethodNotFound):
        reg.get("_hidden")


def test_plain_class_exposes_public_methods_and_keeps_health_hook_apart():
    class Plain:
        def __init__(self):
            self.n = 0

        def bump(self):
            self.n += 1
            return self.n

        @staticmethod
        def static(x):
            return x

        def health_check(self):
            return {"n": self.n}

    reg = registry_from_class(Plain)
    assert sorted(reg.methods) == ["bump", "static"]
    assert reg.get("bump").fn() == 1
    assert reg.health_hook() == {"n": 1}


def test_class_with_marked_members_exposes_only_those():
    class Marked:
        @snakepit.method
        def exposed(self):
            return "yes"

        def helper(self):
            return "no"

    reg = registry_from_class(Marked)
    assert list(reg.methods) == ["exposed"]


def test_bare_decorator_over_staticmethod_and_classmethod():
    # Given @method above @staticmethod / @classmethod, bare and with options
    # (a classmethod object is not callable: the bare form used to take it for
    # a misplaced positional option and refuse it)
    class Members:
        scale = 10

        @snakepit.method
        @staticmethod
        def double(x: int) -> int:
            return 2 * x

        @snakepit.method
        @classmethod
        def scaled(cls, x: int) -> int:
            return cls.scale * x

        @snakepit.method(name="tripled")
        @classmethod
        def triple(cls, x: int) -> int:
            return 3 * x

    # When the class is loaded, Then all three are methods, bound as the class binds them
    reg = registry_from_class(Members)
    assert sorted(reg.methods) == ["double", "scaled", "tripled"]
    assert reg.get("double").fn(2) == 4
    assert reg.get("scaled").fn(2) == 20
    assert reg.get("tripled").fn(2) == 6
    assert Members.scaled(1) == 10


def test_module_with_two_method_classes_asks_for_a_choice():
    mod = _module(
        "reg_two",
        """
        import snakepit_py as snakepit

        class A:
            @snakepit.method
            def a(self): pass

        class B:
            @snakepit.method
            def b(self): pass
        """,
    )
    with pytest.raises(RegistryError, match="reg_two:A"):
        registry_from_module(mod)


def test_load_target_forms(tmp_path):
    path = tmp_path / "my_worker.py"
    path.write_text(
        textwrap.dedent(
            """
            import snakepit_py as snakepit

            @snakepit.method
            def ping():
                return "pong"

            class Other:
                def hi(self):
                    return "hi"
            """
        )
    )
    assert list(load_target(str(path)).methods) == ["ping"]
    assert list(load_target(f"{path}:Other").methods) == ["hi"]
    sys.path.insert(0, str(tmp_path))
    try:
        assert list(load_target("my_worker").methods) == ["ping"]
    finally:
        sys.path.remove(str(tmp_path))
    with pytest.raises(RegistryError, match="not found"):
        load_target(str(tmp_path / "missing.py"))
    with pytest.raises(RegistryError, match="no attribute"):
        load_target(f"{path}:Nope")


def _reg(fn) -> Registry:
    return registry_from_module(types.SimpleNamespace(**{fn.__name__: fn}, __name__="ns"))


def test_binding_reports_the_signature():
    @snakepit.method
    def f(a: int, b: int = 2, *, c: str = "x"):
        return a

    m = Registry([__import__("snakepit_py._registry")._registry.Method.build("f", f, None)]).get(
        "f"
    )
    assert m.bind([1], {}) == ((1,), {})
    assert m.bind([1], {"c": "y"}) == ((1,), {"c": "y"})
    with pytest.raises(BadArguments) as err:
        m.bind([], {})
    assert "missing a required argument" in str(err.value)
    assert err.value.signature == "f(a: int, b: int = 2, *, c: str = 'x')"
    with pytest.raises(BadArguments, match="unexpected keyword"):
        m.bind([1], {"zzz": 1})
    with pytest.raises(BadArguments, match="too many"):
        m.bind([1, 2, 3], {})


@pytest.mark.parametrize(
    ("annotation", "good", "bad"),
    [
        ("int", [1, -5, 2**70], [1.5, "1", True]),
        ("float", [1.5, 2], ["1.5", None, False]),
        ("str", ["x", ""], [b"\xff", 1]),
        ("bool", [True, False], [1, "true"]),
        ("list", [[1], []], [(1,), "x"]),
        ("dict", [{}, {"a": 1}], [[], "x"]),
        ("tuple", [(1,), ()], [[1]]),
    ],
)
def test_simple_annotations_are_checked(annotation, good, bad):
    ns: dict = {}
    exec(f"def f(x: {annotation}): return x", ns)
    from snakepit_py._registry import Method

    m = Method.build("f", ns["f"], None)
    for value in good:
        m.bind([value], {})
    for value in bad:
        with pytest.raises(BadArguments, match="argument 'x' must be"):
            m.bind([value], {})


def test_int_is_accepted_as_float_and_bytes_from_str():
    from snakepit_py._registry import Method

    def f(x: float, data: bytes):
        return x, data

    m = Method.build("f", f, None)
    args, _ = m.bind([2, "héllo"], {})
    assert args == (2.0, "héllo".encode()) and type(args[0]) is float


def test_none_allowed_when_default_is_none():
    from snakepit_py._registry import Method

    def f(x: int = None):  # noqa: RUF013
        return x

    assert Method.build("f", f, None).bind([None], {}) == ((None,), {})


def test_describe_catalogue_shape():
    from snakepit_py._registry import Method

    @snakepit.method(timeout=1.5)
    def f(a: int, /, b="d", *rest, c: str, **more) -> int:
        """Doc line."""
        return 1

    d = Method.build("f", f, f.__snakepit_method__).describe()
    assert d["name"] == "f" and d["doc"] == "Doc line." and d["timeout_ms"] == 1500
    assert d["streaming"] is False and d["async"] is False
    kinds = [(p["name"], p["kind"], p["required"]) for p in d["params"]]
    assert kinds == [
        ("a", "positional_only", True),
        ("b", "positional_or_keyword", False),
        ("rest", "var_positional", False),
        ("c", "keyword_only", True),
        ("more", "var_keyword", False),
    ]
    assert d["params"][0]["annotation"] == "int" and d["params"][1]["default"] == "d"


def test_generators_and_async_are_detected():
    from snakepit_py._registry import Method

    def gen():
        yield 1

    async def coro():
        return 1

    async def agen():
        yield 1

    assert Method.build("g", gen, None).streaming
    assert Method.build("c", coro, None).is_async
    m = Method.build("a", agen, None)
    assert m.is_async and m.streaming and m.is_async_generator
