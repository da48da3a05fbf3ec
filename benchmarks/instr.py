"""Instructions per small call, counted by callgrind: the worker process against the floor.

    python benchmarks/instr.py                 # floor, annotated add, plain add
    python benchmarks/instr.py --calls 2000,10000 --only annotated

Each subject is started under ``valgrind --tool=callgrind`` with the Port's
framing (``{packet, 4}``) on two pipes (``--fd IN,OUT``) and fed the frames
``Snakepit.Worker`` sends for
``Snakepit.call(w, %{method: "add", args: [1, 2]})``, one at a time, each
reply awaited. It runs twice, with two call counts; the difference of the
two totals over the difference of the counts is the cost of one call, so
start-up and shutdown cancel out. Only the subject's process is counted
(user space, every thread); the driver runs outside valgrind.

Subjects:

* ``floor``: ``benchmarks/raw_echo.py``, one buffered read and one write per
  frame, echoing the call frame back (the cheapest honest peer);
* ``annotated``: the worker, ``add(a: int, b: int) -> int``;
* ``plain``: the worker, the same ``add`` without annotations.

Instruction counts do not depend on the machine's load, so this is the
figure to decide by on a noisy machine (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from snakepit_py.codec import etf  # noqa: E402

A = etf.Atom
WORKER = """
import snakepit_py as snakepit


@snakepit.method
def add(a: int, b: int) -> int:
    return a + b


@snakepit.method
def plain_add(a, b):
    return a + b
"""


def call_frame(call_id: int, method: str) -> bytes:
    """The frame Snakepit.Worker sends for a small call with the default 5 s timeout."""
    body = etf.encode(
        (A("call"), call_id, method, [1, 2], {}, {A("meta"): {}, A("timeout_ms"): 5000})
    )
    return len(body).to_bytes(4, "big") + body


def read_frame(fd: int) -> bytes:
    head = b""
    while len(head) < 4:
        more = os.read(fd, 4 - len(head))
        if not more:
            raise EOFError
        head += more
    size = int.from_bytes(head, "big")
    body = b""
    while len(body) < size:
        more = os.read(fd, size - len(body))
        if not more:
            raise EOFError
        body += more
    return body


def run(argv: list[str], method: str, calls: int, skip_ready: bool) -> int:
    """Run ``argv`` under callgrind for ``calls`` calls; return its total instructions."""
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "log")
        env = dict(os.environ, SNAKEPIT_GUARD="0", PYTHONHASHSEED="0")
        proc = subprocess.Popen(
            [
                "valgrind", "--tool=callgrind", f"--log-file={log}",
                f"--callgrind-out-file={os.path.join(tmp, 'out')}",
                *argv, "--fd", f"{to_r},{from_w}",
            ],
            pass_fds=(to_r, from_w), env=env, cwd=tmp, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_r)
        os.close(from_w)
        if skip_ready:
            read_frame(from_r)  # :ready
        frames = [call_frame(i, method) for i in range(calls)]
        for frame in frames:
            os.write(to_w, frame)
            read_frame(from_r)
        os.close(to_w)
        proc.wait(300)
        os.close(from_r)
        with open(log) as f:
            text = f.read()
    found = re.findall(r"Collected : (\d+)", text) or re.findall(r"refs:\s+([\d,]+)", text)
    if not found:
        raise SystemExit(f"no instruction count in callgrind's log:\n{text}")
    return int(found[-1].replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", default="2000,10000", help="two call counts, e.g. 2000,10000")
    parser.add_argument("--only", action="append", choices=["floor", "annotated", "plain"])
    args = parser.parse_args()
    low, high = (int(n) for n in args.calls.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, "instr_worker.py")
        with open(target, "w") as f:
            f.write(WORKER)
        worker = [sys.executable, "-m", "snakepit_py", "worker", target]
        subjects = {
            "floor": ([sys.executable, os.path.join(HERE, "raw_echo.py")], "add", False),
            "annotated": (worker, "add", True),
            "plain": (worker, "plain_add", True),
        }
        results = {}
        for name in args.only or list(subjects):
            argv, method, ready = subjects[name]
            counts = [run(argv, method, n, ready) for n in (low, high)]
            results[name] = per_call = (counts[1] - counts[0]) / (high - low)
            print(f"{name:10} {per_call:10,.0f} instructions per call", flush=True)
        if "floor" in results:
            for name in ("annotated", "plain"):
                if name in results:
                    print(f"{name:10} {results[name] / results['floor']:10.2f}x the floor")
        if "annotated" in results and "plain" in results:
            extra = results["annotated"] / results["plain"] - 1
            print(f"annotated over plain: {extra:+.1%}")


if __name__ == "__main__":
    main()
