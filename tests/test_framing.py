"""``{packet, 4}`` framing (transport.port) over a real pipe, however the bytes arrive."""

from __future__ import annotations

import os
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepit_py.transport.port import FrameReader, FrameTooLarge, FrameWriter


def _framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def _feed(pieces: list[bytes]) -> FrameReader:
    """A reader on a pipe a thread writes ``pieces`` into, pausing between them, then closes."""
    r, w = os.pipe()

    def writer() -> None:
        for piece in pieces:
            os.write(w, piece)
            time.sleep(0.002)  # let the reader see each piece on its own
        os.close(w)

    threading.Thread(target=writer, daemon=True).start()
    return FrameReader(r, max_frame=1 << 20)


def _read_all(reader: FrameReader) -> list[bytes]:
    frames = []
    while (frame := reader.read()) is not None:
        frames.append(bytes(frame))
    os.close(reader.fd)
    return frames


def test_one_frame_per_read_two_in_one_read_and_split_headers() -> None:
    a, b, c = b"first", b"", b"x" * 100
    stream = _framed(a) + _framed(b) + _framed(c)
    assert _read_all(_feed([_framed(a), _framed(b) + _framed(c)])) == [a, b, c]
    assert _read_all(_feed([stream[:2], stream[2:7], stream[7:]])) == [a, b, c]
    assert _read_all(_feed([_framed(b)])) == [b""]


def test_a_frame_cut_by_end_of_input_is_the_end() -> None:
    assert _read_all(_feed([_framed(b"whole"), _framed(b"cut short")[:-3]])) == [b"whole"]
    assert _read_all(_feed([b"\x00\x00"])) == []


def test_big_frames_and_frames_over_the_limit() -> None:
    big = os.urandom(300_000)
    over = b"y" * ((1 << 20) + 1)
    reader = _feed([_framed(big), _framed(over), _framed(b"after")])
    assert bytes(reader.read()) == big
    with pytest.raises(FrameTooLarge) as info:
        reader.read()
    assert info.value.size == len(over)
    assert reader.read() == b"after"  # the oversize frame was drained
    assert reader.read() is None


def test_the_limit_holds_for_frames_that_arrive_whole() -> None:
    # Given a small limit and frames that each arrive in one read, or together
    r, w = os.pipe()
    reader = FrameReader(r, max_frame=100)
    for pieces in ([_framed(b"x" * 101)], [_framed(b"y" * 101) + _framed(b"ok")]):
        os.write(w, b"".join(pieces))
        # Then the big one is refused (and skipped), the next one read
        with pytest.raises(FrameTooLarge) as info:
            reader.read()
        assert info.value.size == 101 and info.value.head == pieces[0][4:68]
    assert reader.read() == b"ok"
    os.write(w, _framed(b"z" * 100))
    assert reader.read() == b"z" * 100
    os.close(w)
    assert reader.read() is None
    os.close(r)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=6), st.data())
def test_any_split_of_any_frames_reads_back_the_same(frames: list[bytes], data) -> None:
    stream = b"".join(_framed(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    pieces = [stream[i:j] for i, j in zip([0, *cuts], [*cuts, len(stream)], strict=True) if j > i]
    assert _read_all(_feed(pieces)) == frames


def test_writer_frames_what_the_reader_reads() -> None:
    r, w = os.pipe()
    writer, reader = FrameWriter(w), FrameReader(r)
    for payload in [b"a", b"", b"z" * 70_000]:
        threading.Thread(target=writer.write, args=(payload,), daemon=True).start()
        assert bytes(reader.read()) == payload
    os.close(w)
    assert reader.read() is None
    os.close(r)
