"""Streaming throughput against a raw packet-4 writer, and cancellation latency.

- throughput: ``stream(n)`` yielding 16-byte binaries, chunks/s received by a
  Python reader, against a raw Python process writing the very same frames
  (pre-encoded ``{:chunk, 1, seq, <<16 bytes>>}``, one ``write`` each) to the
  same kind of pipe, alternating rounds in one run;
- cancellation latency, ``{:cancel, id}`` sent -> terminal received, for a
  generator, an async method and a pure-Python busy loop.

Run:  taskset -c 0 .venv/bin/python benchmarks/bench_stream.py [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_port import ROOT, WORKER, Peer  # noqa: E402

from snakepit_py.codec import etf  # noqa: E402

A = etf.Atom
RAW_WRITER = """
import os, sys
n = int(sys.argv[1])
frame = bytes.fromhex(sys.argv[2])
data = len(frame).to_bytes(4, "big") + frame
os.read(3, 4)
write = os.write
for _ in range(n):
    write(4, data)
"""


def count_frames(peer: Peer, n: int) -> None:
    """Read exactly ``n`` frames as fast as a Python reader can."""
    fd = peer.from_r
    buf = peer.buf
    got = 0
    while got < n:
        buf += os.read(fd, 1 << 16)
        pos, end = 0, len(buf)
        while end - pos >= 4:
            size = int.from_bytes(buf[pos : pos + 4], "big")
            if end - pos - 4 < size:
                break
            pos += 4 + size
            got += 1
        buf = buf[pos:]
    peer.buf = buf


def raw_rate(n: int) -> float:
    frame = etf.encode((A("chunk"), 1, 0, b"x" * 16))
    peer = Peer([sys.executable, "-c", RAW_WRITER, str(n), frame.hex()])
    t0 = time.perf_counter()
    os.write(peer.to_w, b"\0\0\0\0")
    count_frames(peer, n)
    rate = n / (time.perf_counter() - t0)
    peer.close()
    return rate


def worker_rate(peer: Peer, n: int, call_id: int) -> float:
    t0 = time.perf_counter()
    peer.send(etf.encode((A("call"), call_id, "stream", [n], {}, {})))
    count_frames(peer, n + 1)  # n chunks + the terminal
    return n / (time.perf_counter() - t0)


def cancel_latency(peer: Peer, method: str, call_id: int, wait_first: bool) -> float:
    peer.send(etf.encode((A("call"), call_id, method, [], {}, {A("credit"): 1})))
    if wait_first:
        peer.recv()  # the first chunk: the generator is running
    else:
        time.sleep(0.05)  # let it get going
    t0 = time.perf_counter()
    peer.send(etf.encode((A("cancel"), call_id)))
    while True:
        msg = etf.decode(peer.recv())
        if msg[0] in ("ok", "error") and msg[1] == call_id:
            return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cancels", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    peer = Peer([sys.executable, "-m", "snakepit_py", "worker", WORKER])
    peer.recv()
    raw, ours = [], []
    for i in range(args.rounds):
        raw.append(raw_rate(args.chunks))
        ours.append(worker_rate(peer, args.chunks, i + 1))
    lat = {}
    cid = 1000
    for method, wait_first in (("forever", True), ("nap", False), ("spin", False)):
        samples = []
        for _ in range(args.cancels):
            cid += 1
            samples.append(cancel_latency(peer, method, cid, wait_first) * 1e3)
        lat[method] = {"median_ms": statistics.median(samples), "max_ms": max(samples)}
    peer.close()
    result = {
        "stream_chunks_per_s": {
            "raw_writer": statistics.median(raw),
            "worker": statistics.median(ours),
            "ratio": statistics.median(ours) / statistics.median(raw),
        },
        "cancel_latency": {
            "generator": lat["forever"],
            "async": lat["nap"],
            "busy_loop": lat["spin"],
        },
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "root": ROOT,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    s = result["stream_chunks_per_s"]
    print(f"pinned to CPUs {result['cpu_affinity']}")
    print(
        f"stream 16-byte chunks   raw writer {s['raw_writer']:,.0f}/s   worker {s['worker']:,.0f}/s"
        f"   {s['ratio']:.0%} of raw  (goal >= 50%)"
    )
    for name, key, goal in (("generator", "generator", 5), ("async", "async", 5),
                            ("busy loop", "busy_loop", 50)):  # fmt: skip
        c = result["cancel_latency"][key]
        print(
            f"cancel -> terminal  {name:10s} median {c['median_ms']:6.2f} ms  "
            f"max {c['max_ms']:6.2f} ms  (goal <= {goal} ms median)"
        )


if __name__ == "__main__":
    main()
