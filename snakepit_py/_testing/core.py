"""What both stub supervisors share: the worker's options, call bookkeeping, decoded messages.

A subclass owns one transport: it starts the process, moves whole frames
(``send_raw``), reads them back into :meth:`SupervisorCore._on_message` and
says how the worker sees its supervisor go (``_end_input``). Everything
above the frames lives here, so both transports speak the protocol alike.
"""

from __future__ import annotations

import itertools
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from ..codec import Atom, get_codec
from ..errors import ProtocolError
from .beam import BeamServer
from .calls import PendingCall, Stream

_A = Atom
_CALL, _CANCEL, _CREDIT, _HEALTH, _DESCRIBE, _SHUTDOWN = map(
    _A, ("call", "cancel", "credit", "health", "describe", "shutdown")
)
_S = TypeVar("_S", bound="SupervisorCore")

TRANSPORTS = ("port", "grpc")


def check_transport(transport: str) -> None:
    """Raise ValueError unless ``transport`` names one of the stub supervisors."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be 'port' or 'grpc', got: {transport!r}")


class SupervisorCore:
    """Runs a worker as a subprocess and speaks the wire protocol to it (over a subclass's link).

    Args:
        target: the worker TARGET (``path/worker.py``, ``pkg.mod`` or ``pkg.mod:Class``).
        worker_args: options for the worker's own code (passed after ``--``).
        threads, max_inflight, max_frame: worker options (None = the worker's default).
        codec: ``"etf"`` or ``"msgpack"``.
        extra_args: more runtime options, e.g. ``["--log-level", "INFO"]``.
        env: extra environment variables for the worker.
        python: the interpreter to run (default: this one).
        cwd: the worker's working directory (default: this process's).
        ready_timeout: seconds to wait for ``:ready``.
        timeout: default seconds to wait for any answer.
        record: keep every decoded frame in ``frames``.
        beam_functions: Python callables served in place of BEAM functions
            (protocol 1.1, §9): ``{"name": callable}``, announced to the worker
            once it is ready; each ``{:beam_call}`` runs on a thread of its own
            and is answered as the harness would (``beam_calls`` and
            ``beam_cancels`` record what the worker sent).
        on_log: called with ``(level, message, meta)`` for each ``:log`` frame
            as it arrives (on the reader thread; they are kept in ``logs`` too).
    """

    def __init__(
        self,
        target: str,
        *,
        worker_args: list[str] | tuple[str, ...] = (),
        threads: int | None = None,
        max_inflight: int | None = None,
        max_frame: int | None = None,
        codec: str = "etf",
        extra_args: list[str] | tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        python: str | None = None,
        cwd: str | None = None,
        ready_timeout: float = 30.0,
        timeout: float = 30.0,
        record: bool = False,
        beam_functions: dict[str, Any] | None = None,
        on_log: Callable[[str, str, dict[Any, Any]], None] | None = None,
    ) -> None:
        self.target = target
        self.on_log = on_log
        self.codec = get_codec(codec)
        self.timeout = timeout
        self.ready_timeout = ready_timeout
        self.record = record
        self.frames: list[Any] = []
        self.logs: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []
        self.orphan_errors: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.bye: dict[str, Any] | None = None
        self.ready: dict[str, Any] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, PendingCall] = {}
        self._replies: dict[int, queue.SimpleQueue[Any]] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._cond = threading.Condition()
        # The options after TARGET and the transport's own flag, in the CLI's order.
        options: list[str] = []
        for flag, value in (("--threads", threads), ("--max-inflight", max_inflight),
                            ("--max-frame", max_frame)):  # fmt: skip
            if value is not None:
                options += [flag, str(value)]
        if codec != "etf":
            options += ["--codec", codec]
        options += list(extra_args)
        if worker_args:
            options += ["--", *worker_args]
        self._options = options
        self._env = env
        self._python = python or sys.executable
        self._cwd = cwd
        self._output = tempfile.TemporaryFile()
        self._final_output: str | None = None
        self.beam = BeamServer(self, beam_functions)
        self.beam_calls = self.beam.calls
        self.beam_cancels = self.beam.cancels

    # --- what a transport provides --------------------------------------------------------

    def start(self: _S) -> _S:
        """Start the worker and wait for ``:ready``."""
        raise NotImplementedError

    def send_raw(self, frame: bytes) -> None:
        """Send one frame's payload (one term's bytes)."""
        raise NotImplementedError

    def _end_input(self) -> None:
        """Do what the worker sees as its supervisor going away."""
        raise NotImplementedError

    def _release(self) -> None:
        """Stop reading and free the link; keep the final output."""
        raise NotImplementedError

    # --- lifecycle ------------------------------------------------------------------------

    def _worker_env(self) -> dict[str, str]:
        """This environment, with this package importable and the caller's extras on top."""
        env = dict(os.environ)
        pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_root, env.get("PYTHONPATH")]))
        env["SNAKEPIT_PROTOCOL"] = "1.1"  # this supervisor reads protocol 1.1 (features in :ready)
        env.update(self._env or {})
        return env

    def _await_ready(self, why: str) -> None:
        """Wait for ``:ready``; fail with ``why`` if it does not come."""
        if not self._ready.wait(self.ready_timeout) or self.ready is None:
            self._fail(why)

    def _fail(self, why: str) -> NoReturn:
        self.kill()
        self._release()
        raise ProtocolError(f"worker {self.target!r} {why}; its output:\n{self.output()}")

    def __enter__(self: _S) -> _S:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def pid(self) -> int:
        """The worker's OS pid (the process running your code; see ``guard_pid``)."""
        assert self.proc is not None
        pid = (self.ready or {}).get("pid")
        return pid if isinstance(pid, int) else self.proc.pid

    @property
    def guard_pid(self) -> int | None:
        """The guard's OS pid (the process this supervisor started), None if unguarded."""
        assert self.proc is not None
        return self.proc.pid if self.pid != self.proc.pid else None

    def close(self, timeout: float = 5.0) -> int | None:
        """End the worker's input and wait for it to exit; returns its exit code."""
        self.beam.close()
        if self.proc is None:
            return None
        self._end_input()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.wait()
        self._release()
        return code

    def kill(self) -> None:
        """SIGKILL the worker (its guard then kills what it left behind and exits)."""
        if self.proc is not None and self.proc.poll() is None:
            if self.pid != self.proc.pid:
                try:
                    os.kill(self.pid, 9)
                    self.proc.wait(2.0)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
        self._end_input()

    def output(self) -> str:
        """Everything the worker wrote to stdout and stderr so far."""
        if self._final_output is not None:
            return self._final_output
        self._output.flush()
        pos = self._output.tell()
        self._output.seek(0)
        text = self._output.read().decode("utf-8", "replace")
        self._output.seek(pos)
        return text

    def _keep_output(self) -> None:
        """Freeze ``output()`` at what was written so far and close the capture file."""
        self._final_output = self.output()
        self._output.close()

    # --- sending --------------------------------------------------------------------------

    def send_term(self, term: Any) -> None:
        """Encode ``term`` with the worker's codec and send it as one frame."""
        self.send_raw(self.codec.encode(term))

    def next_id(self) -> int:
        """A fresh call id."""
        return next(self._ids)

    def expect(self, call_id: int) -> PendingCall:
        """Collect the answers for ``call_id`` without sending anything (for raw frames)."""
        pending = PendingCall(self, call_id)
        with self._lock:
            self._pending[call_id] = pending
        return pending

    def start_call(
        self,
        method: str,
        *args: Any,
        kwargs: dict[str, Any] | None = None,
        timeout_ms: int | None = None,
        meta: dict[str, Any] | None = None,
        credit: int | None = None,
        call_id: int | None = None,
    ) -> PendingCall:
        """Send ``{:call, ...}`` and return at once."""
        cid = self.next_id() if call_id is None else call_id
        opts: dict[Any, Any] = {}
        if timeout_ms is not None:
            opts[_A("timeout_ms")] = timeout_ms
        if meta is not None:
            opts[_A("meta")] = meta
        if credit is not None:
            opts[_A("credit")] = credit
        pending = self.expect(cid)
        pending.granted, pending.timeout_ms = credit, timeout_ms
        self.send_term((_CALL, cid, method, list(args), dict(kwargs or {}), opts))
        return pending

    def call(self, method: str, *args: Any, kwargs: dict[str, Any] | None = None,
             timeout_ms: int | None = None, meta: dict[str, Any] | None = None) -> Any:  # fmt: skip
        """Make one call and return its result.

        Raises:
            CallError: the worker answered with an error (``kind``, ``type``, ``traceback``...).
        """
        pending = self.start_call(method, *args, kwargs=kwargs, timeout_ms=timeout_ms, meta=meta)
        return pending.wait(self.timeout)

    def stream(self, method: str, *args: Any, kwargs: dict[str, Any] | None = None,
               timeout_ms: int | None = None, meta: dict[str, Any] | None = None,
               credit: int | None = None, auto_credit: bool = False) -> Stream:  # fmt: skip
        """Start a streaming call; iterate the result for its chunks."""
        pending = self.start_call(
            method, *args, kwargs=kwargs, timeout_ms=timeout_ms, meta=meta, credit=credit
        )
        return Stream(pending, credit, auto_credit)

    def cancel(self, call: int | PendingCall | Stream) -> None:
        """Send ``{:cancel, id}`` for a call id, or a call ``start_call``/``stream`` returned."""
        self.send_term((_CANCEL, call if isinstance(call, int) else call.id))

    def credit(self, call_id: int, n: int) -> None:
        """Send ``{:credit, id, n}``."""
        with self._lock:
            pending = self._pending.get(call_id)
            if pending is not None and pending.granted is not None:
                pending.granted += n
        self.send_term((_CREDIT, call_id, n))

    def _request(self, tag: Atom, timeout: float | None) -> Any:
        rid = self.next_id()
        box: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with self._lock:
            self._replies[rid] = box
        self.send_term((tag, rid))
        try:
            return box.get(timeout=timeout or self.timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer to {tag} within {timeout or self.timeout} s") from None

    def health(self, timeout: float | None = None) -> dict[str, Any]:
        """Ask for a health report."""
        report: dict[str, Any] = self._request(_HEALTH, timeout)
        return report

    def describe(self, timeout: float | None = None) -> dict[str, Any]:
        """Ask for the method catalogue."""
        catalogue: dict[str, Any] = self._request(_DESCRIBE, timeout)
        return catalogue

    def shutdown(self, grace_ms: int = 1000, timeout: float = 10.0) -> dict[str, Any] | None:
        """Send ``{:shutdown, grace_ms}`` and wait for the exit; returns the ``:bye`` stats."""
        self.send_term((_SHUTDOWN, grace_ms))
        assert self.proc is not None
        self.proc.wait(timeout)
        self._release()
        return self.bye

    def wait_for(self, predicate: Any, timeout: float | None = None) -> None:
        """Wait until ``predicate()`` is true; re-checked whenever a frame arrives."""
        end = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while not predicate():
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError("condition not met in time")
                self._cond.wait(left)

    # --- receiving ------------------------------------------------------------------------

    def _connection_lost(self) -> None:
        """The worker's output ended: fail every call still waiting, wake every waiter."""
        self._closed.set()
        self._ready.set()
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
        code = None
        if self.proc is not None and pending:  # its output ended: the exit status is near
            try:
                code = self.proc.wait(2.0)
            except subprocess.TimeoutExpired:
                pass
        for p in pending:
            p.lost(code)
        with self._cond:
            self._cond.notify_all()

    def _on_message(self, msg: tuple[Any, ...]) -> None:
        if self.record:
            self.frames.append(msg)
        tag = msg[0]
        if tag in ("ok", "error", "chunk"):
            cid = msg[1]
            with self._lock:
                pending = self._pending.get(cid)
                if tag != "chunk" and pending is not None:
                    del self._pending[cid]
            if pending is not None:
                pending._answer(str(tag))
            if pending is None:
                if tag == "error":
                    self.orphan_errors.put(msg[2])
            elif tag == "chunk":
                pending.events.put(("chunk", msg[2], msg[3]))
            else:
                pending.events.put((str(tag), msg[2], None))
        elif tag in ("health", "describe"):
            with self._lock:
                box = self._replies.pop(msg[1], None)
            if box is not None:
                box.put(msg[2])
        elif tag == "beam_call" or tag == "beam_cancel":
            self.beam.on_message(msg)
        elif tag == "ready":
            self.ready = msg[1]
            self.beam.announce(msg[1])  # before start() returns: no call can race it
            self._ready.set()
        elif tag == "log":
            self.logs.append(msg)
            if self.on_log is not None:
                self.on_log(str(msg[1]), str(msg[2]), dict(msg[3] or {}))
        elif tag == "event":
            self.events.append(msg)
        elif tag == "bye":
            self.bye = msg[1]
        with self._cond:
            self._cond.notify_all()
