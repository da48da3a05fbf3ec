"""FakeSupervisor: the stub supervisor over pipes, exactly as a BEAM Port would run the worker."""

from __future__ import annotations

import os
import subprocess
import threading
from typing import Any

from .core import SupervisorCore


class FakeSupervisor(SupervisorCore):
    """Runs a worker as a subprocess and speaks the wire protocol to it over pipes.

    Takes SupervisorCore's options (``worker_args``, ``threads``, ``codec``,
    ``env``, ``timeout``, ``record``...). Over gRPC, use
    :class:`~snakepit_py.testing.GrpcSupervisor`. From the repository's root:

    >>> sup = FakeSupervisor("examples/hello_worker.py").start()
    >>> sup.call("add", 1, 2)
    3
    >>> sorted(m["name"] for m in sup.describe()["methods"])
    ['add', 'hello']
    >>> sup.close()
    0
    """

    def __init__(self, target: str, **options: Any) -> None:
        super().__init__(target, **options)

    def start(self) -> FakeSupervisor:
        """Start the worker and wait for ``:ready``.

        Raises:
            ProtocolError: the worker exited or stayed silent (its output is in the message).
        """
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        fds = {"in": to_child_r, "out": from_child_w}
        args = [a.format(**fds) for a in (self.target, "--fd", "{in},{out}", *self._options)]
        self.proc = subprocess.Popen(
            [self._python, "-m", "snakepit_py", "worker", *args],
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=self._output,
            pass_fds=(to_child_r, from_child_w),
            env=self._worker_env(),
            cwd=self._cwd,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._out_fd = to_child_w
        self._in_fd = from_child_r
        self._reader = threading.Thread(target=self._read_loop, name="fake-supervisor", daemon=True)
        self._reader.start()
        self._await_ready("did not become ready")
        return self

    def _end_input(self) -> None:
        """What the worker sees when its supervisor goes: here, the pipe closes."""
        try:
            os.close(self._out_fd)
        except OSError:
            pass

    def _release(self) -> None:
        self._reader.join(5)
        if self._final_output is None:
            self._keep_output()
            try:
                os.close(self._in_fd)
            except OSError:
                pass

    # --- frames over the pipes ------------------------------------------------------------

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
