"""The physical floor for bench_beam.exs: echo {packet, 4} frames from fd 3 to fd 4.

No codec, no dispatch: read a 4-byte big-endian length and that many bytes,
write both back unchanged. What the BEAM measures against this is the cost of
the Port itself plus one Python read and write per frame.

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

import io
import os
import sys

inp = io.FileIO(3, "rb", closefd=False)
out = io.FileIO(4, "wb", closefd=False)
buf = bytearray(1 << 16)


def read_exact(view):
    got = 0
    while got < len(view):
        n = inp.readinto(view[got:])
        if not n:
            raise SystemExit(0)  # end of input: the port closed
        got += n


def write_all(view):
    while view:
        view = view[out.write(view) :]


def read_frame():
    read_exact(memoryview(header))
    frame = bytearray(int.from_bytes(header, "big"))
    read_exact(memoryview(frame))
    return frame


def write_frame(payload):
    write_all(memoryview(len(payload).to_bytes(4, "big") + payload))


def serve_ok():
    ready = (
        b"\x83h\x02w\x05readyt\x00\x00\x00\x02w\x08protocola\x01w\x03pidb"
        + os.getpid().to_bytes(4, "big")
    )
    write_frame(ready)
    while True:
        frame = read_frame()
        # term_to_binary({:call, id, ...}) on OTP 25 = 131 'h' 6 'd' 0 4 "call" <integer>
        size = 2 if frame[10] == 97 else 5  # SMALL_INTEGER_EXT or INTEGER_EXT
        write_frame(b"\x83h\x03w\x02ok" + bytes(frame[10 : 10 + size]) + b"a\x01")


def serve_codec():
    from snakepit_py.codec import etf

    while True:
        call = etf.decode_message(bytes(read_frame()))
        write_frame(etf.encode_ok(call[1], call[3][0]))


header = bytearray(4)
if "--ok" in sys.argv:
    serve_ok()
if "--codec" in sys.argv:
    serve_codec()

while True:
    read_exact(memoryview(header))
    size = int.from_bytes(header, "big")
    if size + 4 > len(buf):
        buf = bytearray(size + 4)
    frame = memoryview(buf)[: size + 4]
    frame[:4] = header
    read_exact(frame[4:])
    write_all(frame)
