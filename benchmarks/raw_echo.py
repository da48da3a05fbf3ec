"""The physical floor for bench_beam.exs: echo {packet, 4} frames from fd 3 to fd 4.

No codec, no dispatch: one buffered read per frame (a frame that fits in
64 KiB arrives whole in one ``os.read``; a larger one is read into one
preallocated buffer), and the frame, header included, written back unchanged
with one ``os.write``. This is the cheapest honest echo with the same
framing: what the BEAM measures against it is the cost of the Port itself
plus one Python read and write per frame. ``--fd IN,OUT`` reads and writes
other fds (benchmarks/instr.py).

With ``--ok`` it is instead the cheapest possible protocol peer: it sends a
minimal ``{:ready, %{protocol: 1, pid: pid}}`` and answers every
``{:call, id, ...}`` with ``{:ok, id, 1}`` from canned bytes, without decoding.
Run under ``Snakepit.Worker`` (as its ``python:``) it isolates the cost of the
Elixir harness from the cost of the Python runtime.

With ``--codec`` it decodes every call with snakepit_py's ETF codec and
answers ``{:ok, id, first_arg}`` encoded by it: a single-threaded loop with
the codec and nothing else (no dispatcher, no threads). Between the raw echo
and the worker, it shows how much of a call is the codec.
"""

import os
import sys

fd_in, fd_out = 3, 4
if "--fd" in sys.argv:
    fd_in, fd_out = (int(n) for n in sys.argv[sys.argv.index("--fd") + 1].split(","))
READ_SIZE = 1 << 16


def read_more(data, want):
    """``data`` and what follows, until it is ``want`` bytes long (a frame larger than one read)."""
    if want <= READ_SIZE:
        while len(data) < want:
            more = os.read(fd_in, READ_SIZE)
            if not more:
                raise SystemExit(0)  # end of input: the port closed
            data += more
        return data
    buf = bytearray(want)
    buf[: len(data)] = data
    view, got = memoryview(buf), len(data)
    while got < want:
        n = os.readv(fd_in, [view[got:]])
        if not n:
            raise SystemExit(0)
        got += n
    return buf


def frames():
    """Yield each frame, its 4-byte header included: one read per frame when it fits in one."""
    data = b""
    while True:
        if len(data) < 4:
            data = read_more(data, 4)
        end = int.from_bytes(data[:4], "big") + 4
        if len(data) < end:
            data = read_more(data, end)
        if len(data) == end:  # the common case: the read brought exactly one frame
            yield data
            data = b""
        else:
            yield data[:end]
            data = data[end:]


def write_all(data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd_out, view) :]


def serve_echo():
    write = os.write
    for frame in frames():
        n = write(fd_out, frame)
        if n != len(frame):  # a pipe that took only part of a large frame
            write_all(memoryview(frame)[n:])


def serve_ok():
    ready = (
        b"\x83h\x02w\x05readyt\x00\x00\x00\x02w\x08protocola\x01w\x03pidb"
        + os.getpid().to_bytes(4, "big")
    )
    write_all(len(ready).to_bytes(4, "big") + ready)
    for frame in frames():
        # term_to_binary({:call, id, ...}) on OTP 25 = 131 'h' 6 'w' 4 "call" <integer>
        size = 2 if frame[14] == 97 else 5  # SMALL_INTEGER_EXT or INTEGER_EXT
        reply = b"\x83h\x03w\x02ok" + bytes(frame[14 : 14 + size]) + b"a\x01"
        write_all(len(reply).to_bytes(4, "big") + reply)


def serve_codec():
    from snakepit_py.codec import etf

    for frame in frames():
        call = etf.decode_message(bytes(frame[4:]))
        reply = etf.encode_ok(call[1], call[3][0])
        write_all(len(reply).to_bytes(4, "big") + reply)


if "--ok" in sys.argv:
    serve_ok()
elif "--codec" in sys.argv:
    serve_codec()
else:
    serve_echo()
