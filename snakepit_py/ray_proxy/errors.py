"""Errors the Ray proxy raises on purpose (they reach the BEAM as ``kind: :exception``
with ``type`` set to the class name, e.g. ``"UnknownTask"``)."""

from __future__ import annotations

from typing import Any

from ..errors import SnakepitError

__all__ = [
    "RayProxyError",
    "ProxyConfigError",
    "UnknownTask",
    "UnknownActor",
    "UnknownJob",
    "TaskFailed",
    "JobsDisabled",
    "EntrypointNotAllowed",
]


class RayProxyError(SnakepitError):
    """Root of the proxy's own errors."""


class ProxyConfigError(RayProxyError, ValueError):
    """The proxy's launch options (after ``--``) are missing or wrong."""


class UnknownTask(RayProxyError, LookupError):
    """A task or actor class name that is not registered nor allowed.

    The proxy never imports a module because a frame named it: a name runs only
    when ``@task``/``@actor`` registered it or an ``--allow`` prefix covers it.

    Attributes:
        name: the name that was asked for.
        known: the registered names.
    """

    def __init__(self, name: str, known: list[str], what: str = "task") -> None:
        super().__init__(
            f"unknown {what} {name!r}: not registered and not under an --allow prefix; "
            f"registered: {', '.join(known) or '(none)'}"
        )
        self.name = name
        self.known = known


class UnknownActor(RayProxyError, LookupError):
    """No live actor has that id, or the actor class has no such public method."""


class UnknownJob(RayProxyError, LookupError):
    """No batch (or Ray job) has that id in this proxy."""


class TaskFailed(RayProxyError):
    """A Ray task raised; the message names the task and the remote exception,
    the error's traceback (via the chained cause) holds the remote traceback.

    Attributes:
        task: the task name.
        index: the replica index within its batch.
        remote_type: the remote exception's type name.
    """

    def __init__(self, task: str, index: int, remote_type: str, message: str) -> None:
        super().__init__(f"task {task!r} (replica {index}) raised {remote_type}: {message}")
        self.task = task
        self.index = index
        self.remote_type = remote_type


class JobsDisabled(RayProxyError):
    """The Ray Jobs methods need ``--jobs-address`` at launch."""


class EntrypointNotAllowed(RayProxyError, PermissionError):
    """A Ray job entrypoint outside the ``--allow-entrypoint`` list, or a string
    entrypoint holding shell syntax.

    Attributes:
        entrypoint: the entrypoint as given.
        char: the character that made it refused, if one did (e.g. ``"$"``).
    """

    def __init__(self, message: str, *, entrypoint: Any = None, char: str | None = None) -> None:
        super().__init__(message)
        self.entrypoint = entrypoint
        self.char = char
