"""gRPC transport benchmarks: snakepit's worker against a bare gRPC server, same run.

    taskset -c 0 .venv/bin/python benchmarks/bench_grpc.py [--json] [--rounds 7]

- unary: round trip of one ``Call`` (method ``echo``, a small argument, msgpack)
  against a bare ``grpc`` server in another process whose handler for the same
  RPC path and message shapes returns a canned reply. Short batches alternate
  between the two servers; the ratio of the median batches is reported, and of
  the best batches (least disturbed by other processes). Target <= 1.2.
- session: the same call over the Session stream (the BEAM's path), one at a time.
- stream: chunks/s of one ``Stream`` of ``count(N)`` (ints), counted as they
  arrive (``raw``) and decoded through GrpcClient (``client``). Target >= 18 000.
- spawn: process start -> ``SNAKEPIT_READY`` line, median of 10 (target <= 150 ms).

Everything runs pinned to the CPUs this process has (``taskset -c 0``: one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORKER = str(ROOT / "tests" / "workers" / "basic.py")
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def bare_server() -> None:
    """A gRPC server with an empty handler for the Worker.Call path (run as a subprocess)."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from snakepit_py._proto.snakepit.v1 import worker_pb2 as pb

    reply = pb.CallReply(result=b"\x91\x01")

    def call(request, context):
        return reply

    server = grpc.server(ThreadPoolExecutor(max_workers=8), handlers=[
        grpc.method_handlers_generic_handler("snakepit.v1.Worker", {
            "Call": grpc.unary_unary_rpc_method_handler(
                call, pb.CallRequest.FromString, pb.CallReply.SerializeToString),
        })])  # fmt: skip
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"SNAKEPIT_READY grpc 127.0.0.1:{port}", flush=True)
    sys.stdin.read()
    os._exit(0)


def spawn(args: list[str]) -> tuple[subprocess.Popen, str, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV)
    line = proc.stdout.readline().decode()
    took = time.perf_counter() - t0
    if not line.startswith("SNAKEPIT_READY"):
        raise SystemExit(f"no ready line from {args}: {line!r}")
    return proc, line.split()[-1], took


def cpu_ms(pid: int) -> float:
    """CPU time (user + system) a process has used so far, in ms."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def spawn_port() -> tuple[float, float]:
    """A Port worker (--stdio) from start to its :ready frame: (wall ms, cpu ms)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakepit_py", "worker", WORKER, "--stdio"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV,
    )  # fmt: skip
    size = int.from_bytes(proc.stdout.read(4), "big")
    proc.stdout.read(size)
    took = (time.perf_counter() - t0) * 1000
    cpu = cpu_ms(proc.pid)
    stop(proc)
    return took, cpu


def worker_args(*extra: str) -> list[str]:
    return [sys.executable, "-m", "snakepit_py", "worker", WORKER, "--grpc", "127.0.0.1:0", *extra]


