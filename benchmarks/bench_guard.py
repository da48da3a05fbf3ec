"""What the guard costs (docs/runtime.md): start-up and memory, guard on against off.

Alternates spawns of ``snakepit-py worker examples/hello_worker.py`` with the
guard (the default) and without it (``SNAKEPIT_GUARD=0``), each timed from
spawn to the ``:ready`` frame, and reports the per-round difference (min /
median / max). Then, for one guarded worker at idle, the guard's own memory:
RSS, and its private share (``Private_Clean + Private_Dirty`` from
``/proc/PID/smaps_rollup``: what the guard adds, the rest being pages it
shares with the worker since the fork).

Run pinned to one CPU:  taskset -c 0 .venv/bin/python benchmarks/bench_guard.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from bench_port import HELLO, Peer  # noqa: E402

from snakepit_py.codec import etf  # noqa: E402


def _spawn(guard: bool) -> tuple[float, Peer, dict]:
    os.environ["SNAKEPIT_GUARD"] = "1" if guard else "0"
    p = Peer([sys.executable, "-m", "snakepit_py", "worker", HELLO])
    info = etf.decode(p.recv())[1]
    return time.perf_counter() - p.t0, p, info


def _kb(pid: int, fields: tuple[str, ...]) -> int:
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in fields:
                total += int(rest.split()[0])
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=21)
    n = ap.parse_args().rounds
    _spawn(True)[1].close()  # warm the page cache
    on, off, diff = [], [], []
    for _ in range(n):
        t_on, p, _ = _spawn(True)
        p.close()
        t_off, p, _ = _spawn(False)
        p.close()
        on.append(t_on * 1e3)
        off.append(t_off * 1e3)
        diff.append((t_on - t_off) * 1e3)
    _, p, info = _spawn(True)
    time.sleep(0.3)
    guard, worker = p.pid, info[etf.Atom("pid")]
    assert guard != worker, "the worker ran unguarded"
    rss = _kb(guard, ("Rss",))
    private = _kb(guard, ("Private_Clean", "Private_Dirty"))
    worker_rss = _kb(worker, ("Rss",))
    p.close()
    os.environ.pop("SNAKEPIT_GUARD")

    def mmm(xs: list[float]) -> str:
        return f"{min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f}"

    print(f"spawn -> :ready, guard on   (ms, min/median/max): {mmm(on)}")
    print(f"spawn -> :ready, guard off  (ms, min/median/max): {mmm(off)}")
    print(f"difference per round, on - off (ms):              {mmm(diff)}")
    print(f"idle guard: RSS {rss / 1024:.1f} MB, private {private / 1024:.2f} MB "
          f"(the worker beside it: RSS {worker_rss / 1024:.1f} MB)")  # fmt: skip


if __name__ == "__main__":
    main()
