"""Forward Python ``logging`` records to the supervisor as ``{:log, level, message, meta}``."""

from __future__ import annotations

import logging
import threading

from ._context import _current
from .codec import Atom

__all__ = ["FrameLogHandler", "install"]

_LEVELS = {
    logging.DEBUG: Atom("debug"),
    logging.INFO: Atom("info"),
    logging.WARNING: Atom("warning"),
    logging.ERROR: Atom("error"),
    logging.CRITICAL: Atom("critical"),
}
_LOG, _LOGGER, _CALL_ID = Atom("log"), Atom("logger"), Atom("call_id")


def _level_atom(levelno: int) -> Atom:
    for threshold in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= threshold:
            return _LEVELS[threshold]
    return _LEVELS[logging.DEBUG]


class FrameLogHandler(logging.Handler):
    """A logging handler that turns each record into one ``:log`` frame."""

    def __init__(self, send, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self._send = send
        self._busy = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._busy, "on", False):  # logging from inside our own send: drop
            return
        self._busy.on = True
        try:
            ctx = _current.get()
            message = self.format(record)
            meta = {_LOGGER: record.name, _CALL_ID: ctx.id if ctx is not None else None}
            self._send((_LOG, _level_atom(record.levelno), message, meta))
        except Exception:
            self.handleError(record)
        finally:
            self._busy.on = False


def install(send, level: str | int = "WARNING") -> FrameLogHandler:
    """Attach a :class:`FrameLogHandler` to the root logger at ``level``."""
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            raise ValueError(f"unknown log level; got: {level!r}")
    handler = FrameLogHandler(send, level)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > level or root.level == logging.NOTSET:
        root.setLevel(level)
    return handler