def stop(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(5)
    proc.stdout.close()


def unary_round(client, n: int) -> float:
    """Mean µs per sequential Call."""
    call = client._call
    request = client._request("echo", (1,), None, None, None)
    t0 = time.perf_counter()
    for _ in range(n):
        call(request)
    return (time.perf_counter() - t0) / n * 1e6


def session_round(sup, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        sup.call("echo", 1)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=40, help="alternating batches per server")
    p.add_argument("--calls", type=int, default=100, help="calls per batch")
    p.add_argument("--chunks", type=int, default=200_000)
    p.add_argument("--json", action="store_true")
    p.add_argument("--bare-server", action="store_true", help=argparse.SUPPRESS)
    ns = p.parse_args()
    if ns.bare_server:
        bare_server()
    import grpc

    from snakepit_py.client import GrpcClient
    from snakepit_py.testing import GrpcSupervisor

    results: dict = {
        "machine": {"python": platform.python_version(), "grpcio": grpc.__version__,
                    "cpus": sorted(os.sched_getaffinity(0)), "platform": platform.platform()},
    }  # fmt: skip

    # spawn -> ready, with the Port worker and a bare interpreter as yardsticks: on a
    # shared machine wall time swings, CPU time to ready much less.
    spawns, cpus, port, port_cpu, bare_py = [], [], [], [], []
    for _ in range(10):
        proc, _, took = spawn(worker_args())
        spawns.append(took * 1000)
        cpus.append(cpu_ms(proc.pid))
        stop(proc)
        wall, cpu = spawn_port()
        port.append(wall)
        port_cpu.append(cpu)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=ENV, check=True)
        bare_py.append((time.perf_counter() - t0) * 1000)
    med = statistics.median
    results["spawn_ms"] = {
        "median": round(med(spawns)), "min": round(min(spawns)), "cpu": round(med(cpus)),
        "port_median": round(med(port)), "port_cpu": round(med(port_cpu)),
        "python_pass": round(med(bare_py)),
    }  # fmt: skip

    # unary: alternate rounds, bare vs snakepit
    bare_proc, bare_addr, _ = spawn([sys.executable, __file__, "--bare-server"])
    sp_proc, sp_addr, _ = spawn(worker_args())
    bare_c, sp_c = GrpcClient(bare_addr, codec="msgpack"), GrpcClient(sp_addr, codec="msgpack")
    unary_round(bare_c, 200), unary_round(sp_c, 200)  # warm up
    # Many short alternating batches: load from other processes hits both alike.
    bare, snake = [], []
    for _ in range(ns.rounds):
        bare.append(unary_round(bare_c, ns.calls))
        snake.append(unary_round(sp_c, ns.calls))
    med = statistics.median
    results["unary_us"] = {
        "bare": round(med(bare), 1), "snakepit": round(med(snake), 1),
        "ratio": round(med(snake) / med(bare), 3),
        "bare_best": round(min(bare), 1), "snakepit_best": round(min(snake), 1),
        "ratio_best": round(min(snake) / min(bare), 3),
    }  # fmt: skip

    # stream throughput
    n = ns.chunks
    rates_raw, rates_client = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        got = 0
        for reply in sp_c._stream(sp_c._request("count", (n,), None, None, None)):
            got += len(reply.chunks)
        rates_raw.append(got / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        got = sum(1 for _ in sp_c.stream("count", n))
        rates_client.append(got / (time.perf_counter() - t0))
    results["stream_chunks_per_s"] = {"raw": round(max(rates_raw)),
                                      "client": round(max(rates_client))}  # fmt: skip
    bare_c.close(), sp_c.close()
    stop(bare_proc), stop(sp_proc)

    # session round trip (the BEAM's path)
    with GrpcSupervisor(WORKER) as sup:
        session_round(sup, 200)
        rounds = [session_round(sup, 1000) for _ in range(3)]
    results["session_us"] = round(statistics.median(rounds), 1)

    if ns.json:
        print(json.dumps(results, indent=2))
    else:
        u = results["unary_us"]
        print(f"machine      {results['machine']}")
        sp = results["spawn_ms"]
        print(
            f"spawn->ready {sp['median']} ms median ({sp['min']} min, {sp['cpu']} ms CPU)"
            f"   target <= 150;  Port worker {sp['port_median']} ms ({sp['port_cpu']} ms CPU),"
            f" python -c pass {sp['python_pass']} ms"
        )
        print(
            f"unary Call   {u['snakepit']:.0f} us vs bare {u['bare']:.0f} us: "
            f"{u['ratio']:.2f}x (median batch; best batches {u['snakepit_best']:.0f} vs "
            f"{u['bare_best']:.0f} us: {u['ratio_best']:.2f}x)   target <= 1.2x"
        )
        st = results["stream_chunks_per_s"]
        print(
            f"Stream       {st['raw']:,} chunks/s (raw), {st['client']:,} (GrpcClient decoding)"
            f"   target >= 18,000"
        )
        print(f"Session      {results['session_us']:.0f} us per call (one at a time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
