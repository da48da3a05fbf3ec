"""Turning what ``ray.get`` raises into plain data and into the proxy's errors."""

from __future__ import annotations

import re
from typing import Any

from .errors import TaskFailed

__all__ = ["RemoteError", "error_info", "raise_failed", "is_cancelled"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class RemoteError(Exception):
    """Carries a remote exception's text (with the remote traceback) as a chained cause."""


def _remote_type(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return type(cause).__name__
    return type(exc).__name__


def is_cancelled(exc: BaseException) -> bool:
    """True for Ray's "this task was cancelled" errors (also when wrapped in RayTaskError)."""
    from ray import exceptions

    kinds = tuple(
        getattr(exceptions, n) for n in ("TaskCancelledError", "ActorCancelledError")
        if hasattr(exceptions, n)
    )  # fmt: skip
    return isinstance(exc, kinds) or isinstance(getattr(exc, "cause", None), kinds)


def error_info(exc: BaseException) -> dict[str, Any]:
    """A plain map for an error chunk: ``type``, ``message``, ``traceback`` (remote text)."""
    cause = getattr(exc, "cause", None)
    message = str(cause) if isinstance(cause, BaseException) else str(exc)
    return {"type": _remote_type(exc), "message": message,
            "traceback": _ANSI.sub("", str(exc))}  # fmt: skip


def raise_failed(task: str, index: int, exc: BaseException) -> None:
    """Raise :class:`TaskFailed` for ``exc``, chained to the remote traceback text."""
    info = error_info(exc)
    raise TaskFailed(task, index, info["type"], info["message"]) from RemoteError(info["traceback"])
