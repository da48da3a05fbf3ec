"""A worker that calls the BEAM (protocol 1.1, §9): every way worker code can."""

from __future__ import annotations

import asyncio
import threading
import time

import snakepit_py as snakepit

state = {"finally": 0, "last_error": None}


def _error(exc: snakepit.BeamCallError) -> dict:
    return {"kind": exc.kind, "type": exc.type, "message": exc.message}


@snakepit.method
def functions() -> list:
    return snakepit.beam.functions()


@snakepit.method
def ask(name: str, *args, timeout: float | None = None):
    return snakepit.beam.call(name, *args, timeout=timeout)


@snakepit.method
def ask_error(name: str, *args, timeout: float | None = None) -> dict:
    try:
        snakepit.beam.call(name, *args, timeout=timeout)
    except snakepit.BeamCallError as exc:
        return _error(exc)
    return {"kind": None}


@snakepit.method
def ask_with_id(name: str) -> dict:
    return {"call_id": snakepit.current_call().id, "result": snakepit.beam.call(name)}


@snakepit.method
def ask_stream(name: str, n: int):
    """A generator: asks the BEAM for each item mid-stream and writes the total back."""
    total = 0
    for i in range(n):
        item = snakepit.beam.call(name, i)
        total += item
        yield item
    return snakepit.beam.call(name, total)


@snakepit.method
async def aask(name: str, *args, timeout: float | None = None):
    return await snakepit.beam.acall(name, *args, timeout=timeout)


@snakepit.method
async def aask_error(name: str, *args, timeout: float | None = None) -> dict:
    try:
        await snakepit.beam.acall(name, *args, timeout=timeout)
    except snakepit.BeamCallError as exc:
        return _error(exc)
    return {"kind": None}


@snakepit.method
async def amany(name: str, n: int) -> list:
    return list(await asyncio.gather(*(snakepit.beam.acall(name, i) for i in range(n))))


@snakepit.method
async def sync_call_on_loop(name: str) -> str:
    try:
        snakepit.beam.call(name)
    except RuntimeError as exc:
        return str(exc)
    return "no error"


@snakepit.method
def from_thread(name: str, *args) -> dict:
    """A thread the method starts calls the BEAM: it is outside any call."""
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = snakepit.beam.call(name, *args)
        except snakepit.BeamCallError as exc:
            box["error"] = _error(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return box


@snakepit.method
def wait_for_cancel(name: str):
    """Waits on a BEAM function that never returns until the call is cancelled."""
    try:
        return snakepit.beam.call(name)
    finally:
        state["finally"] += 1


@snakepit.method
async def await_for_cancel(name: str):
    try:
        return await snakepit.beam.acall(name)
    finally:
        state["finally"] += 1


@snakepit.method
def finally_count() -> int:
    return state["finally"]


@snakepit.method
def echo(x):
    return x


@snakepit.method
async def aecho(x):
    return x


@snakepit.method
def bad_args(name: str) -> str:
    try:
        snakepit.beam.call(name, object())
    except snakepit.EncodeError as exc:
        return f"EncodeError: {exc}"
    return "sent"


@snakepit.method
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@snakepit.method
def bench(name: str, n: int) -> list:
    """Seconds per beam call round trip, for ``n`` calls in a row."""
    call = snakepit.beam.call
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        call(name, i)
        times.append(time.perf_counter() - t0)
    return times


@snakepit.method
def sleep_then_ask(name: str, seconds: float, n: int) -> list:
    """Lasts past the sentinel's period first (it takes the reading role over), then asks."""
    time.sleep(seconds)
    return [snakepit.beam.call(name, i) for i in range(n)]


@snakepit.method
def ask_unannounced(name: str) -> dict:
    """Test only: sends a name the supervisor did not announce (the runtime never does)."""
    from snakepit_py._dispatcher import beam_calls

    beam = beam_calls()
    beam._names = beam._names | {name}
    try:
        beam.call(name, (), None)
    except snakepit.BeamCallError as exc:
        return _error(exc)
    return {"kind": None}


@snakepit.method
def ask_beam_timeout(name: str, ms: int) -> dict:
    """Test only: the BEAM's timeout alone (``timeout_ms``), Python waiting without one."""
    from snakepit_py import _beam

    real = _beam._timeout_ms
    _beam._timeout_ms = lambda timeout, ctx: ms
    try:
        snakepit.beam.call(name)
    except snakepit.BeamCallError as exc:
        return _error(exc)
    finally:
        _beam._timeout_ms = real
    return {"kind": None}
