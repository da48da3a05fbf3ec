"""Parallel data processing on Ray, driven like any snakepit worker.

Tasks registered here run on Ray; the BEAM submits them through the bundled
proxy and watches the results stream in as each shard finishes::

    snakepit-py worker snakepit_py.ray_proxy -- --ray-address local --tasks examples/ray_parallel.py

Run this file directly for a demo with no BEAM (it drives the proxy through
FakeSupervisor over the real protocol): ``python examples/ray_parallel.py``.
The Elixir side of the same thing: ``examples/elixir/ray_parallel.exs``.
"""

from __future__ import annotations

import hashlib
import time

from snakepit_py import ray_proxy


@ray_proxy.task
def word_stats(shard: int, text: str) -> dict:
    """Count words and characters of one shard, with a content hash."""
    words = text.split()
    return {
        "shard": shard,
        "words": len(words),
        "chars": len(text),
        "longest": max(words, key=len) if words else "",
        "sha1": hashlib.sha1(text.encode()).hexdigest()[:12],
    }


def shards(n: int) -> list[list]:
    """Synthetic input: ``n`` shards of generated text (a real job would read files)."""
    base = "the quick brown fox jumps over the lazy dog snakepit beam python ray"
    return [[i, " ".join([base] * (50 + 10 * i))] for i in range(n)]


def main() -> None:
    import os

    from snakepit_py.testing import FakeSupervisor

    args = ["--ray-address", "local", "--num-cpus", "2", "--tasks", os.path.abspath(__file__)]
    with FakeSupervisor("snakepit_py.ray_proxy", worker_args=args, ready_timeout=60.0,
                        timeout=120.0) as proxy:  # fmt: skip
        started = time.monotonic()
        proxy.call("connect")
        print(f"private Ray up in {time.monotonic() - started:.1f} s")
        job = proxy.call("submit_batch", "word_stats", shards(16))
        stream = proxy.stream("results", job)
        total = 0
        for n, chunk in enumerate(stream, 1):
            total += chunk["result"]["words"]
            print(f"  [{n:2}/16] shard {chunk['index']:2}: {chunk['result']['words']} words")
        print(f"{stream.result['status']}: {total} words in {stream.result['elapsed_ms']} ms")


if __name__ == "__main__":
    main()
