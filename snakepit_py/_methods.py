"""Declaring methods (``@method``) and what one method is: its kind, signature, binding."""

from __future__ import annotations

from ._checks import Mismatch, converter, describe_value, simple_type
from .errors import BadArguments, RegistryError

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    import inspect
    from collections.abc import Callable
    from typing import Any, TypeVar, overload

    # What @method decorates, returned as it came: a function (or a class
    # member), or a staticmethod/classmethod object under it.
    _F = TypeVar(
        "_F", bound="Callable[..., Any] | staticmethod[Any, Any] | classmethod[Any, Any, Any]"
    )
else:

    def overload(fn):  # typing.overload, without importing typing: the last definition wins
        return fn


__all__ = ["method", "Method", "MethodOptions", "NO_KWARGS", "by_name", "marked_options",
           "reject_unknown_options"]  # fmt: skip

_MARK = "__snakepit_method__"
_OPTIONS = ("name", "timeout", "doc", "streaming", "idempotent")
# Module-level declarations seen so far, to refuse duplicates at import time:
# {module name: {method name: function qualname}}.
_declared: dict[str, dict[str, str]] = {}


class MethodOptions:
    """The options given to ``@method``."""

    __slots__ = ("name", "timeout", "doc", "streaming", "idempotent")

    def __init__(self, name: str | None = None, timeout: float | None = None,
                 doc: str | None = None, streaming: bool | None = None,
                 idempotent: bool = False) -> None:  # fmt: skip
        self.name = name
        self.timeout = timeout
        self.doc = doc
        self.streaming = streaming
        self.idempotent = idempotent


@overload
def method(fn: _F, /) -> _F: ...
@overload
def method(  # noqa: F811 (ruff does not see `overload` as typing's: it is not imported at run time)
    *,
    name: str | None = None,
    timeout: float | None = None,
    doc: str | None = None,
    streaming: bool | None = None,
    idempotent: bool = False,
) -> Callable[[_F], _F]: ...
def method(fn: Any = None, /, **options: Any) -> Any:  # noqa: F811
    """Mark a function (or a class member) as callable from the supervisor.

    Works bare (``@method``) and with keyword-only options
    (``@method(name="predict", timeout=5.0, doc="...", streaming=True)``).
    ``idempotent=True`` says a call may safely run twice: a pool retries it
    once on another worker when its worker dies before answering.

    Raises:
        RegistryError: an unknown option, a bad option value, or a duplicate
            method name in the same module.
    """
    if fn is not None and not callable(fn) and not isinstance(fn, classmethod):
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


def _check_options(options: dict[str, Any]) -> MethodOptions:
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
    idempotent = options.get("idempotent", False)
    if not isinstance(idempotent, bool):
        raise RegistryError(f"@method(idempotent=...) must be True or False; got: {idempotent!r}")
    return MethodOptions(**options)


def _mark(fn: Callable[..., Any], opts: MethodOptions) -> Callable[..., Any]:
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


def marked_options(obj: Any) -> MethodOptions | None:
    """The ``@method`` options ``obj`` was marked with (through static/classmethod), or None."""
    target = obj.__func__ if isinstance(obj, (staticmethod, classmethod)) else obj
    opts = getattr(target, _MARK, None)
    return opts if isinstance(opts, MethodOptions) else None


NO_KWARGS: dict[str, Any] = {}  # shared: calls unpack it (**), never mutate it

# Simple annotations whose converter passes a value of exactly that type through
# unchanged (``float`` takes ints too, but converts them; ``bytes`` takes UTF-8
# binaries, which arrive as ``str``, and converts them).
_ARRIVES_AS_IS = frozenset({int, float, str, bytes, bool, list, dict, tuple})


# --- methods ------------------------------------------------------------------------------


