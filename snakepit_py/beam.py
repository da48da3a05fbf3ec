"""Call functions the BEAM serves, from worker code (protocol 1.1, docs/protocol.md §9).

The supervisor announces the functions it serves (the harness's
``beam_functions: %{"name" => fun}`` option); worker code calls them by name
with plain data, from sync methods, generators, async methods and threads
it starts::

    import snakepit_py as snakepit

    @snakepit.method
    def enrich(user_id: int) -> dict:
        user = snakepit.beam.call("fetch_user", user_id, timeout=5.0)
        return {"user": user, "score": score(user)}

    @snakepit.method
    async def enrich_many(ids: list) -> list:
        return [await snakepit.beam.acall("fetch_user", i) for i in ids]

While a method waits for the BEAM, the worker goes on reading: health
checks, cancels, other calls and other replies are handled. Cancelling the
call a wait is made under ends the wait (``CallCancelled``) and tells the
BEAM to stop the function. Errors raise :class:`~snakepit_py.BeamCallError`.
"""

from __future__ import annotations

import sys

from ._beam import NOT_SERVED
from ._metrics import clock, observe_beam_call
from .errors import BeamCallError, CallCancelled

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from typing import Any

__all__ = ["call", "acall", "functions"]

# _dispatcher._BEAM_SOURCES and beam_calls, imported on first use (an import
# statement on every call costs more than the rest of the Python side of a beam
# call's setup).
_sources: list[Any] = []
_beam_calls: Any = None
# The endpoint found last, and the one source it came from: while that source is
# the only one (a worker serves one connection), it is the one beam_calls() finds
# (a dispatcher makes its BeamCalls once, and keeps it).
_one_source: Any = None
_one_beam: Any = None


def _endpoint() -> Any:
    global _sources, _beam_calls, _one_source, _one_beam
    if _beam_calls is None:
        from ._dispatcher import _BEAM_SOURCES, beam_calls

        _sources = _BEAM_SOURCES
        _beam_calls = beam_calls
    sources = _sources
    if len(sources) == 1 and sources[0] is _one_source:
        return _one_beam
    beam = _beam_calls()
    if beam is None:
        raise BeamCallError(
            "unknown_function", "UnknownFunction", f"{NOT_SERVED} (this process is not a worker)"
        )
    if len(sources) == 1:
        _one_source, _one_beam = sources[0], beam
    return beam


def call(name: str, *args: Any, timeout: float | None = None) -> Any:
    """Call the BEAM function ``name`` with ``args`` and return its result.

    Blocks the calling thread (never the worker's reading). Inside a call it
    carries that call's id, and the enclosing call's deadline caps ``timeout``.

    Args:
        name: one of :func:`functions`.
        args: plain data (anything the codec carries).
        timeout: seconds to wait (None: no limit of its own); the BEAM stops
            the function when it runs out.

    Raises:
        BeamCallError: ``kind`` says why: ``"unknown_function"`` (checked before
            anything is sent: the name was not announced, or none were),
            ``"exception"`` (``type`` is the Elixir exception's module),
            ``"timeout"``, ``"bad_arguments"``, ``"cancelled"``.
        CallCancelled: the enclosing call was cancelled while it waited.
        EncodeError: an argument the codec cannot carry (nothing is sent).
        RuntimeError: called on an event loop's thread: use :func:`acall`.
    """
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None and asyncio._get_running_loop() is not None:
        raise RuntimeError(
            "snakepit.beam.call() would block the event loop while it waits for the BEAM; "
            "use `await snakepit.beam.acall(...)` in async code"
        )
    started = clock()
    try:
        sources = _sources  # (_endpoint's first test, inline)
        beam = _one_beam if len(sources) == 1 and sources[0] is _one_source else _endpoint()
        result = beam.call(name, args, timeout)
    except BaseException as exc:
        _observe(name, started, exc)
        raise
    observe_beam_call(name, started, None)
    return result


async def acall(name: str, *args: Any, timeout: float | None = None) -> Any:
    """Call the BEAM function ``name`` from async code; the same as :func:`call` otherwise.

    Cancelling the awaiting task (the enclosing async call's cancel does)
    tells the BEAM to stop the function.
    """
    started = clock()
    try:
        result = await _endpoint().acall(name, args, timeout)
    except BaseException as exc:
        _observe(name, started, exc)
        raise
    observe_beam_call(name, started, None)
    return result


def _observe(name: str, started: float, exc: BaseException) -> None:
    """Count a failed beam call (_metrics); a name never announced is not counted (no label)."""
    kind = getattr(exc, "kind", None) if isinstance(exc, BeamCallError) else "cancelled"
    if kind != "unknown_function" and isinstance(exc, (BeamCallError, CallCancelled)):
        observe_beam_call(name, started, kind)


def functions() -> list[str]:
    """The names of the functions the supervisor serves ([] when it announced none)."""
    from ._dispatcher import beam_calls

    beam = beam_calls()
    return beam.functions() if beam is not None else []
