"""Declaring methods (``@method``), finding them in a TARGET, binding arguments, ``describe``."""

from __future__ import annotations

import os
import sys
from types import FunctionType, ModuleType

from .errors import BadArguments, MethodNotFound, RegistryError

try:  # what importlib.util re-exports, without importing it (~2 ms of a worker's start-up)
    from _frozen_importlib import module_from_spec as _module_from_spec
    from _frozen_importlib_external import spec_from_file_location as _spec_from_file_location
except ImportError:  # pragma: no cover - other interpreters
    from importlib.util import module_from_spec as _module_from_spec
    from importlib.util import spec_from_file_location as _spec_from_file_location

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    import inspect
    from collections.abc import Callable
    from typing import Any


__all__ = ["method", "Method", "Registry", "load_target", "registry_from_module"]

_MARK = "__snakepit_method__"
_OPTIONS = ("name", "timeout", "doc", "streaming")
# Module-level declarations seen so far, to refuse duplicates at import time:
# {module name: {method name: function qualname}}.
_declared: dict[str, dict[str, str]] = {}


class _Options:
    """The options given to ``@method``."""

    __slots__ = ("name", "timeout", "doc", "streaming")

    def __init__(self, name: str | None = None, timeout: float | None = None,
                 doc: str | None = None, streaming: bool | None = None) -> None:  # fmt: skip
        self.name = name
        self.timeout = timeout
        self.doc = doc
        self.streaming = streaming


