"""GrpcSupervisor: the stub supervisor over a gRPC Session to a worker on loopback.

It starts ``snakepit-py worker TARGET --grpc 127.0.0.1:0``, waits for
``SNAKEPIT_READY grpc HOST:PORT``, opens one ``Session`` and then behaves
exactly like FakeSupervisor (same methods, same frames), so one test suite
runs over both transports. Closing it closes the worker's stdin, which is how
a gRPC worker sees its parent go. grpc itself is imported on first use.
"""

from __future__ import annotations

import queue
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

from .core import SupervisorCore

_READY = b"SNAKEPIT_READY grpc "


class GrpcSupervisor(SupervisorCore):
    """Runs a worker as a subprocess and speaks the wire protocol to it over a gRPC Session.

    Takes FakeSupervisor's options (``worker_args``, ``threads``, ``codec``...), plus:

    Args:
        address: where the worker listens (``HOST:PORT``; port 0 picks one).
        token: a ``--grpc-token`` for the worker, sent on every RPC.
    """

    def __init__(self, target: str, *, address: str = "127.0.0.1:0", token: str | None = None,
                 **options: Any) -> None:  # fmt: skip
        super().__init__(target, **options)
        self._bind = address
        self.token = token
        self.address: str | None = None
        self.client: Any = None
        self._stdout = bytearray()
        self._listening = threading.Event()
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._responses: Any = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> GrpcSupervisor:
        """Start the worker, open a Session and wait for ``:ready``.

        Raises:
            ProtocolError: the worker exited or stayed silent (its output is in the message).
        """
        from ..client import GrpcClient

        env = self._worker_env()
        if self.token is not None:
            env["SNAKEPIT_GRPC_TOKEN"] = self.token
        args = [self.target, "--grpc", self._bind, *self._options]
        self.proc = subprocess.Popen(
            [self._python, "-m", "snakepit_py", "worker", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._output,
            env=env, cwd=self._cwd,
        )  # fmt: skip
        self._stdout_reader = threading.Thread(
            target=self._read_stdout, name="grpc-supervisor-stdout", daemon=True
        )
        self._stdout_reader.start()
        self._reader = threading.Thread(target=self._read_loop, name="grpc-supervisor",
                                        daemon=True)  # fmt: skip
        if not self._listening.wait(self.ready_timeout) or self.address is None:
            self._fail("did not print SNAKEPIT_READY")
        self.client = GrpcClient(self.address, token=self.token)
        meta = self.client.metadata
        self._responses = self.client.session(self._outgoing(), metadata=meta)
        self._reader.start()
        self._await_ready("did not send :ready on its Session")
        return self

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            if self.address is None and line.startswith(_READY):
                self.address = line[len(_READY) :].strip().decode()
                self._listening.set()
            else:
                self._stdout += line
        self._listening.set()

    def _end_input(self) -> None:
        """A gRPC worker sees its parent go as end of its stdin."""
        try:
            if self.proc is not None and self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass

    def end_session(self) -> None:
        """End the Session's request stream (the worker cancels this session's calls)."""
        self._requests.put(None)

    def _release(self) -> None:
        self._requests.put(None)
        if self._reader.is_alive():
            self._reader.join(5)
        if self.client is not None:
            self.client.close()
        self._end_input()
        if self.proc is not None and self.proc.stdout is not None:
            if self.proc.poll() is not None:
                self._stdout_reader.join(2)
            self.proc.stdout.close()
        if self._final_output is None:
            self._keep_output()

    def output(self) -> str:
        """Everything the worker wrote to stdout (but the ready line) and stderr so far."""
        if self._final_output is not None:
            return self._final_output
        return bytes(self._stdout).decode("utf-8", "replace") + super().output()

    # --- the Session ----------------------------------------------------------------------

    def _outgoing(self) -> Iterator[Any]:
        from .._proto.snakepit.v1 import worker_pb2 as pb

        get = self._requests.get
        while True:
            frame = get()
            if frame is None:
                return
            yield pb.Frames(frames=[frame])

    def send_raw(self, frame: bytes) -> None:
        """Send one frame's payload (one term's bytes) on the Session."""
        self._requests.put(bytes(frame))

    def send_bytes(self, data: bytes) -> None:
        """Not available over gRPC: a Session carries whole frames, never a byte stream."""
        raise NotImplementedError("send_bytes: a gRPC Session carries whole frames; use send_raw")

    def _read_loop(self) -> None:
        import grpc

        decode = self.codec.decode
        try:
            for message in self._responses:
                for frame in message.frames:
                    self._on_message(decode(frame))
        except grpc.RpcError:
            pass
        finally:
            self._connection_lost()