_CO_VARARGS, _CO_VARKEYWORDS = 0x04, 0x08
_CO_GENERATOR, _CO_COROUTINE, _CO_ASYNC_GENERATOR = 0x20, 0x80, 0x200
_FUNCTION = type(method)  # types.FunctionType, without importing types
_BOUND_METHOD = type(MethodOptions().__init__)  # type: ignore[misc]  # types.MethodType


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
                 is_async_generator: bool = False, idempotent: bool = False) -> None:  # fmt: skip
        self.name = name
        self.idempotent = idempotent
        self.fn = fn
        self.timeout = timeout
        self.streaming = streaming
        self.is_async = is_async
        self.is_generator = is_generator
        self.is_async_generator = is_async_generator
        self._doc = doc
        self._sig: inspect.Signature | None = None
        self._checks: dict[str, Callable[[Any], Any]] = {}
        # Positional binding without inspect, for methods whose parameters are
        # all plain positional ones: (fewest, most) arguments, and the checked
        # positions as (index, name, converter). Set by _prepare.
        self._arity: tuple[int, int] | None = None
        self._checked: tuple[tuple[int, str, Callable[[Any], Any]], ...] = ()
        # The same method with no annotation checks: a call binds by a length
        # check alone (the common case, on every call).
        self.plain_arity: tuple[int, int] | None = None
        # Every parameter annotated with a simple type its values arrive as
        # (``a: int, b: str``): {number of arguments: their exact types}. A call
        # whose arguments have exactly those types binds as it came, checked by
        # one tuple comparison; any other goes through the converters.
        self.exact_types: dict[int, tuple[type, ...]] | None = None

    def __repr__(self) -> str:
        return f"<Method {self.name}>"

    @classmethod
    def build(cls, name: str, fn: Callable[..., Any], opts: MethodOptions | None) -> Method:
        """Describe ``fn`` as a method (what kind of callable it is; the rest on first use)."""
        opts = opts or MethodOptions()
        flags = _code_flags(fn)
        is_agen = bool(flags & _CO_ASYNC_GENERATOR)
        is_gen = bool(flags & _CO_GENERATOR)
        made = cls(
            name,
            fn,
            doc=opts.doc,
            timeout=opts.timeout,
            streaming=bool(opts.streaming) or is_gen or is_agen,
            is_async=bool(flags & _CO_COROUTINE) or is_agen,
            is_generator=is_gen,
            is_async_generator=is_agen,
            idempotent=opts.idempotent,
        )
        made._prepare_positional()
        return made

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
        checks = {}
        for p in sig.parameters.values():
            kind = simple_type(p.annotation)
            if kind is not None:
                checks[p.name] = converter(kind)
            elif p.annotation is not p.empty:
                rich = self._rich_converter(p.annotation)
                if rich is not None:
                    checks[p.name] = rich
        params = list(sig.parameters.values())
        if self._arity is None and all(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params
        ):
            self._set_positional(
                [(p.name, p.default is p.empty, None if p.annotation is p.empty else p.annotation)
                 for p in params]
            )  # fmt: skip
        self._checks = checks
        self._sig = sig

    def _prepare_positional(self) -> None:
        """Set the positional fast paths from the function's code object, without ``inspect``.

        Only for a plain function (or a method bound to its instance) whose
        parameters are all positional and which wraps nothing; anything else
        is left to ``_prepare``. Importing ``inspect`` costs more than the rest
        of a worker's start, and a worker must answer its first call at once.
        """
        fn: Any = self.fn
        skip = 0
        if type(fn) is _BOUND_METHOD:
            fn, skip = fn.__func__, 1
        if type(fn) is not _FUNCTION or hasattr(fn, "__wrapped__") or hasattr(fn, "__signature__"):
            return
        code = fn.__code__
        if code.co_flags & (_CO_VARARGS | _CO_VARKEYWORDS) or code.co_kwonlyargcount:
            return
        names = code.co_varnames[: code.co_argcount]
        if len(names) < skip:
            return
        required = len(names) - len(fn.__defaults__ or ())
        annotations = fn.__annotations__
        self._set_positional(
            [(name, i < required, annotations.get(name)) for i, name in enumerate(names)][skip:]
        )

    def _set_positional(self, params: list[tuple[str, bool, Any]]) -> None:
        """Set the fast paths from each parameter's (name, required, annotation)."""
        kinds = [simple_type(annotation) for _, _, annotation in params]
        fewest = sum(1 for _, required, _ in params if required)
        self._arity = (fewest, len(params))
        checked = []
        for i, ((name, _, annotation), kind) in enumerate(zip(params, kinds, strict=True)):
            if kind is not None:
                checked.append((i, name, converter(kind)))
            elif annotation is not None:
                # A richer annotation (datetime, a dataclass, np.ndarray...): _coerce's
                # converter, or none for one it does not know (Any, ...): unchecked.
                rich = self._rich_converter(annotation)
                if rich is not None:
                    checked.append((i, name, rich))
        self._checked = tuple(checked)
        if not self._checked:
            self.plain_arity = self._arity
        elif all(k in _ARRIVES_AS_IS for k in kinds):
            self.exact_types = {n: tuple(kinds[:n]) for n in range(fewest, len(params) + 1)}  # type: ignore[arg-type]

    def _rich_converter(self, annotation: Any) -> Callable[[Any], Any] | None:
        """The ``_coerce`` converter of an annotation ``simple_type`` does not know, or None."""
        from . import _coerce

        fn = self.fn
        fn = getattr(fn, "__func__", fn)
        return _coerce.converter(_coerce.resolve(annotation, getattr(fn, "__globals__", None)))

    def bind(
        self, args: list[Any], kwargs: dict[Any, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Bind and check arguments.

        Returns:
            The ``(args, kwargs)`` to call the function with.

        Raises:
            BadArguments: they do not bind, or a value fails its annotation.
        """
        if self._arity is None and self._sig is None:
            self._prepare()
        arity = self._arity
        if arity is not None and not kwargs and arity[0] <= len(args) <= arity[1]:
            out = list(args)
            n = len(out)
            for i, pname, conv in self._checked:
                if i < n:
                    out[i] = self._check(conv, pname, out[i])
            return tuple(out), NO_KWARGS
        if self._sig is None:
            self._prepare()
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
                convert = self._checks.get(pname)
                if convert is None:
                    continue
                kind = params[pname].kind
                if kind is kind.VAR_POSITIONAL:
                    bound.arguments[pname] = tuple(self._check(convert, pname, v) for v in value)
                elif kind is kind.VAR_KEYWORD:
                    bound.arguments[pname] = {
                        k: self._check(convert, k, v) for k, v in value.items()
                    }
                else:
                    bound.arguments[pname] = self._check(convert, pname, value)
        return bound.args, bound.kwargs

    def _check(self, conv: Callable[[Any], Any], pname: str, value: Any) -> Any:
        try:
            return conv(value)
        except Mismatch as exc:
            param = self.signature.parameters.get(pname)
            if value is None and param is not None and param.default is None:
                return None
            if len(exc.args) == 3:  # a richer annotation's converter (_coerce): got, wanted, where
                got, wanted, where = exc.args
                raise BadArguments(
                    f"{self.name}(): argument {pname!r}{where} must be {wanted}; got {got}",
                    self.sig_text,
                ) from None
            want = simple_type(param.annotation) if param is not None else None
            what = exc.args[0] if exc.args else f"a {type(value).__name__}"
            raise BadArguments(
                f"{self.name}(): argument {pname!r} must be "
                f"{want.__name__ if want else 'of the annotated type'}; "
                f"got {what}: {describe_value(value)}",
                self.sig_text,
            ) from None

    @property
    def sig_text(self) -> str:
        """The signature as shown to callers, e.g. ``add(a: int, b: int) -> int``."""
        return f"{self.name}{_format_signature(self.signature)}"

    def describe(self) -> dict[str, Any]:
        """This method's entry in the ``describe`` catalogue (docs/protocol.md §4)."""
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
                    # the Elixir shape the parameter accepts (docs/types.md); nil: anything
                    "type": None if p.annotation is p.empty else _elixir_type(p.annotation),
                }
            )
        return {
            "name": self.name,
            "doc": self.doc,
            "params": params,
            "streaming": self.streaming,
            "async": self.is_async,
            "timeout_ms": None if self.timeout is None else int(self.timeout * 1000),
            # only when set: a 1.0 supervisor decoding with [:safe] has no such atom
            **({"idempotent": True} if self.idempotent else {}),
        }


def _annotation_text(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__qualname__
    import inspect

    return inspect.formatannotation(annotation)


def _elixir_type(annotation: Any) -> str | None:
    from ._coerce import elixir_type

    return elixir_type(annotation)


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


def by_name(methods: list[Method]) -> dict[str, Method]:
    """Index ``methods`` by name.

    Raises:
        RegistryError: two share a name, or a name starts with ``_``.
    """
    named: dict[str, Method] = {}
    for m in methods:
        if m.name in named:
            raise RegistryError(
                f"duplicate method name {m.name!r}: two definitions claim it; "
                "rename one or pass @method(name=...)"
            )
        if m.name.startswith("_"):
            raise RegistryError(f"method names starting with '_' are not callable: {m.name!r}")
        named[m.name] = m
    return named
