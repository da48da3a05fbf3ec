"""Loading a TARGET: importing it (a file, a module, ``module:Attr``) and finding its methods.

What is served (docs/protocol.md §1): a module's ``@method`` functions
plus the one class in it with ``@method`` members; a class with no ``@method``
members serves all its public methods; a module with nothing decorated that
defines exactly one public class serves that class. A class is instantiated
once, with no arguments. Each finder returns a ``Found``: the methods, the
``health_check`` hook (or None) and the instance serving them (or None).
"""

from __future__ import annotations

import os
import sys
from types import FunctionType, ModuleType

from ._methods import Method, by_name, marked_options
from .errors import RegistryError

try:  # what importlib.util re-exports, without importing it (~2 ms of a worker's start-up)
    from _frozen_importlib import module_from_spec as _module_from_spec
    from _frozen_importlib_external import spec_from_file_location as _spec_from_file_location
except ImportError:  # pragma: no cover - other interpreters
    from importlib.util import module_from_spec as _module_from_spec
    from importlib.util import spec_from_file_location as _spec_from_file_location

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Found = tuple[list[Method], Callable[[], Any] | None, Any]


__all__ = ["find_in_target", "find_in_class", "find_in_module"]


def _methods_of_instance(obj: Any, cls: type) -> tuple[list[Method], Callable[[], Any] | None]:
    members: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        members.update(vars(klass))
    marked = {k: o for k, v in members.items() if (o := marked_options(v)) is not None}
    methods: list[Method] = []
    if marked:
        for attr, opts in marked.items():
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
            and any(marked_options(v) is not None for v in vars(value).values())
        ):
            found.append(value)
    return found


def find_in_class(cls: type) -> Found:
    """Instantiate ``cls`` once and find its methods."""
    try:
        instance = cls()
    except TypeError as exc:
        raise RegistryError(
            f"{cls.__qualname__} is instantiated once per worker with no arguments: {exc}"
        ) from exc
    methods, hook = _methods_of_instance(instance, cls)
    by_name(methods)  # a class's own duplicates are named before the module's
    return methods, hook, instance


def find_in_module(module: ModuleType) -> Found:
    """Find a module's ``@method`` functions plus the one class in it with ``@method`` members."""
    methods = []
    for attr, value in vars(module).items():
        if not isinstance(value, type) and callable(value):
            opts = marked_options(value)
            if opts is not None:
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
        own, own_hook, instance = find_in_class(classes[0])
        methods.extend(own)
        hook = own_hook or hook
    return methods, hook, instance


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


def find_in_target(target: str) -> Found:
    """Import TARGET (``path/worker.py``, ``pkg.mod`` or ``pkg.mod:Attr``) and find its methods.

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
        return find_in_module(module)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise RegistryError(f"{module.__name__} has no attribute {attr!r}") from None
    if isinstance(obj, type):
        return find_in_class(obj)
    if isinstance(obj, ModuleType):
        return find_in_module(obj)
    methods, hook = _methods_of_instance(obj, type(obj))
    return methods, hook, obj
