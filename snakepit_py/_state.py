"""Process-wide state: who is serving, the models reported loaded, the worker's own options.

A worker process usually has one dispatcher, but nothing here assumes it:
``publish`` and ``report_loaded`` reach every connection serving right now.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = [
    "serving", "stopped", "publish", "loaded_models", "set_loaded_models",
    "worker_args", "set_worker_args",
]  # fmt: skip

# The ``publish(name, data)`` of every connection serving now.
_publishers: list[Callable[[str, Any], None]] = []
_loaded_models: list[Any] = []
_worker_args: list[str] = []


def serving(publish: Callable[[str, Any], None]) -> None:
    """A connection started serving; ``publish`` pushes an event to its supervisor."""
    _publishers.append(publish)


def stopped(publish: Callable[[str, Any], None]) -> None:
    """A connection stopped serving (the ``publish`` given to ``serving``)."""
    if publish in _publishers:
        _publishers.remove(publish)


def publish(name: str, data: Any) -> None:
    """Push an ``{:event, name, data}`` frame to every supervisor (none when not serving)."""
    for push in list(_publishers):
        push(name, data)


def loaded_models() -> list[Any]:
    """The models last reported with ``set_loaded_models`` (a copy)."""
    return list(_loaded_models)


def set_loaded_models(models: list[Any]) -> None:
    """Remember the loaded models (for health reports) and publish them."""
    _loaded_models[:] = list(models)
    publish("loaded_models", list(models))


def worker_args() -> list[str]:
    """The options given after ``--`` on the worker's command line (a copy)."""
    return list(_worker_args)


def set_worker_args(args: list[str]) -> None:
    """Record the options after ``--`` (the transport does, before the TARGET is loaded)."""
    _worker_args[:] = args
