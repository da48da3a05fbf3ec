"""Turn a series of Prometheus scrapes into a PNG: queue depth and latency percentiles over time.

    python benchmarks/plot_scrape.py --record scrapes.jsonl   # a load step against one worker
    python benchmarks/plot_scrape.py scrapes.jsonl docs/observability_load_step.png

A series is JSON lines ``{"t": seconds, "text": "<exposition text>"}``: any
endpoint works (``Snakepit.Metrics``, a worker's ``--metrics-addr``), e.g.
``while sleep 1; do jq -Rn --arg t $(date +%s.%N) '{t: ($t|tonumber), text: input}' \\
<(curl -s localhost:9568/metrics | jq -Rs .); done``. The plot shows, per scrape
interval, the calls waiting (``snakepit_pool_queue_depth``, else
``snakepit_inflight_calls``) and the p50/p99 of the queue wait and of the call
duration, computed from the histograms' bucket deltas the way PromQL's
``histogram_quantile(q, rate(..._bucket[1m]))`` does (linear within a bucket).

``--record`` starts ``benchmarks/bench_worker.py``-like load on a worker with
``--threads 1``: 2 callers for 3 s, then 8 for 4 s (the step), then 2 again,
each calling ``sleep_ms(5)``, scraping its endpoint every 0.25 s.
Needs ``prometheus_client`` and ``matplotlib`` (both in the dev extra).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


def parse(text: str) -> dict:
    """{(name, labels): value} of one scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def buckets(samples: dict, name: str) -> dict[float, float]:
    """Cumulative bucket counts of histogram ``name``, summed over every other label."""
    out: dict[float, float] = {}
    for (n, labels), v in samples.items():
        if n == name + "_bucket":
            le = float(dict(labels)["le"])
            out[le] = out.get(le, 0.0) + v
    return out


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float | None:
    """``histogram_quantile(q, increase)`` over the interval between two scrapes."""
    delta = sorted((le, after.get(le, 0.0) - before.get(le, 0.0)) for le in after)
    total = delta[-1][1] if delta else 0.0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for le, count in delta:
        if count >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = le, count
    return lower


def gauge(samples: dict, *names: str) -> float:
    for name in names:
        values = [v for (n, _), v in samples.items() if n == name]
        if values:
            return sum(values)
    return 0.0


def plot(series: list[dict], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parsed = [(s["t"], parse(s["text"])) for s in series]
    t0 = parsed[0][0]
    xs, depth, wait50, wait99, dur50, dur99 = [], [], [], [], [], []
    waits = "snakepit_pool_queue_wait_seconds"
    if not any(n == waits + "_bucket" for n, _ in parsed[0][1]):
        waits = "snakepit_queue_wait_seconds"
    durations = "snakepit_pool_call_duration_seconds"
    if not any(n == durations + "_bucket" for n, _ in parsed[0][1]):
        durations = "snakepit_call_duration_seconds"
    for (_, a), (t, b) in zip(parsed, parsed[1:], strict=False):
        xs.append(t - t0)
        depth.append(gauge(b, "snakepit_pool_queue_depth", "snakepit_inflight_calls"))
        for name, q, into in ((waits, 0.5, wait50), (waits, 0.99, wait99),
                              (durations, 0.5, dur50), (durations, 0.99, dur99)):  # fmt: skip
            v = quantile(q, buckets(a, name), buckets(b, name))
            into.append(None if v is None else v * 1000)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 5.5))
    top.step(xs, depth, where="post", color="tab:red")
    top.set_ylabel("calls waiting / in flight")
    top.set_title("A load step: 2 callers, then 8, then 2 (one worker, --threads 1, 5 ms calls)")
    bottom.plot(xs, wait50, label="queue wait p50", color="tab:blue", linestyle="--")
    bottom.plot(xs, wait99, label="queue wait p99", color="tab:blue")
    bottom.plot(xs, dur50, label="duration p50", color="tab:green", linestyle="--")
    bottom.plot(xs, dur99, label="duration p99", color="tab:green")
    bottom.set_ylabel("ms")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


def record(out: str) -> None:
    """Drive a load step against one worker and record its endpoint every 0.25 s."""
    from snakepit_py.testing import FakeSupervisor

    target = os.path.join(ROOT, "tests", "workers", "observed.py")
    stop = threading.Event()
    active = [2]
    series = []
    with FakeSupervisor(target, extra_args=["--metrics-addr", "127.0.0.1:0"],
                        timeout=60) as sup:  # fmt: skip
        url = f"http://{sup.ready['metrics_addr']}/metrics"

        def caller(n: int) -> None:
            while not stop.is_set():
                if n < active[0]:
                    sup.call("sleep_ms", 5)
                else:
                    time.sleep(0.01)

        threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(8)]
        for th in threads:
            th.start()
        start = time.monotonic()
        while (now := time.monotonic() - start) < 10:
            active[0] = 8 if 3 <= now < 7 else 2
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            series.append({"t": round(now, 3), "text": text})
            time.sleep(0.25)
        stop.set()
        for th in threads:
            th.join(5)
    with open(out, "w") as f:
        for s in series:
            f.write(json.dumps(s) + "\n")
    print(f"wrote {len(series)} scrapes to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("series", help="JSON lines of scrapes ({t, text})")
    parser.add_argument("png", nargs="?", help="the plot to write")
    parser.add_argument("--record", action="store_true", help="record a load step into SERIES")
    args = parser.parse_args()
    if args.record:
        record(args.series)
    if args.png:
        with open(args.series) as f:
            plot([json.loads(line) for line in f if line.strip()], args.png)


if __name__ == "__main__":
    main()
