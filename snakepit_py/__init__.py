"""snakepit_py: Python workers for BEAM (Elixir/Erlang) supervisors.

Write methods with :func:`method`, serve them with ``snakepit-py worker TARGET``
(or :func:`run` from a script), test them with :mod:`snakepit_py.testing`.
"""

from __future__ import annotations

from ._context import CallContext, current_call
from ._methods import method
from ._version import __version__
from .codec import Atom, ImproperList
from .errors import (
    BadArguments,
    BeamCallError,
    CallCancelled,
    CallError,
    CodecError,
    DecodeError,
    EncodeError,
    MethodNotFound,
    ProtocolError,
    RegistryError,
    SnakepitError,
    TransportError,
)

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any

    from ._models import ModelCache

__all__ = [
    # writing a worker
    "method",
    "current_call",
    "CallContext",
    "publish",
    "report_loaded",
    "ModelCache",
    "run",
    "worker_args",
    # calling the BEAM (protocol 1.1): snakepit.beam.call / acall / functions
    "beam",
    # terms
    "Atom",
    "ImproperList",
    # errors
    "SnakepitError",
    "CodecError",
    "EncodeError",
    "DecodeError",
    "ProtocolError",
    "RegistryError",
    "MethodNotFound",
    "BadArguments",
    "CallError",
    "BeamCallError",
    "CallCancelled",
    "TransportError",
    "__version__",
]


def __getattr__(name: str) -> object:
    # `snakepit.beam` and `ModelCache` are imported on first use: a worker that
    # never uses them does not pay for them at start.
    if name == "beam":
        import sys

        __import__(f"{__name__}.beam")  # (not `from . import beam`: that asks __getattr__ again)
        return sys.modules[f"{__name__}.beam"]
    if name == "ModelCache":  # imported on first use, like `beam`
        from ._models import ModelCache

        return ModelCache
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def publish(name: str, data: object) -> None:
    """Push an ``{:event, name, data}`` frame to the supervisor (a no-op when not serving)."""
    from ._state import publish as _publish

    _publish(name, data)


def report_loaded(models: list[Any]) -> None:
    """Report the models this worker has loaded: health reports list them and a
    ``"loaded_models"`` event is pushed so routing tables update at once."""
    from ._state import set_loaded_models

    set_loaded_models(models)


def worker_args() -> list[str]:
    """The worker's own options: whatever followed ``--`` on its command line."""
    from ._state import worker_args as _args

    return _args()


def run(argv: list[str] | None = None) -> None:
    """Serve the calling script's methods: ``if __name__ == "__main__": snakepit.run()``.

    Takes the same options as ``snakepit-py worker`` (from ``sys.argv`` by default).
    Never returns.
    """
    from .cli import run_main_module

    run_main_module(argv)