def method(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Mark a function (or a class member) as callable from the supervisor.

    Works bare (``@method``) and with keyword-only options
    (``@method(name="predict", timeout=5.0, doc="...", streaming=True)``).

    Raises:
        RegistryError: an unknown option, a bad option value, or a duplicate
            method name in the same module.
    """
    if fn is not None and not callable(fn):
        raise RegistryError(
            f"@method takes keyword-only options, e.g. @method(name={fn!r}); got: {fn!r}"
        )
    opts = _check_options(options)
    if fn is None:
        return lambda f: _mark(f, opts)
    return _mark(fn, opts)


def reject_unknown_options(
    decorator: str, options: dict[str, Any], allowed: tuple[str, ...]
) -> None:
    """Raise RegistryError for the first option of ``decorator`` not in ``allowed``, with a hint."""
    for key in options:
        if key not in allowed:
            import difflib

            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RegistryError(
                f"{decorator} got an unknown option {key!r}{hint}; "
                f"valid options are: {', '.join(allowed)}"
            )


def _check_options(options: dict[str, Any]) -> _Options:
    reject_unknown_options("@method", options, _OPTIONS)
    name = options.get("name")
    if name is not None and (not isinstance(name, str) or not name or name.startswith("_")):
        raise RegistryError(
            f"@method(name=...) must be a non-empty str not starting with '_'; got: {name!r}"
        )
    timeout = options.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise RegistryError(
            f"@method(timeout=...) is in seconds and must be a positive number; got: {timeout!r}"
        )
    return _Options(**options)


def _mark(fn: Callable[..., Any], opts: _Options) -> Callable[..., Any]:
    target = fn.__func__ if isinstance(fn, (staticmethod, classmethod)) else fn
    name = opts.name or getattr(target, "__name__", None)
    if not name or name.startswith("_"):
        raise RegistryError(
            f"{target!r} would be called {name!r}: names starting with '_' are never callable; "
            "rename it or pass @method(name=...)"
        )
    qualname = getattr(target, "__qualname__", name)
    module = getattr(target, "__module__", None)
    if module and "." not in qualname:  # a module-level function: check duplicates now
        seen = _declared.setdefault(module, {})
        if seen.get(name, qualname) != qualname:
            raise RegistryError(
                f"duplicate method name {name!r} in module {module}: both {seen[name]}() and "
                f"{qualname}() claim it; rename one or pass @method(name=...)"
            )
        seen[name] = qualname
    setattr(target, _MARK, opts)
    return fn


def _is_marked(obj: Any) -> bool:
    target = obj.__func__ if isinstance(obj, (staticmethod, classmethod)) else obj
    return isinstance(getattr(target, _MARK, None), _Options)


# --- argument checking -------------------------------------------------------------------

_SIMPLE = {"int": int, "float": float, "str": str, "bytes": bytes, "bool": bool,
           "list": list, "dict": dict, "tuple": tuple}  # fmt: skip


def _simple_type(annotation: Any) -> type | None:
    if isinstance(annotation, str):
        return _SIMPLE.get(annotation.strip())
    if isinstance(annotation, type) and annotation.__name__ in _SIMPLE:
        return annotation if _SIMPLE[annotation.__name__] is annotation else None
    return None


_NO_KWARGS: dict[str, Any] = {}  # shared: calls unpack it (**), never mutate it


class _Mismatch(Exception):
    pass


def _converter(kind: type) -> Callable[[Any], Any]:
    """Return a function that checks (and where the protocol says, converts) one value."""
    if kind is int:

        def conv(v: Any) -> Any:
            if type(v) is int or (isinstance(v, int) and not isinstance(v, bool)):
                return v
            raise _Mismatch

    elif kind is float:

        def conv(v: Any) -> Any:
            if type(v) is float:
                return v
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
            raise _Mismatch

    elif kind is str:

        def conv(v: Any) -> Any:
            if isinstance(v, str):
                return v
            if isinstance(v, (bytes, bytearray)):
                raise _Mismatch("a binary that is not valid UTF-8")
            raise _Mismatch

    elif kind is bytes:

        def conv(v: Any) -> Any:
            if isinstance(v, str):
                return v.encode("utf-8")
            if isinstance(v, (bytes, bytearray, memoryview)):
                return bytes(v)
            raise _Mismatch

    else:

        def conv(v: Any) -> Any:
            if isinstance(v, kind) and not (kind is int and isinstance(v, bool)):
                return v
            raise _Mismatch

    return conv


def _describe_value(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


# --- methods ------------------------------------------------------------------------------


_CO_GENERATOR, _CO_COROUTINE, _CO_ASYNC_GENERATOR = 0x20, 0x80, 0x200


def _code_flags(fn: Any) -> int:
    """The code flags of the function behind ``fn`` (bound method, staticmethod, wrapper)."""
    seen = 0
    while seen < 100:
        seen += 1
        if hasattr(fn, "__func__"):
            fn = fn.__func__
        elif hasattr(fn, "__wrapped__"):
            fn = fn.__wrapped__
        else:
            break
    code = getattr(fn, "__code__", None)
    return code.co_flags if code is not None else 0


class Method:
    """One callable method of a worker.

    What needs ``inspect`` (the signature, argument checks, the docstring) is
    worked out on first use, not at start-up: ``inspect`` and what it imports
    cost more than the rest of a worker's start.
    """

    def __init__(self, name: str, fn: Callable[..., Any], *, doc: str | None = None,
                 timeout: float | None = None, streaming: bool = False,
                 is_async: bool = False, is_generator: bool = False,
                 is_async_generator: bool = False) -> None:  # fmt: skip
        self.name = name
        self.fn = fn
        self.timeout = timeout
        self.streaming = streaming
        self.is_async = is_async
        self.is_generator = is_generator
        self.is_async_generator = is_async_generator
        self._doc = doc
        self._sig: inspect.Signature | None = None
        self._checks: dict[str, Callable[[Any], Any]] = {}
        self._fast: list[Callable[[Any], Any] | None] | None = None
        self._fast_min = 0
        # (fewest, most) positional arguments of a method with only plain
        # positional parameters and no annotation checks: such a call binds by
        # a length check alone (the common case, on every call). Set by _prepare.
        self.plain_arity: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"<Method {self.name}>"

    @classmethod
    def build(cls, name: str, fn: Callable[..., Any], opts: _Options | None) -> Method:
        """Describe ``fn`` as a method (what kind of callable it is; the rest on first use)."""
        opts = opts or _Options()
        flags = _code_flags(fn)
        is_agen = bool(flags & _CO_ASYNC_GENERATOR)
        is_gen = bool(flags & _CO_GENERATOR)
        return cls(
            name,
            fn,
            doc=opts.doc,
            timeout=opts.timeout,
            streaming=bool(opts.streaming) or is_gen or is_agen,
            is_async=bool(flags & _CO_COROUTINE) or is_agen,
            is_generator=is_gen,
            is_async_generator=is_agen,
        )

    @property
    def signature(self) -> inspect.Signature:
        """The function's signature (annotations evaluated where possible)."""
        if self._sig is None:
            self._prepare()
        return self._sig  # type: ignore[return-value]

    @property
    def doc(self) -> str:
        """The ``doc=`` option, else the docstring."""
        if self._doc is None:
            import inspect

            self._doc = inspect.getdoc(self.fn) or ""
        return self._doc

    def _prepare(self) -> None:
        import inspect

        try:
            sig = inspect.signature(self.fn, eval_str=True)
        except Exception:
            sig = inspect.signature(self.fn)
        for p in sig.parameters.values():
            kind = _simple_type(p.annotation)
            if kind is not None:
                self._checks[p.name] = _converter(kind)
        # Fast path: only plain positional parameters, bound positionally.
        params = list(sig.parameters.values())
        if all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
            self._fast = [self._checks.get(p.name) for p in params]
            self._fast_min = sum(1 for p in params if p.default is p.empty)
            if not self._checks:
                self.plain_arity = (self._fast_min, len(params))
        self._sig = sig

    def bind(self, args: list[Any], kwargs: dict[Any, Any]) -> tuple[tuple[Any, ...], dict]:
        """Bind and check arguments.

        Returns:
            The ``(args, kwargs)`` to call the function with.

        Raises:
            BadArguments: they do not bind, or a value fails its annotation.
        """
        plain = self.plain_arity
        if plain is not None and not kwargs and plain[0] <= len(args) <= plain[1]:
            return tuple(args), _NO_KWARGS
        if self._sig is None:
            self._prepare()
        fast = self._fast
        if fast is not None and not kwargs and self._fast_min <= len(args) <= len(fast):
            if not self._checks:
                return tuple(args), _NO_KWARGS
            out = list(args)
            for i, conv in enumerate(fast[: len(args)]):
                if conv is not None:
                    out[i] = self._check(conv, self._param_name(i), out[i])
            return tuple(out), _NO_KWARGS
        for key in kwargs:
            if not isinstance(key, str):
                raise BadArguments(
                    f"{self.name}(): keyword names must be strings; got: {key!r}", self.sig_text
                )
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise BadArguments(f"{self.name}(): {exc}", self.sig_text) from None
        if self._checks:
            params = self.signature.parameters
            for pname, value in bound.arguments.items():
                conv = self._checks.get(pname)
                if conv is None:
                    continue
                kind = params[pname].kind
                if kind is kind.VAR_POSITIONAL:
                    bound.arguments[pname] = tuple(self._check(conv, pname, v) for v in value)
                elif kind is kind.VAR_KEYWORD:
                    bound.arguments[pname] = {k: self._check(conv, k, v) for k, v in value.items()}
                else:
                    bound.arguments[pname] = self._check(conv, pname, value)
        return bound.args, bound.kwargs

    def _param_name(self, index: int) -> str:
        return list(self.signature.parameters)[index]

    def _check(self, conv: Callable[[Any], Any], pname: str, value: Any) -> Any:
        try:
            return conv(value)
        except _Mismatch as exc:
            param = self.signature.parameters.get(pname)
            if value is None and param is not None and param.default is None:
                return None
            want = _simple_type(param.annotation) if param is not None else None
            what = exc.args[0] if exc.args else f"a {type(value).__name__}"
            raise BadArguments(
                f"{self.name}(): argument {pname!r} must be "
                f"{want.__name__ if want else 'of the annotated type'}; "
                f"got {what}: {_describe_value(value)}",
                self.sig_text,
            ) from None

    @property
    def sig_text(self) -> str:
        """The signature as shown to callers, e.g. ``add(a: int, b: int) -> int``."""
        return f"{self.name}{_format_signature(self.signature)}"

    def describe(self) -> dict[str, Any]:
        """This method's entry in the ``describe`` catalogue (PROTOCOL.md §4)."""
        params = []
        for p in self.signature.parameters.values():
            params.append(
                {
                    "name": p.name,
                    "kind": p.kind.name.lower(),
                    "required": p.default is p.empty
                    and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD),
                    "default": None if p.default is p.empty else _plain_default(p.default),
                    "annotation": None
                    if p.annotation is p.empty
                    else _annotation_text(p.annotation),
                }
            )
        return {
            "name": self.name,
            "doc": self.doc,
            "params": params,
            "streaming": self.streaming,
            "async": self.is_async,
            "timeout_ms": None if self.timeout is None else int(self.timeout * 1000),
        }


