"""The BEAM side of calls into the BEAM (protocol 1.1, §9), played by Python callables.

``FakeSupervisor(target, beam_functions={"name": callable})`` announces the
names once the worker is ready and answers each ``{:beam_call}`` as the
harness does: on a thread of its own, within its ``timeout_ms``, exceptions
as ``:exception`` errors, and nothing more for a ref the worker cancelled.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from ..codec import Atom

_A = Atom
_BEAM_FUNCTIONS, _BEAM_REPLY, _OK, _ERROR = map(_A, ("beam_functions", "beam_reply", "ok", "error"))


class _Sender(Protocol):
    def send_term(self, term: Any) -> None: ...


class BeamServer:
    """The BEAM side of calls into the BEAM (§9), served by Python callables."""

    def __init__(self, sup: _Sender, functions: dict[str, Any] | None) -> None:
        self.sup = sup
        self.functions = dict(functions or {})
        self.calls: list[dict[str, Any]] = []
        self.cancels: list[int] = []
        self._live: dict[int, Any] = {}  # ref -> its timer (or None): not yet answered
        self._lock = threading.Lock()
        self._pool: Any = None

    def announce(self, ready: Any) -> None:
        """Send ``{:beam_functions, names}`` if there are any and the worker lists the feature."""
        features = ready.get("features") if isinstance(ready, dict) else None
        if self.functions and isinstance(features, list) and "beam_call" in features:
            self.sup.send_term((_BEAM_FUNCTIONS, list(self.functions)))

    def on_message(self, msg: tuple[Any, ...]) -> None:
        if msg[0] == "beam_cancel":
            with self._lock:
                self.cancels.append(msg[1])
                timer = self._live.pop(msg[1], None)
            if timer is not None:
                timer.cancel()
            return
        _, ref, name, args, opts = msg
        self.calls.append({"ref": ref, "name": name, "args": args, "opts": opts})
        fn = self.functions.get(name)
        if fn is None:
            known = ", ".join(self.functions) or "(none)"
            self._error(ref, "unknown_function", "UnknownFunction",
                        f"no BEAM function {name!r}; served: {known}", track=False)  # fmt: skip
            return
        timer = None
        timeout_ms = opts.get("timeout_ms") if isinstance(opts, dict) else None
        if timeout_ms is not None:
            timer = threading.Timer(timeout_ms / 1000.0, self._timeout, (ref, name, timeout_ms))
            timer.daemon = True
        with self._lock:
            self._live[ref] = timer
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(32, thread_name_prefix="fake-beam")
        if timer is not None:
            timer.start()
        self._pool.submit(self._run, ref, fn, args)

    def _run(self, ref: int, fn: Any, args: list[Any]) -> None:
        import inspect
        import traceback

        try:
            inspect.signature(fn).bind(*args)
        except TypeError as exc:
            self._error(ref, "bad_arguments", "BadArguments", str(exc))
            return
        except ValueError:  # no signature to check (a builtin): let the call tell
            pass
        try:
            result = fn(*args)
        except BaseException as exc:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self._error(ref, "exception", type(exc).__name__, str(exc), tb=tb)
            return
        self._reply(ref, (_OK, result))

    def _timeout(self, ref: int, name: str, timeout_ms: Any) -> None:
        self._error(ref, "timeout", "TimeoutError",
                    f"BEAM function {name!r} ran past its {timeout_ms} ms")  # fmt: skip

    def _error(self, ref: int, kind: str, type_: str, message: str, tb: str | None = None,
               track: bool = True) -> None:  # fmt: skip
        error: dict[Atom, Any] = {_A("kind"): _A(kind), _A("type"): type_, _A("message"): message,
                 _A("traceback"): tb, _A("details"): {}}  # fmt: skip
        self._reply(ref, (_ERROR, error), track)

    def _reply(self, ref: int, outcome: tuple[Any, ...], track: bool = True) -> None:
        """Send the one reply for ``ref`` (nothing once it was answered, timed out or cancelled)."""
        if track:
            with self._lock:
                if ref not in self._live:
                    return
                timer = self._live.pop(ref)
            if timer is not None:
                timer.cancel()
        try:
            self.sup.send_term((_BEAM_REPLY, ref, outcome))
        except OSError:  # the worker is gone
            pass
        except Exception as exc:  # the result cannot be encoded
            if outcome[0] == _OK:
                self._error(ref, "exception", "EncodeError", str(exc), track=False)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
