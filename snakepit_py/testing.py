"""Test workers from pytest with no BEAM: a stub supervisor over the real protocol.

:class:`FakeSupervisor` starts ``python -m snakepit_py worker TARGET`` as a real
subprocess, speaks the wire protocol to it over pipes and gives tests plain
Python calls. The pytest fixture ``snakepit_worker`` (installed with the
package) starts one and stops it after the test::

    def test_add(snakepit_worker):
        sup = snakepit_worker("examples/hello_worker.py")
        assert sup.call("add", 1, 2) == 3
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
from collections.abc import Iterator
from typing import Any

from .codec import Atom, get_codec
from .errors import CallError, ProtocolError

__all__ = ["FakeSupervisor", "PendingCall", "Stream"]

_A = Atom
_CALL, _CANCEL, _CREDIT, _HEALTH, _DESCRIBE, _SHUTDOWN = map(
    _A, ("call", "cancel", "credit", "health", "describe", "shutdown")
)


class PendingCall:
    """A call that has been sent; ``wait()`` returns its result or raises CallError."""

    def __init__(self, sup: FakeSupervisor, call_id: int) -> None:
        self.sup = sup
        self.id = call_id
        self.events: queue.SimpleQueue[tuple[str, Any, Any]] = queue.SimpleQueue()
        self.done = False
        self.outcome: tuple[str, Any] | None = None

    def next_event(self, timeout: float | None = 30.0) -> tuple[str, Any, Any]:
        """The next ``("chunk", seq, data)``, ``("ok", result, None)`` or ``("error", map, None)``.

        Raises:
            TimeoutError: nothing arrived in time.
        """
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"call {self.id}: nothing arrived within {timeout} s") from None

    def wait(self, timeout: float | None = 30.0) -> Any:
        """Wait for the terminal message (skipping chunks) and return the result.

        Raises:
            CallError: the call ended with an error.
            TimeoutError: no terminal message in time.
        """
        end = None if timeout is None else time.monotonic() + timeout
        while self.outcome is None:
            left = None if end is None else max(0.0, end - time.monotonic())
            kind, value, _ = self.next_event(left)
            if kind != "chunk":
                self.outcome = (kind, value)
        kind, value = self.outcome
        if kind == "error":
            raise CallError(value)
        return value


class Stream:
    """Iterates the chunks of a streaming call; ``result`` holds the return value at the end.

    With ``auto_credit`` the stream grants credit back as chunks are consumed,
    like a real consumer would; otherwise use ``credit(n)``.
    """

    def __init__(self, call: PendingCall, credit: int | None, auto_credit: bool) -> None:
        self.call = call
        self.id = call.id
        self.result: Any = None
        self.finished = False
        self._window = credit if auto_credit and credit else 0
        self._consumed = 0
        self.seqs: list[int] = []

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self.finished:
            raise StopIteration
        kind, value, data = self.call.next_event(self.call.sup.timeout)
        if kind == "chunk":
            self.seqs.append(value)
            if self._window:
                self._consumed += 1
                if self._consumed >= max(1, self._window // 2):
                    self.credit(self._consumed)
                    self._consumed = 0
            return data
        self.finished = True
        self.call.outcome = (kind, value)
        if kind == "error":
            raise CallError(value)
        self.result = value
        raise StopIteration

    def next_chunk(self, timeout: float) -> Any:
        """The next chunk, waiting at most ``timeout`` seconds (TimeoutError otherwise)."""
        kind, value, data = self.call.next_event(timeout)
        if kind != "chunk":
            self.finished = True
            self.call.outcome = (kind, value)
            if kind == "error":
                raise CallError(value)
            self.result = value
            raise StopIteration
        self.seqs.append(value)
        return data

    def cancel(self) -> None:
        """Send ``{:cancel, id}``; the stream then ends with a ``cancelled`` CallError."""
        self.call.sup.cancel(self.id)

    def credit(self, n: int) -> None:
        """Grant ``n`` more chunks."""
        self.call.sup.credit(self.id, n)


class FakeSupervisor:
    """Runs a worker as a subprocess and speaks the wire protocol to it.

    Args:
        target: the worker TARGET (``path/worker.py``, ``pkg.mod`` or ``pkg.mod:Class``).
        worker_args: options for the worker's own code (passed after ``--``).
        threads, max_inflight, max_frame: worker options (None = the worker's default).
        codec: ``"etf"`` or ``"msgpack"``.
        extra_args: more runtime options, e.g. ``["--log-level", "INFO"]``.
        env: extra environment variables for the worker.
        python: the interpreter to run (default: this one).
        ready_timeout: seconds to wait for ``:ready``.
        timeout: default seconds to wait for any answer.
        record: keep every decoded frame in ``frames``.
        transport: ``"port"`` (pipes, as a BEAM Port) or ``"grpc"`` (a gRPC
            Session; needs the ``grpc`` extra; also takes ``address=`` and ``token=``).
    """

    def __new__(cls, *args: Any, transport: str = "port", **kwargs: Any) -> FakeSupervisor:
        if transport == "grpc" and cls is FakeSupervisor:
            from ._testing_grpc import GrpcSupervisor

            return super().__new__(GrpcSupervisor)
        if transport not in ("port", "grpc"):
            raise ValueError(f"transport must be 'port' or 'grpc', got: {transport!r}")
        return super().__new__(cls)

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
        transport: str = "port",
    ) -> None:
        self.target = target
        self.codec = get_codec(codec)
        self.timeout = timeout
        self.ready_timeout = ready_timeout
        self.record = record
        self.frames: list[Any] = []
        self.logs: list[tuple] = []
        self.events: list[tuple] = []
        self.orphan_errors: queue.SimpleQueue[dict] = queue.SimpleQueue()
        self.bye: dict | None = None
        self.ready: dict | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, PendingCall] = {}
        self._replies: dict[int, queue.SimpleQueue[Any]] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._cond = threading.Condition()
        args = [target, "--fd", "{in},{out}"]
        for flag, value in (("--threads", threads), ("--max-inflight", max_inflight),
                            ("--max-frame", max_frame)):  # fmt: skip
            if value is not None:
                args += [flag, str(value)]
        if codec != "etf":
            args += ["--codec", codec]
        args += list(extra_args)
        if worker_args:
            args += ["--", *worker_args]
        self._args = args
        self._env = env
        self._python = python or sys.executable
        self._cwd = cwd
        self._output = tempfile.TemporaryFile()
        self._final_output: str | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeSupervisor:
        """Start the worker and wait for ``:ready``.

        Raises:
            ProtocolError: the worker exited or stayed silent (its output is in the message).
        """
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        args = [a.format(**{"in": to_child_r, "out": from_child_w}) for a in self._args]
        env = dict(os.environ)
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_root, env.get("PYTHONPATH")]))
        env.update(self._env or {})
        self.proc = subprocess.Popen(
            [self._python, "-m", "snakepit_py", "worker", *args],
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=self._output,
            pass_fds=(to_child_r, from_child_w),
            env=env,
            cwd=self._cwd,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._out_fd = to_child_w
        self._in_fd = from_child_r
        self._reader = threading.Thread(target=self._read_loop, name="fake-supervisor", daemon=True)
        self._reader.start()
        if not self._ready.wait(self.ready_timeout) or self.ready is None:
            self.kill()
            self._release()
            raise ProtocolError(
                f"worker {self.target!r} did not become ready; its output:\n{self.output()}"
            )
        return self

    def __enter__(self) -> FakeSupervisor:
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

    def _end_input(self) -> None:
        """What the worker sees when its supervisor goes: here, the pipe closes."""
        try:
            os.close(self._out_fd)
        except OSError:
            pass

    def _release(self) -> None:
        self._reader.join(5)
        if self._final_output is None:
            self._final_output = self.output()
            self._output.close()
            try:
                os.close(self._in_fd)
            except OSError:
                pass

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

    # --- sending --------------------------------------------------------------------------

    def send_raw(self, frame: bytes) -> None:
        """Write one frame's payload (the 4-byte length is added)."""
        data = len(frame).to_bytes(4, "big") + frame
        with self._write_lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self._out_fd, view) :]

    def send_bytes(self, data: bytes) -> None:
        """Write raw bytes to the worker's input (no framing added)."""
        with self._write_lock:
            os.write(self._out_fd, data)

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
        kwargs: dict | None = None,
        timeout_ms: int | None = None,
        meta: dict | None = None,
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
        self.send_term((_CALL, cid, method, list(args), dict(kwargs or {}), opts))
        return pending

    def call(self, method: str, *args: Any, kwargs: dict | None = None,
             timeout_ms: int | None = None, meta: dict | None = None) -> Any:  # fmt: skip
        """Make one call and return its result.

        Raises:
            CallError: the worker answered with an error (``kind``, ``type``, ``traceback``...).
        """
        pending = self.start_call(method, *args, kwargs=kwargs, timeout_ms=timeout_ms, meta=meta)
        return pending.wait(self.timeout)

    def stream(self, method: str, *args: Any, kwargs: dict | None = None,
               timeout_ms: int | None = None, meta: dict | None = None,
               credit: int | None = None, auto_credit: bool = False) -> Stream:  # fmt: skip
        """Start a streaming call; iterate the result for its chunks."""
        pending = self.start_call(
            method, *args, kwargs=kwargs, timeout_ms=timeout_ms, meta=meta, credit=credit
        )
        return Stream(pending, credit, auto_credit)

    def cancel(self, call_id: int) -> None:
        """Send ``{:cancel, id}``."""
        self.send_term((_CANCEL, call_id))

    def credit(self, call_id: int, n: int) -> None:
        """Send ``{:credit, id, n}``."""
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

    def health(self, timeout: float | None = None) -> dict:
        """Ask for a health report."""
        return self._request(_HEALTH, timeout)

    def describe(self, timeout: float | None = None) -> dict:
        """Ask for the method catalogue."""
        return self._request(_DESCRIBE, timeout)

    def shutdown(self, grace_ms: int = 1000, timeout: float = 10.0) -> dict | None:
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

    def _read_exact(self, n: int, buf: bytearray) -> bool:
        while len(buf) < n:
            more = os.read(self._in_fd, max(65536, n - len(buf)))
            if not more:
                return False
            buf += more
        return True

    def _read_loop(self) -> None:
        decode = self.codec.decode
        buf = bytearray()
        try:
            while True:
                if not self._read_exact(4, buf):
                    break
                size = int.from_bytes(buf[:4], "big")
                if not self._read_exact(4 + size, buf):
                    break
                frame = bytes(buf[4 : 4 + size])
                del buf[: 4 + size]
                self._on_message(decode(frame))
        finally:
            self._connection_lost()

    def _connection_lost(self) -> None:
        """The worker's output ended: fail every call still waiting, wake every waiter."""
        self._closed.set()
        self._ready.set()
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
        for p in pending:
            p.events.put(("error", _lost(self.proc), None))
        with self._cond:
            self._cond.notify_all()

    def _on_message(self, msg: tuple) -> None:
        if self.record:
            self.frames.append(msg)
        tag = msg[0]
        if tag in ("ok", "error", "chunk"):
            cid = msg[1]
            with self._lock:
                pending = self._pending.get(cid)
                if tag != "chunk" and pending is not None:
                    del self._pending[cid]
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
        elif tag == "ready":
            self.ready = msg[1]
            self._ready.set()
        elif tag == "log":
            self.logs.append(msg)
        elif tag == "event":
            self.events.append(msg)
        elif tag == "bye":
            self.bye = msg[1]
        with self._cond:
            self._cond.notify_all()


def _lost(proc: subprocess.Popen[bytes] | None) -> dict:
    code = proc.poll() if proc is not None else None
    return {
        _A("kind"): _A("worker_crashed"),
        _A("type"): "WorkerExited",
        _A("message"): f"the worker exited (status {code}) before answering",
        _A("traceback"): None,
        _A("details"): {},
    }
