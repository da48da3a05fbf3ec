"""The methods a worker serves: the ``Registry``, built from a TARGET, a module or a class.

Declaring methods (``@method``, ``Method``) is ``_methods``; importing a TARGET
and finding its methods is ``_target``. Their public names are re-exported
here, where the runtime and tools look for the registry.
"""

from __future__ import annotations

from ._methods import Method, by_name, method, reject_unknown_options
from ._target import find_in_class, find_in_module, find_in_target
from .errors import MethodNotFound

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any


__all__ = [
    "Registry", "load_target", "registry_from_module", "registry_from_class",
    # re-exported from _methods
    "method", "Method", "reject_unknown_options",
]  # fmt: skip


class Registry:
    """The methods a worker serves, by name, plus its optional health hook.

    Raises:
        RegistryError: two methods share a name, or a name starts with ``_``.
    """

    def __init__(self, methods: list[Method], health_hook: Callable[[], Any] | None = None,
                 instance: Any = None) -> None:  # fmt: skip
        self.methods: dict[str, Method] = by_name(methods)
        self.health_hook = health_hook
        self.instance: Any = instance

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
        """The method catalogue (docs/protocol.md §4)."""
        return {"methods": [self.methods[n].describe() for n in sorted(self.methods)]}


def load_target(target: str) -> Registry:
    """Import TARGET (``path/worker.py``, ``pkg.mod`` or ``pkg.mod:Attr``) and build its registry.

    Raises:
        RegistryError: the target cannot be found or declares its methods wrongly.
    """
    return Registry(*find_in_target(target))


def registry_from_module(module: ModuleType) -> Registry:
    """Serve a module's ``@method`` functions plus the one class in it with ``@method`` members."""
    return Registry(*find_in_module(module))


def registry_from_class(cls: type) -> Registry:
    """Instantiate ``cls`` once and serve its methods."""
    return Registry(*find_in_class(cls))
