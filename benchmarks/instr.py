"""Instructions per small call, counted by callgrind: the worker process against the floor.

    python benchmarks/instr.py                 # floor, annotated add, plain add
    python benchmarks/instr.py --only async    # an async method
    python benchmarks/instr.py --calls 2000,10000 --only annotated --phases

Each subject is started under ``valgrind --tool=callgrind`` with the Port's
framing (``{packet, 4}``) on two pipes (``--fd IN,OUT``) and fed the frames
``Snakepit.Worker`` sends for
``Snakepit.call(w, %{method: "add", args: [1, 2]})``, one at a time, each
reply awaited. It runs twice, with two call counts; the difference of the
two totals over the difference of the counts is the cost of one call, so
start-up and shutdown cancel out. Only the subject's process is counted
(user space, every thread); the driver runs outside valgrind. The count
includes the reader's sentinel thread, which looks in every few milliseconds
of wall time: under valgrind a call lasts some 50 times longer than it does
natively, so the sentinel's share is overstated (by about 1-2k instructions
per call, which is also the run-to-run spread of this figure).

Subjects:

* ``floor``: ``benchmarks/raw_echo.py``, one buffered read and one write per
  frame, echoing the call frame back (the cheapest honest peer);
* ``annotated``: the worker, ``add(a: int, b: int) -> int``;
* ``plain``: the worker, the same ``add`` without annotations;
* ``async``: the worker, ``async def async_add(a: int, b: int) -> int``.

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
    """Run ``argv`` under callgrind for ``calls`` calls; return its instructions (all threads)."""
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, SNAKEPIT_GUARD="0", PYTHONHASHSEED="0")
        proc = subprocess.Popen(
            [
                "valgrind", "--tool=callgrind", "--separate-threads=yes",
                f"--log-file={os.path.join(tmp, 'log')}",
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
        threads = [_summary(os.path.join(tmp, name)) for name in os.listdir(tmp) if name != "log"]
    if not threads:
        raise SystemExit("callgrind wrote no profile")
    return sum(threads)


def _summary(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    return 0


# In-process loops for --phases: each runs N times what a call through the Port
# does in one thread, cumulatively, so differences between them are phases.
PHASE_SCRIPT = """
import sys
from snakepit_py._registry import load_target
from snakepit_py._dispatcher import Dispatcher
from snakepit_py.codec import get_codec, etf

A = etf.Atom
phase, n, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
codec = get_codec("etf")
out = []
d = Dispatcher(load_target(target), codec, out.append, lazy_deadlines=True)
frame = etf.encode((A("call"), 7, "add", [1, 2], {}, {A("meta"): {}, A("timeout_ms"): 5000}))
fields, accept, run, table = codec.call_fields, d.accept_call, d.run_sync, d.table
run(accept(*fields(frame)))  # the first call prepares the method
out.clear()
if phase == "decode":
    for _ in range(n):
        fields(frame)
elif phase == "dispatch":
    calls = table.calls
    for _ in range(n):
        accept(*fields(frame))
        calls.clear()  # as if it ran: no terminal, no run
        table.sync_free = 1
elif phase == "call":
    for _ in range(n):
        run(accept(*fields(frame)))
        out.clear()
elif phase == "encode":
    encode_ok = codec.encode_ok
    for _ in range(n):
        encode_ok(7, 3)
elif phase == "empty":
    for _ in range(n):
        pass
"""


def phase_count(phase: str, calls: int, target: str) -> int:
    """Total instructions of the in-process loop ``phase`` run ``calls`` times."""
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "log")
        subprocess.run(
            [
                "valgrind", "--tool=callgrind", f"--log-file={log}",
                f"--callgrind-out-file={os.path.join(tmp, 'out')}",
                sys.executable, "-c", PHASE_SCRIPT, phase, str(calls), target,
            ],
            check=True, env=dict(os.environ, PYTHONHASHSEED="0"), cwd=tmp,
        )  # fmt: skip
        with open(log) as f:
            found = re.findall(r"Collected : (\d+)", f.read())
    return int(found[-1])


def phases(low: int, high: int, target: str, port_total: float) -> None:
    """Print the annotated call's instructions by phase (docs/benchmarks.md)."""
    per = {}
    for name in ("empty", "decode", "dispatch", "call", "encode"):
        a, b = (phase_count(name, n, target) for n in (low, high))
        per[name] = (b - a) / (high - low) - (0 if name == "empty" else per["empty"])
    rows = [
        ("decode: the call envelope's fields (C codec)", per["decode"]),
        ("dispatch + bind: method, arguments, context, admission", per["dispatch"] - per["decode"]),
        ("run: the method, its context, the terminal's bookkeeping",
         per["call"] - per["dispatch"] - per["encode"]),
        ("encode: {:ok, id, result} (C codec)", per["encode"]),
        ("transport: read, write, the reading thread's hand-offs", port_total - per["call"]),
    ]  # fmt: skip
    print("\nannotated add by phase (instructions per call):")
    for label, value in rows:
        print(f"  {label:58} {value:8,.0f}")
    print(f"  {'total through the Port':58} {port_total:8,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", default="2000,10000", help="two call counts, e.g. 2000,10000")
    parser.add_argument("--only", action="append", choices=["floor", "annotated", "plain", "async"])
    parser.add_argument("--phases", action="store_true", help="also the annotated call by phase")
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
            "async": (worker, "async_add", True),
        }
        results = {}
        for name in args.only or ["floor", "annotated", "plain"]:
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
        if args.phases and "annotated" in results:
            phases(low, high, target, results["annotated"])


if __name__ == "__main__":
    main()
