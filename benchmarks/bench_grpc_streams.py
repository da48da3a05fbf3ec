"""Does a flood of idle gRPC streams slow down the unary RPCs? Call p99 with and without.

    taskset -c 0 .venv/bin/python benchmarks/bench_grpc_streams.py [--json] [--rounds 5]

One worker (``tests/workers/basic.py``, default options unless ``--max-streams``
is given). Rounds alternate between two states:

- ``none``: no other client;
- ``flood``: another process has attempted ``--sessions`` (1000) Sessions on one
  channel and keeps the ones the worker accepted open and idle (by default the
  worker serves 64 and refuses the rest with RESOURCE_EXHAUSTED).

In each round this process makes ``--calls`` sequential ``Call``s (``echo(1)``,
msgpack) and as many ``grpc.health.v1/Check``s, timing each one. Reported: p50
and p99 of every round, and the ratio flood / none of the median p99 over the
rounds (target: Call p99 ratio <= 2). A first round is run and not counted.
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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORKER = str(ROOT / "tests" / "workers" / "basic.py")
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def flooder(address: str) -> None:
    """Subprocess: on ``open N`` attempt N idle Sessions, on ``close`` end them; report each."""
    import grpc

    from snakepit_py.client import GrpcClient

    client = GrpcClient(address)
    stop = threading.Event()
    sessions: list = []

    def idle():
        stop.wait()
        yield from ()

    for line in sys.stdin:
        command = line.split()
        if command[0] == "open":
            stop.clear()
            sessions = [client.session(idle()) for _ in range(int(command[1]))]
            opened = refused = 0
            for s in sessions:
                try:
                    next(s)
                    opened += 1
                except grpc.RpcError as err:
                    refused += 1
                    if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
            print(f"opened {opened} refused {refused}", flush=True)
        elif command[0] == "close":
            stop.set()
            for s in sessions:
                s.cancel()
            sessions = []
            print("closed", flush=True)
    os._exit(0)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def measure(client, n: int) -> dict:
    """Latencies (µs) of n sequential Calls and n Checks."""
    call, check = client._call, client._check
    request = client._request("echo", (1,), None, None, None)
    for _ in range(50):  # warm up
        call(request, timeout=10)
    calls, checks = [], []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        call(request, timeout=10)
        t1 = clock()
        check("", timeout=10)
        t2 = clock()
        calls.append((t1 - t0) * 1e6)
        checks.append((t2 - t1) * 1e6)
    return {
        "call_p50": percentile(calls, 0.5), "call_p99": percentile(calls, 0.99),
        "check_p50": percentile(checks, 0.5), "check_p99": percentile(checks, 0.99),
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds of each state (default 5)")
    ap.add_argument("--calls", type=int, default=2000, help="calls per round (default 2000)")
    ap.add_argument("--sessions", type=int, default=1000, help="Sessions attempted (default 1000)")
    ap.add_argument("--max-streams", type=int, help="the worker's --grpc-max-streams")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--flood", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.flood:
        flooder(args.flood)

    from snakepit_py.client import GrpcClient

    extra = ["--grpc-max-streams", str(args.max_streams)] if args.max_streams else []
    worker = subprocess.Popen(
        [sys.executable, "-m", "snakepit_py", "worker", WORKER, "--grpc", "127.0.0.1:0", *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV,
    )  # fmt: skip
    line = worker.stdout.readline().decode()
    if not line.startswith("SNAKEPIT_READY"):
        raise SystemExit(f"the worker did not start: {line!r}")
    address = line.split()[-1]
    flood = subprocess.Popen(
        [sys.executable, __file__, "--flood", address],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV, text=True,
    )  # fmt: skip

    def tell(command: str) -> str:
        flood.stdin.write(command + "\n")
        flood.stdin.flush()
        return flood.stdout.readline().strip()

    rounds: dict[str, list[dict]] = {"none": [], "flood": []}
    opened = ""
    with GrpcClient(address, codec="msgpack") as client:
        measure(client, args.calls)  # a first round, not counted: start-up effects
        for i in range(args.rounds * 2):
            state = ("none", "flood")[i % 2]
            if state == "flood":
                t0 = time.perf_counter()
                opened = tell(f"open {args.sessions}")
                took = time.perf_counter() - t0
            result = measure(client, args.calls)
            if state == "flood":
                result["flood"] = opened
                result["open_s"] = round(took, 2)
                tell("close")
                time.sleep(0.5)  # the worker ends the Sessions
            rounds[state].append(result)
            if not args.json:
                shown = "  ".join(f"{k} {v:7.0f}" for k, v in result.items() if k.endswith("9"))
                note = f"  ({opened}, in {took:.1f} s)" if state == "flood" else ""
                print(f"round {i // 2 + 1} {state:5}  {shown}{note}", flush=True)
    flood.stdin.close()
    flood.wait(10)
    worker.stdin.close()
    worker.wait(10)

    summary = {}
    for key in ("call_p50", "call_p99", "check_p50", "check_p99"):
        base = statistics.median(r[key] for r in rounds["none"])
        loaded = statistics.median(r[key] for r in rounds["flood"])
        summary[key] = {"none_us": round(base), "flood_us": round(loaded),
                        "ratio": round(loaded / base, 2)}  # fmt: skip
    import grpc

    env = {"python": platform.python_version(), "grpcio": grpc.__version__,
           "cpus": len(os.sched_getaffinity(0)), "load": os.getloadavg()[0]}  # fmt: skip
    if args.json:
        print(json.dumps({"env": env, "sessions": args.sessions, "flood": opened,
                          "summary": summary, "rounds": rounds}, indent=2))  # fmt: skip
    else:
        print(f"\n{env}; {args.sessions} Sessions attempted: {opened}")
        for key, s in summary.items():
            print(f"{key:9}  none {s['none_us']:6} µs  flood {s['flood_us']:6} µs  "
                  f"ratio {s['ratio']:.2f}")  # fmt: skip
        ratio = summary["call_p99"]["ratio"]
        print(f"Call p99 ratio {ratio:.2f} (target <= 2): {'ok' if ratio <= 2 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