def _annotation_text(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__qualname__
    import inspect

    return inspect.formatannotation(annotation)


def _format_signature(sig: inspect.Signature) -> str:
    return str(sig.replace(parameters=list(sig.parameters.values())))


def _plain_default(value: Any) -> Any:
    """Defaults go on the wire only when they are plain data; anything else as its repr."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, (list, tuple)) and all(
        v is None or isinstance(v, (bool, int, float, str)) for v in value
    ):
        return list(value)
    return repr(value)


class Registry:
    """The methods a worker serves, by name, plus its optional health hook."""

    def __init__(self, methods: list[Method], health_hook: Callable[[], Any] | None = None) -> None:
        self.methods: dict[str, Method] = {}
        for m in methods:
            if m.name in self.methods:
                raise RegistryError(
                    f"duplicate method name {m.name!r}: two definitions claim it; "
                    "rename one or pass @method(name=...)"
                )
            if m.name.startswith("_"):
                raise RegistryError(f"method names starting with '_' are not callable: {m.name!r}")
            self.methods[m.name] = m
        self.health_hook = health_hook
        self.instance: Any = None

    def get(self, name: str) -> Method:
        """Return the method called ``name``.

        Raises:
            MethodNotFound: there is none (names starting with ``_`` never exist).
        """
        m = self.methods.get(name)
        if m is None:
            raise MethodNotFound(name, sorted(self.methods))
        return m

    @property
    def has_async(self) -> bool:
        """True when any method needs the event loop."""
        return any(m.is_async for m in self.methods.values())

    def describe(self) -> dict[str, Any]:
        """The method catalogue (PROTOCOL.md §4)."""
        return {"methods": [self.methods[n].describe() for n in sorted(self.methods)]}


# --- finding methods in a TARGET ------------------------------------------------------------


def _methods_of_instance(obj: Any, cls: type) -> tuple[list[Method], Callable[[], Any] | None]:
    members = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        members.update(vars(klass))
    marked = {k: v for k, v in members.items() if _is_marked(v)}
    methods: list[Method] = []
    if marked:
        for attr, raw in marked.items():
            target = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
            opts: _Options = getattr(target, _MARK)
            name = opts.name or attr
            if name.startswith("_") or attr.startswith("_") and opts.name is None:
                raise RegistryError(
                    f"{cls.__qualname__}.{attr}: names starting with '_' are never callable"
                )
            methods.append(Method.build(name, getattr(obj, attr), opts))
    else:
        for attr, raw in members.items():
            if attr.startswith("_") or attr == "health_check":
                continue
            if isinstance(raw, (staticmethod, classmethod, FunctionType)):
                methods.append(Method.build(attr, getattr(obj, attr), None))
    hook = getattr(obj, "health_check", None)
    return methods, hook if callable(hook) else None


def _classes_with_methods(module: ModuleType) -> list[type]:
    found = []
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and value.__module__ == module.__name__
            and any(_is_marked(v) for v in vars(value).values())
        ):
            found.append(value)
    return found


def registry_from_class(cls: type) -> Registry:
    """Instantiate ``cls`` once and serve its methods."""
    try:
        instance = cls()
    except TypeError as exc:
        raise RegistryError(
            f"{cls.__qualname__} is instantiated once per worker with no arguments: {exc}"
        ) from exc
    methods, hook = _methods_of_instance(instance, cls)
    reg = Registry(methods, hook)
    reg.instance = instance
    return reg


def registry_from_module(module: ModuleType) -> Registry:
    """Serve a module's ``@method`` functions plus the one class in it with ``@method`` members."""
    methods = []
    for attr, value in vars(module).items():
        if not isinstance(value, type) and callable(value) and _is_marked(value):
            opts: _Options = getattr(value, _MARK)
            methods.append(Method.build(opts.name or attr, value, opts))
    hook = getattr(module, "health_check", None)
    hook = hook if isinstance(hook, FunctionType) else None
    classes = _classes_with_methods(module)
    instance = None
    if len(classes) > 1:
        names = ", ".join(c.__qualname__ for c in classes)
        raise RegistryError(
            f"module {module.__name__} has several classes with @method members ({names}); "
            f"name one as TARGET, e.g. {module.__name__}:{classes[0].__qualname__}"
        )
    if not classes and not methods:
        # Nothing decorated: a module defining exactly one public class serves
        # that class, so the plain getting-started class works as a file TARGET.
        plain = [
            v for k, v in vars(module).items()
            if isinstance(v, type) and v.__module__ == module.__name__ and not k.startswith("_")
        ]  # fmt: skip
        if len(plain) == 1:
            classes = plain
    if classes:
        reg = registry_from_class(classes[0])
        methods.extend(reg.methods.values())
        hook = reg.health_hook or hook
        instance = reg.instance
    reg = Registry(methods, hook)
    reg.instance = instance
    return reg


def _import_path(path: str) -> ModuleType:
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise RegistryError(f"worker file not found: {path}")
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = os.path.splitext(os.path.basename(path))[0]
    if not name.isidentifier():
        name = "snakepit_worker"
    spec = _spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RegistryError(f"cannot load {path} as a Python module")
    module = _module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_target(target: str) -> Registry:
    """Import TARGET (``path/worker.py``, ``pkg.mod`` or ``pkg.mod:Attr``) and build its registry.

    Raises:
        RegistryError: the target cannot be found or declares its methods wrongly.
    """
    mod_part, _, attr = target.partition(":")
    if mod_part.endswith(".py") or os.sep in mod_part:
        module = _import_path(mod_part)
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        import importlib  # here: a file target (the usual one) does without it

        module = importlib.import_module(mod_part)
    if not attr:
        return registry_from_module(module)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise RegistryError(f"{module.__name__} has no attribute {attr!r}") from None
    if isinstance(obj, type):
        return registry_from_class(obj)
    if isinstance(obj, ModuleType):
        return registry_from_module(obj)
    methods, hook = _methods_of_instance(obj, type(obj))
    reg = Registry(methods, hook)
    reg.instance = obj
    return reg
