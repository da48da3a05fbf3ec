"""The worker over a real pipe pair, against the physical floor, in one run.

Measures, alternating rounds between a raw Python packet-4 echo and
``snakepit-py worker`` (both started with the protocol on fds 3/4, as a Port
with ``:nouse_stdio`` does):

- small call round trip: ``{:call, id, "add", [1, 2], %{}, %{timeout_ms: 5000}}``;
- 1 MiB binary round trip (``echo``);
- spawn -> first frame, against ``python -c pass``;
- idle worker RSS.

Run pinned to one CPU:  taskset -c 0 .venv/bin/python benchmarks/bench_port.py [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from snakepit_py.codec import etf  # noqa: E402

A = etf.Atom
WORKER = os.path.join(ROOT, "benchmarks", "bench_worker.py")
HELLO = os.path.join(ROOT, "examples", "hello_worker.py")
RAW = os.path.join(ROOT, "benchmarks", "raw_echo.py")


class Peer:
    """A child process with our pipes on its fds 3 (in) and 4 (out)."""

    def __init__(self, argv: list[str]) -> None:
        to_r, self.to_w = os.pipe()
        self.from_r, from_w = os.pipe()
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.t0 = time.perf_counter()
        self.pid = os.posix_spawn(
            argv[0], argv, env,
            file_actions=[(os.POSIX_SPAWN_DUP2, to_r, 3), (os.POSIX_SPAWN_DUP2, from_w, 4)],
        )  # fmt: skip
        os.close(to_r)
        os.close(from_w)
        self.buf = b""

    def send(self, payload: bytes) -> None:
        data = memoryview(len(payload).to_bytes(4, "big") + payload)
        while data:
            data = data[os.write(self.to_w, data) :]

    def recv(self) -> bytes:
        buf = self.buf
        while len(buf) < 4:
            buf += os.read(self.from_r, 1 << 20)
        size = int.from_bytes(buf[:4], "big")
        while len(buf) < 4 + size:
            buf += os.read(self.from_r, 1 << 20)
        self.buf = buf[4 + size :]
        return buf[4 : 4 + size]

    def close(self) -> None:
        os.close(self.to_w)
        os.waitpid(self.pid, 0)
        os.close(self.from_r)


def _worker() -> Peer:
    p = Peer([sys.executable, "-m", "snakepit_py", "worker", WORKER])
    p.recv()  # ready
    return p


def _raw() -> Peer:
    return Peer([sys.executable, RAW])


def _round(peer: Peer, frames: list[bytes]) -> float:
    t0 = time.perf_counter()
    for f in frames:
        peer.send(f)
        peer.recv()
    return (time.perf_counter() - t0) / len(frames)


def round_trips(rounds: int, n: int, make) -> tuple[float, float, float]:
    """Median per-call seconds for (raw, worker) and the median of the per-round ratios.

    Rounds alternate raw / worker; each ratio compares two neighbouring rounds,
    which cancels most of this machine's drift from one second to the next.
    """
    raw, worker = _raw(), _worker()
    frames = [make(i) for i in range(n)]
    raw_t, worker_t = [], []
    try:
        _round(raw, frames[:50])
        _round(worker, frames[:50])
        for _ in range(rounds):
            raw_t.append(_round(raw, frames))
            worker_t.append(_round(worker, frames))
    finally:
        raw.close()
        worker.close()
    ratios = [w / r for r, w in zip(raw_t, worker_t, strict=True)]
    return statistics.median(raw_t), statistics.median(worker_t), statistics.median(ratios)


def spawn_times(rounds: int, worker: str) -> tuple[float, float, float]:
    """Median seconds for: python -c pass, raw echo first reply, worker spawn -> ready."""
    base, raw_t, ready = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        base.append(time.perf_counter() - t0)
        p = _raw()
        p.send(b"x")
        p.recv()
        raw_t.append(time.perf_counter() - p.t0)
        p.close()
        p = Peer([sys.executable, "-m", "snakepit_py", "worker", worker])
        p.recv()
        ready.append(time.perf_counter() - p.t0)
        p.close()
    return statistics.median(base), statistics.median(raw_t), statistics.median(ready)


def idle_rss_mb(worker: str) -> float:
    """The idle worker's RSS (the worker's own: the ``pid`` in ``:ready``, not the guard's)."""
    p = Peer([sys.executable, "-m", "snakepit_py", "worker", worker])
    pid = etf.decode(p.recv())[1][A("pid")]
    time.sleep(0.3)
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    p.close()
    return rss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    opts = {A("timeout_ms"): 5000}
    small = round_trips(
        args.rounds, args.calls, lambda i: etf.encode((A("call"), i, "add", [1, 2], {}, opts))
    )
    blob = os.urandom(1 << 20)
    big = round_trips(
        max(3, args.rounds // 2), 30,
        lambda i: etf.encode((A("call"), i, "echo", [blob], {}, opts)),
    )  # fmt: skip
    # Run from bytecode, as an installed package does (this machine may set
    # PYTHONDONTWRITEBYTECODE, which would make every start compile from source).
    import compileall

    for folder in ("snakepit_py", "benchmarks", "examples"):
        compileall.compile_dir(os.path.join(ROOT, folder), quiet=1)
    base, raw_start, ready = spawn_times(args.rounds, HELLO)
    _, _, ready_async = spawn_times(max(3, args.rounds // 2), WORKER)
    rss = idle_rss_mb(HELLO)
    rss_async = idle_rss_mb(WORKER)
    result = {
        "small_call_us": {"raw": small[0] * 1e6, "worker": small[1] * 1e6,
                          "ratio": small[2]},
        "binary_1mib_us": {"raw": big[0] * 1e6, "worker": big[1] * 1e6, "ratio": big[2]},
        "spawn_ms": {"python_c_pass": base * 1e3, "raw_echo_first_reply": raw_start * 1e3,
                     "worker_ready": ready * 1e3, "ready_above_python": (ready - base) * 1e3,
                     "async_worker_ready": ready_async * 1e3},
        "idle_rss_mb": rss,
        "idle_rss_mb_async_worker": rss_async,
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
    }  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
        return
    s, b, sp = result["small_call_us"], result["binary_1mib_us"], result["spawn_ms"]
    print(f"pinned to CPUs {result['cpu_affinity']}, Python {result['python']}")
    print(
        f"small call     raw {s['raw']:8.1f} us   worker {s['worker']:8.1f} us   "
        f"ratio {s['ratio']:.2f}x  (goal <= 1.5x)"
    )
    print(
        f"1 MiB echo     raw {b['raw']:8.1f} us   worker {b['worker']:8.1f} us   "
        f"ratio {b['ratio']:.2f}x  (goal <= 1.3x)"
    )
    print(
        f"spawn          python -c pass {sp['python_c_pass']:.1f} ms   raw echo first reply "
        f"{sp['raw_echo_first_reply']:.1f} ms   hello_worker ready {sp['worker_ready']:.1f} ms "
        f"(+{sp['ready_above_python']:.1f} ms; goal <= 20)"
    )
    print(
        f"               bench_worker (has an async method) ready {sp['async_worker_ready']:.1f} ms"
    )
    print(
        f"idle RSS       hello_worker {rss:.1f} MB (goal <= 20)   bench_worker, event loop "
        f"running: {result['idle_rss_mb_async_worker']:.1f} MB"
    )


if __name__ == "__main__":
    main()
