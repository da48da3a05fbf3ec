"""Which code the proxy may run: ``@task``/``@actor`` registrations and ``--allow`` prefixes.

Knows nothing of Ray: a registration records the plain function or class and
its Ray options; the proxy wraps it with ``ray.remote`` on first use.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._registry import reject_unknown_options
from ..errors import RegistryError
from .errors import ProxyConfigError, UnknownTask

__all__ = ["task", "actor", "Spec", "Catalog", "registered"]

_MARK = "__snakepit_ray__"
TASK_OPTIONS = (
    "name", "num_cpus", "num_gpus", "memory", "resources", "max_retries",
    "retry_exceptions", "runtime_env",
)  # fmt: skip
ACTOR_OPTIONS = (
    "name", "num_cpus", "num_gpus", "memory", "resources", "max_restarts",
    "max_task_retries", "max_concurrency", "runtime_env",
)  # fmt: skip


@dataclass
class Spec:
    """One runnable thing: a task function or an actor class, with its Ray options."""

    name: str
    kind: str  # "task" or "actor"
    target: Any
    options: dict[str, Any] = field(default_factory=dict)
    remote: Any = None  # the ray.remote wrapper, made on first use

    @property
    def is_generator(self) -> bool:
        """A task whose items stream back one by one (Ray streaming generator)."""
        return self.kind == "task" and inspect.isgeneratorfunction(self.target)

    def describe(self) -> dict[str, Any]:
        """A plain-data summary for ``list_tasks``."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind,
                               "doc": inspect.getdoc(self.target) or ""}  # fmt: skip
        if self.kind == "task":
            out["generator"] = self.is_generator
        else:
            out["methods"] = public_methods(self.target)
        return out


# name -> Spec, filled by the decorators at import time.
_registered: dict[str, Spec] = {}


def registered() -> dict[str, Spec]:
    """Every ``@task``/``@actor`` registration made in this process so far."""
    return dict(_registered)


def public_methods(cls: type) -> list[str]:
    """The names of ``cls``'s public callable members (the ones ``call_actor`` accepts)."""
    return sorted(n for n, v in inspect.getmembers(cls) if not n.startswith("_") and callable(v))


def _decorator(kind: str, allowed: tuple[str, ...], obj: Any, options: dict[str, Any]) -> Any:
    reject_unknown_options(f"@ray_proxy.{kind}", options, allowed)

    def register(target: Any) -> Any:
        if kind == "task" and (isinstance(target, type) or not callable(target)):
            raise RegistryError(f"@ray_proxy.task decorates a function; got: {target!r}")
        if kind == "actor" and not isinstance(target, type):
            raise RegistryError(f"@ray_proxy.actor decorates a class; got: {target!r}")
        opts = dict(options)
        name = opts.pop("name", None) or target.__name__
        if not isinstance(name, str) or not name or name.startswith("_"):
            raise RegistryError(
                f"@ray_proxy.{kind}: a name must be a non-empty str not starting with '_'; "
                f"got: {name!r}"
            )
        where = f"{target.__module__}.{target.__qualname__}"
        old = _registered.get(name)
        if old is not None and f"{old.target.__module__}.{old.target.__qualname__}" != where:
            raise RegistryError(
                f"duplicate Ray {kind} name {name!r}: "
                f"{old.target.__module__}.{old.target.__qualname__} and {where} both claim it; "
                f"rename one or pass @ray_proxy.{kind}(name=...)"
            )
        _registered[name] = Spec(name, kind, target, opts)
        setattr(target, _MARK, name)
        return target

    return register if obj is None else register(obj)


