"""``{packet, 4}`` framing over a pair of file descriptors (an Erlang Port).

The reader belongs to one thread at a time (the dispatcher's leader); the
writer may be shared and serialises whole frames with a lock.
"""

from __future__ import annotations

import os
import threading

__all__ = ["FrameReader", "FrameWriter", "FrameTooLarge", "protect_stdio"]

_READ_SIZE = 64 * 1024  # below malloc's mmap threshold: no mmap/munmap per read


class FrameTooLarge(Exception):
    """A frame longer than the limit arrived; its bytes were drained.

    Attributes:
        size: the length the frame header announced.
        head: the first bytes of the payload (enough to find a call id).
    """

    def __init__(self, size: int, head: bytes) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit")
        self.size = size
        self.head = head


class FrameReader:
    """Reads length-prefixed frames from ``fd``; ``read()`` returns None at end of input."""

    def __init__(self, fd: int, max_frame: int = 64 * 2**20) -> None:
        self.fd = fd
        self.max_frame = max_frame
        self._buf = b""

    def read(self) -> bytes | None:
        """Return the next frame's payload, or None at end of input.

        Raises:
            FrameTooLarge: the frame was over ``max_frame``; it has been skipped.
        """
        buf = self._buf
        while len(buf) < 4:
            more = os.read(self.fd, _READ_SIZE)
            if not more:
                return None
            buf += more
        size = int.from_bytes(buf[:4], "big")
        end = 4 + size
        if len(buf) >= end:
            self._buf = buf[end:]
            return buf[4:end]
        if size > self.max_frame:
            self._buf = b""
            head = buf[4 : 4 + 64]
            self._drain(size - (len(buf) - 4))
            raise FrameTooLarge(size, head)
        # A big frame: read straight into one preallocated buffer.
        frame = bytearray(size)
        view = memoryview(frame)
        have = len(buf) - 4
        view[:have] = buf[4:]
        while have < size:
            n = os.readv(self.fd, [view[have:]])
            if n == 0:
                return None
            have += n
        self._buf = b""
        return bytes(frame) if size < 4096 else frame  # type: ignore[return-value]

    def _drain(self, remaining: int) -> None:
        while remaining > 0:
            chunk = os.read(self.fd, min(remaining, 1 << 20))
            if not chunk:
                return
            remaining -= len(chunk)


class FrameWriter:
    """Writes length-prefixed frames to ``fd``, one whole frame at a time."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.closed = False

    def write(self, payload: bytes) -> None:
        """Write one frame. Raises OSError (e.g. BrokenPipeError) when the peer is gone.

        After ``closed`` is set (the worker said ``:bye``) frames are dropped.
        """
        if self.closed:
            return
        header = len(payload).to_bytes(4, "big")
        if len(payload) < 65536:
            data = header + payload
            with self.lock:
                n = os.write(self.fd, data)
                if n != len(data):
                    self._write_rest(memoryview(data)[n:])
            return
        with self.lock:
            self._write_rest(memoryview(header))
            self._write_rest(memoryview(payload))

    def _write_rest(self, view: memoryview) -> None:
        while view:
            n = os.write(self.fd, view)
            view = view[n:]


def protect_stdio(use_stdio: bool) -> tuple[int, int]:
    """Make fds 0/1 safe for user code and return the protocol's (in, out) fds.

    With ``use_stdio`` the protocol lives on fds 0/1: both are duplicated to
    private descriptors, fd 0 is pointed at /dev/null and fd 1 at fd 2, so a
    C extension's ``write(1, ...)`` lands on stderr, never in the frame stream.
    Without it, only fd 1 is redirected to stderr (the Port ignores fd 1 under
    ``:nouse_stdio`` anyway, and a closed pipe there would kill prints).

    Returns:
        The (input, output) descriptors to use for frames when ``use_stdio``,
        else ``(-1, -1)``.
    """
    if use_stdio:
        fd_in = os.dup(0)
        fd_out = os.dup(1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)
        os.set_inheritable(fd_in, False)
        os.set_inheritable(fd_out, False)
        return fd_in, fd_out
    return -1, -1
