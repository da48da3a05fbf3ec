"""``{packet, 4}`` framing over a pair of file descriptors (an Erlang Port).

The reader belongs to one thread at a time (the dispatcher's leader); the
writer may be shared and serialises whole frames with a lock.
"""

from __future__ import annotations

import _thread
import os
import struct

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    import threading

__all__ = ["FrameReader", "FrameWriter", "FrameTooLarge", "protect_stdio"]

_READ_SIZE = 64 * 1024  # below malloc's mmap threshold: no mmap/munmap per read
_HEADER = struct.Struct(">I")  # the {packet, 4} length
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from


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
        if not buf:
            # The common case: one read brings exactly one frame.
            buf = os.read(self.fd, _READ_SIZE)
            if len(buf) > 4:
                size = _unpack_header(buf)[0]
                if len(buf) == size + 4 and size <= self.max_frame:
                    return buf[4:]
            elif not buf:
                return None
        while len(buf) < 4:
            more = os.read(self.fd, _READ_SIZE)
            if not more:
                return None
            buf += more
        size = _unpack_header(buf)[0]
        end = 4 + size
        if size > self.max_frame:  # (even when it is all here already)
            head = buf[4 : 4 + 64]
            if len(buf) >= end:
                self._buf = buf[end:]
            else:
                self._buf = b""
                self._drain(size - (len(buf) - 4))
            raise FrameTooLarge(size, head)
        if len(buf) >= end:
            self._buf = buf[end:]
            return buf[4:end]
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

    def has_buffered(self) -> bool:
        """True when bytes read ahead of the last frame wait here (``read`` returns without I/O)."""
        return bool(self._buf)

    def _drain(self, remaining: int) -> None:
        while remaining > 0:
            chunk = os.read(self.fd, min(remaining, 1 << 20))
            if not chunk:
                return
            remaining -= len(chunk)


class FrameWriter:
    """Writes length-prefixed frames to ``fd``, one whole frame at a time.

    ``write`` sends at once. ``write_soon`` (for stream chunks) queues the
    frame and lets a flusher thread send the queue after ``delay`` seconds, or
    sends it at once when the queue reaches ``batch_bytes``; ``write`` sends
    the queue first, so frames keep their order. A fast stream thus costs one
    system call (and one wake-up of the reader) per batch instead of per chunk.
    """

    def __init__(self, fd: int, delay: float = 0.0005, batch_bytes: int = 32768) -> None:
        self.fd = fd
        self.lock = _thread.allocate_lock()
        self.closed = False
        self.delay = delay
        self.batch_bytes = batch_bytes
        self._queue: list[bytes] = []
        self._queued = 0
        self._due = False
        # made with the first queued frame: only streams need a flusher
        self._cond: threading.Condition | None = None
        self._flusher: threading.Thread | None = None

    def write_soon(self, payload: bytes) -> None:
        """Queue one frame; it is written within ``delay`` seconds (or sooner)."""
        size = len(payload)
        with self.lock:
            if self.closed:
                return
            queue = self._queue
            queue.append(_pack_header(size))  # header and payload joined at flush
            queue.append(payload)
            self._queued += size + 4
            if self._queued >= self.batch_bytes:
                self._flush_locked()
            elif not self._due:
                self._due = True
                if self._flusher is None:
                    import threading

                    self._cond = threading.Condition(self.lock)
                    self._flusher = threading.Thread(
                        target=self._flush_loop, name="snakepit-flusher", daemon=True
                    )
                    self._flusher.start()
                else:
                    self._cond.notify()  # type: ignore[union-attr]

    def _flush_loop(self) -> None:
        cond = self._cond
        assert cond is not None  # made before this thread started
        with self.lock:
            while True:
                while not self._due:
                    cond.wait()
                cond.wait(self.delay)  # let more frames join the batch
                self._due = False
                if self._queue:
                    try:
                        self._flush_locked()
                    except OSError:
                        self._queue.clear()
                        self._queued = 0

    def _flush_locked(self) -> None:
        data = b"".join(self._queue) if len(self._queue) > 1 else self._queue[0]
        self._queue.clear()
        self._queued = 0
        self._write_rest(memoryview(data))

    def write(self, payload: bytes) -> None:
        """Write one frame. Raises OSError (e.g. BrokenPipeError) when the peer is gone.

        After ``closed`` is set (the worker said ``:bye``) frames are dropped.
        """
        if self.closed:
            return
        header = _pack_header(len(payload))
        if len(payload) < 65536:
            data = header + payload
            lock = self.lock
            lock.acquire()  # acquire/try/finally: half the cost of `with` (every reply)
            try:
                if self._queue:
                    self._queue.append(data)
                    self._flush_locked()
                    return
                n = os.write(self.fd, data)
                if n != len(data):
                    self._write_rest(memoryview(data)[n:])
            finally:
                lock.release()
            return
        with self.lock:
            if self._queue:
                self._flush_locked()
            self._write_rest_v([header, payload])

    def _write_rest(self, view: memoryview) -> None:
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def _write_rest_v(self, parts: list[bytes]) -> None:
        # One writev for header + payload: no copy of a big payload, and one
        # system call, so the frame is not split by an interrupt in between.
        total = sum(len(p) for p in parts)
        n = os.writev(self.fd, parts)
        if n < total:
            joined = memoryview(b"".join(parts))
            self._write_rest(joined[n:])


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