def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Register a function as a Ray task the BEAM may submit by name.

    Bare (``@task``) or with keyword-only options: ``name`` (default: the
    function's name) and the Ray options ``num_cpus``, ``num_gpus``, ``memory``,
    ``resources``, ``max_retries``, ``retry_exceptions``, ``runtime_env``.
    A generator function becomes a streaming task: each ``yield`` reaches the
    BEAM as it is produced. The function itself is returned unchanged.

    Raises:
        RegistryError: an unknown option, a bad name, or a name already taken.
    """
    return _decorator("task", TASK_OPTIONS, fn, options)


def actor(cls: type | None = None, /, **options: Any) -> Any:
    """Register a class as a Ray actor the BEAM may create by name.

    Options: ``name`` plus the Ray options ``num_cpus``, ``num_gpus``,
    ``memory``, ``resources``, ``max_restarts``, ``max_task_retries``,
    ``max_concurrency``, ``runtime_env``. Its public methods (no leading ``_``)
    are callable through ``call_actor``; generator methods stream.

    Raises:
        RegistryError: an unknown option, a bad name, or a name already taken.
    """
    return _decorator("actor", ACTOR_OPTIONS, cls, options)


class Catalog:
    """Resolves a name from a frame to a :class:`Spec`, without ever importing anything.

    Every module under an ``--allow`` prefix is imported when the catalog is
    built (at start-up, before ``:ready``): the prefix module and, for a
    package, each of its public submodules. Afterwards a frame's name is only
    looked up among modules already loaded, so no frame can make the proxy run
    a module's import-time code.
    """

    def __init__(self, allow: list[str] | tuple[str, ...] = ()) -> None:
        for prefix in allow:
            if not prefix or not all(p.isidentifier() for p in prefix.split(".")):
                raise RegistryError(f"--allow takes a dotted module prefix; got: {prefix!r}")
        self.allow = tuple(allow)
        self._resolved: dict[str, Spec] = {}
        for prefix in self.allow:
            _import_tree(prefix)

    def names(self) -> list[str]:
        """The registered names (allowed-by-prefix names appear once used)."""
        return sorted(set(_registered) | set(self._resolved))

    def specs(self) -> list[Spec]:
        """Every registered or already-resolved spec."""
        merged = {**self._resolved, **_registered}
        return [merged[n] for n in sorted(merged)]

    def get(self, name: Any, kind: str) -> Spec:
        """Return the spec called ``name`` of ``kind`` (``"task"`` or ``"actor"``).

        Raises:
            UnknownTask: not registered, not under an allowed prefix, or of the other kind.
        """
        if not isinstance(name, str):
            raise UnknownTask(repr(name), self._known(kind), kind)
        spec = _registered.get(name) or self._resolved.get(name)
        if spec is None:
            spec = self._resolve(name, kind)
        if spec is None or spec.kind != kind:
            raise UnknownTask(name, self._known(kind), kind)
        return spec

    def _known(self, kind: str) -> list[str]:
        return [s.name for s in self.specs() if s.kind == kind]

    def _allowed(self, module: str) -> bool:
        return any(module == p or module.startswith(p + ".") for p in self.allow)

    def _resolve(self, name: str, kind: str) -> Spec | None:
        module, _, attr = name.rpartition(".")
        parts = name.split(".")
        if (
            not module
            or not self._allowed(module)
            or not all(p.isidentifier() and not p.startswith("_") for p in parts)
        ):
            return None
        # Only modules loaded already (at start-up, under an allowed prefix): never import here.
        obj = getattr(sys.modules.get(module), attr, None)
        if obj is None:
            return None
        if getattr(obj, "__module__", None) != module:
            return None  # re-exported from elsewhere: only code defined under the prefix
        if kind == "task" and inspect.isfunction(obj):
            opts = _registered[getattr(obj, _MARK)].options if hasattr(obj, _MARK) else {}
        elif kind == "actor" and isinstance(obj, type):
            opts = _registered[getattr(obj, _MARK)].options if hasattr(obj, _MARK) else {}
        else:
            return None
        spec = Spec(name, kind, obj, dict(opts))
        self._resolved[name] = spec
        return spec


def _import_tree(prefix: str) -> None:
    """Import ``prefix`` and, if it is a package, every public submodule under it.

    Raises:
        ProxyConfigError: a module under the prefix cannot be imported.
    """
    todo = [prefix]
    while todo:
        name = todo.pop()
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise ProxyConfigError(
                f"--allow {prefix!r}: importing {name} failed: {type(exc).__name__}: {exc}"
            ) from exc
        path = getattr(module, "__path__", None)
        if path is None:
            continue
        for info in pkgutil.iter_modules(path):
            if not info.name.startswith("_"):  # private modules never resolve
                todo.append(f"{name}.{info.name}")
