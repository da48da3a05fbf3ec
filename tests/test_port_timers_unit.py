"""In-process unit tests for the frame writer's ordering and the deadline heap (no subprocess)."""

from __future__ import annotations

import os
import threading
import time

from snakepit_py._timers import Deadlines
from snakepit_py.transport.port import FrameReader, FrameWriter


def _frames(fd: int, n: int) -> list[bytes]:
    reader = FrameReader(fd)
    return [reader.read() for _ in range(n)]


def _collect(fd: int, n: int) -> tuple[threading.Thread, list[bytes]]:
    """Read ``n`` frames from ``fd`` on a thread (a big frame does not fit a pipe's buffer)."""
    out: list[bytes] = []
    thread = threading.Thread(target=lambda: out.extend(_frames(fd, n)), daemon=True)
    thread.start()
    return thread, out


def test_a_write_sends_the_queued_chunks_first_small_or_big():
    # Given chunks queued for a later flush (a long delay: nothing flushes by itself)
    r, w = os.pipe()
    writer = FrameWriter(w, delay=60.0)
    reading, got = _collect(r, 5)
    try:
        writer.write_soon(b"chunk-0")
        writer.write_soon(b"chunk-1")
        # When a small and then a big frame are written at once
        writer.write(b"small")
        writer.write_soon(b"chunk-2")
        big = b"B" * 70_000
        writer.write(big)
        # Then every frame arrives whole, in the order it was given
        reading.join(10)
        assert got == [b"chunk-0", b"chunk-1", b"small", b"chunk-2", big]
    finally:
        os.close(w)
        os.close(r)


def test_a_full_batch_is_written_without_waiting_for_the_flusher():
    r, w = os.pipe()
    writer = FrameWriter(w, delay=60.0, batch_bytes=64)
    try:
        for i in range(4):
            writer.write_soon(b"%02d" % i + b"x" * 30)  # the second one fills the batch
        assert [f[:2] for f in _frames(r, 2)] == [b"00", b"01"]
    finally:
        os.close(w)
        os.close(r)


def test_frames_after_closed_are_dropped():
    r, w = os.pipe()
    writer = FrameWriter(w)
    writer.write(b"before")
    writer.closed = True
    writer.write(b"after")
    writer.write_soon(b"after too")
    os.close(w)
    reader = FrameReader(r)
    assert reader.read() == b"before" and reader.read() is None
    os.close(r)


def test_a_flush_to_a_vanished_peer_drops_the_queue_and_goes_on():
    r, w = os.pipe()
    writer = FrameWriter(w, delay=0.001)
    os.close(r)  # the peer is gone: the flusher's write fails with EPIPE
    writer.write_soon(b"lost")
    deadline = time.monotonic() + 5
    while writer._queue and time.monotonic() < deadline:
        time.sleep(0.005)
    assert writer._queue == []
    os.close(w)


def test_deadlines_fire_in_order_and_an_earlier_one_wakes_the_timer():
    fired: list[int] = []
    done = threading.Event()

    def fire(serial: int, call_id: int) -> None:
        fired.append(call_id)
        if len(fired) == 2:
            done.set()

    deadlines = Deadlines(fire, lambda: [])
    now = time.monotonic()
    deadlines.add(now + 30.0, 1, 100)  # far away: the timer sleeps until then
    deadlines.add(now + 0.05, 2, 200)  # earlier: it must be woken
    deadlines.add(now + 0.01, 3, 300)
    assert done.wait(5)
    assert fired == [300, 200]


def test_the_heap_is_rebuilt_from_live_calls_when_stale_entries_pile_up():
    live = [(time.monotonic() + 60.0, 7, 77)]
    deadlines = Deadlines(lambda serial, call_id: None, lambda: list(live))
    far = time.monotonic() + 60.0
    for serial in range(300):  # past the first limit of 256 entries
        deadlines.add(far, serial, serial)
    assert len(deadlines._heap) < 300  # compacted down to the live calls and what came after
    assert (live[0] in deadlines._heap) and deadlines._limit >= 256
