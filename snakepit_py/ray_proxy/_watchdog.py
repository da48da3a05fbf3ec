"""Crash sweeper for a private Ray: run as a separate process by path (stdlib only).

The proxy writes ``PID STARTTIME`` lines to this process's stdin as it records
Ray's processes. When stdin reaches end of input — the proxy exited, even by
SIGKILL — every recorded process still alive is ended (SIGTERM, then SIGKILL)
and the private temp dir is removed. Ray ties its own daemons to the proxy with
PR_SET_PDEATHSIG, but not the agents the raylet starts: without this they
outlive a killed proxy.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2 :].split()
    if len(rest) < 20 or rest[0] == b"Z":
        return None
    return int(rest[19])


def sweep(procs: dict[int, int], grace: float = 0.5) -> None:
    """SIGTERM the live ones among ``procs`` ({pid: start time}); SIGKILL the rest later."""

    def alive() -> list[int]:
        return [p for p, st in procs.items() if _start_time(p) == st]

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for pid in alive():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        end = time.monotonic() + wait
        while alive() and time.monotonic() < end:
            time.sleep(0.02)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    temp_dir = sys.argv[1] if len(sys.argv) > 1 else ""
    procs: dict[int, int] = {}
    for line in sys.stdin.buffer:
        parts = line.split()
        if len(parts) == 2:
            procs[int(parts[0])] = int(parts[1])
    sweep(procs)
    if temp_dir:
        shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
