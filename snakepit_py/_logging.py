"""Forward Python ``logging`` records to the supervisor as ``{:log, level, message, meta}``.

Records exist only once something imports ``logging``, and importing it costs
a worker several milliseconds of start-up. So when the worker's code has not
imported it, the handler is installed the moment anything does (a one-shot
import hook), not at start.
"""

from __future__ import annotations

import sys

from ._context import call_var
from ._tracing import log_ids
from .codec import Atom

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable
    from typing import Any

__all__ = ["install", "uninstall"]

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "WARN": 30, "ERROR": 40, "CRITICAL": 50}
_ATOMS = [(50, Atom("critical")), (40, Atom("error")), (30, Atom("warning")), (20, Atom("info"))]
_DEBUG = Atom("debug")
_LOG, _LOGGER, _CALL_ID = Atom("log"), Atom("logger"), Atom("call_id")
_METHOD = "method"  # (1.x) a binary key, as the trace ids: no new atom for a 1.0 supervisor

_installed: list[Any] = []


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    if level.upper() in _LEVELS:
        return _LEVELS[level.upper()]
    if level.isdigit():
        return int(level)
    raise ValueError(f"unknown log level; choose one of {', '.join(_LEVELS)}; got: {level!r}")


def _level_atom(levelno: int) -> Atom:
    for threshold, atom in _ATOMS:
        if levelno >= threshold:
            return atom
    return _DEBUG


def _attach(send: Callable[[Any], None], level: int) -> None:
    import logging
    import threading

    class FrameLogHandler(logging.Handler):
        """Turns each record into one ``:log`` frame."""

        def __init__(self) -> None:
            super().__init__(level)
            self._busy = threading.local()

        def emit(self, record: logging.LogRecord) -> None:
            if getattr(self._busy, "on", False):  # logging from inside our own send: drop
                return
            self._busy.on = True
            try:
                ctx = call_var.get()
                meta: dict[str, Any] = {
                    _LOGGER: record.name,
                    _CALL_ID: ctx.id if ctx is not None else None,
                }
                if ctx is not None:
                    meta[_METHOD] = ctx.method
                    ids = log_ids(ctx) if ctx.meta else None
                    if ids is not None:  # (binary keys: every supervisor decodes them)
                        meta["trace_id"], meta["span_id"] = ids
                send((_LOG, _level_atom(record.levelno), self.format(record), meta))
            except Exception:
                self.handleError(record)
            finally:
                self._busy.on = False

    handler = FrameLogHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > level or root.level == logging.NOTSET:
        root.setLevel(level)
    _installed.append(handler)


class _AfterExec:
    """A loader wrapper that runs ``then(module)`` once the module has executed."""

    def __init__(self, loader: Any, then: Callable[[Any], None]) -> None:
        self._loader = loader
        self._then = then

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        self._then(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _WhenImported:
    """A one-shot meta path finder: attaches the handler when ``logging`` is imported."""

    def __init__(self, send: Callable[[Any], None], level: int) -> None:
        self.send = send
        self.level = level

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "logging":
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            loader: Any = _AfterExec(spec.loader, lambda _m: _attach(self.send, self.level))
            spec.loader = loader  # (it passes everything else on to the loader it wraps)
        return spec


def install(send: Callable[[Any], None], level: str | int = "WARNING") -> None:
    """Forward records at ``level`` and above through ``send``.

    Raises:
        ValueError: an unknown level name.
    """
    number = _level_number(level)
    if "logging" in sys.modules:
        _attach(send, number)
    else:
        sys.meta_path.insert(0, _WhenImported(send, number))


def uninstall() -> None:
    """Stop forwarding (before ``:bye``, so no log frame follows it)."""
    for finder in [f for f in sys.meta_path if isinstance(f, _WhenImported)]:
        sys.meta_path.remove(finder)
    if _installed:
        import logging

        for handler in _installed:
            logging.getLogger().removeHandler(handler)
        _installed.clear()
