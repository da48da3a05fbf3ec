"""Codec micro-benchmarks: snakepit_py's ETF codec against erlang-py, in the same run.

Run pinned to one core for stable numbers:

    taskset -c 0 .venv/bin/python benchmarks/bench_codec.py [--json] [--repeat N]

The two figures that matter (acceptance targets in brackets) are decoding the
call envelope ``{:call, 1, "add", [1, 2], %{}, %{timeout_ms: 5000}}`` as
``term_to_binary`` writes it [<= 3 us], and encoding ``{:ok, 1, 3}``
[<= 1.5 us]. Each figure is the best of ``--repeat`` timing rounds, per call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from snakepit_py.codec import _etf_message, etf  # noqa: E402

try:
    import erlang as erlang_py  # erlang-py, the baseline
except ImportError:  # pragma: no cover - optional baseline
    erlang_py = None

try:
    from snakepit_py.codec import msgpack as msgpack_codec
except ImportError:  # pragma: no cover - optional codec
    msgpack_codec = None

# :erlang.term_to_binary({:call, 1, "add", [1, 2], %{}, %{timeout_ms: 5000}}) on OTP 25
# (ATOM_EXT atoms, [1, 2] as STRING_EXT).
ENVELOPE_OTP25 = bytes.fromhex(
    "83680664000463616c6c61016d000000036164646b00020102740000000074000000"
    "0164000a74696d656f75745f6d736200001388"
)
# The same term as OTP 26 writes it ({:minor_version, 2}: SMALL_ATOM_UTF8_EXT atoms).
ENVELOPE_OTP26 = bytes.fromhex(
    "836806770463616c6c61016d000000036164646b00020102740000000074000000"
    "01770a74696d656f75745f6d736200001388"
)
TARGET_DECODE_US = 3.0
TARGET_ENCODE_US = 1.5


def best_us(funcs: list[Callable[[], Any] | None], repeat: int) -> list[float | None]:
    """Return the best per-call time of each function, in microseconds.

    The functions are timed in alternation, round after round, so that a
    burst of load on the machine hits the codec and its baseline alike.
    """
    timers = [timeit.Timer(func) if func is not None else None for func in funcs]
    # Short rounds (~20 ms), many of them: the best round is the one that
    # was least disturbed by whatever else runs on the machine.
    numbers = [max(t.autorange()[0] // 10, 1_000) if t is not None else 0 for t in timers]
    best: list[float | None] = [None] * len(funcs)
    for _ in range(repeat):
        for i, timer in enumerate(timers):
            if timer is None:
                continue
            per_call = timer.timeit(numbers[i]) / numbers[i] * 1e6
            current = best[i]
            best[i] = per_call if current is None else min(current, per_call)
    return best


def run(repeat: int) -> list[dict[str, Any]]:
    """Measure every case; return one row per case."""
    ok_tuple = (etf.Atom("ok"), 1, 3)
    result = {"model_id": "m-1", "scores": [0.5] * 20, "tokens": list(range(100))}
    result_bytes = etf.encode(result)
    cases: list[tuple[str, Callable[[], Any], Callable[[], Any] | None, float | None]] = [
        (
            "decode call envelope (OTP 25 bytes)",
            lambda: etf.decode(ENVELOPE_OTP25),
            (lambda: erlang_py.binary_to_term(ENVELOPE_OTP25)) if erlang_py else None,
            TARGET_DECODE_US,
        ),
        (
            "decode call envelope (OTP 26 bytes)",
            lambda: etf.decode(ENVELOPE_OTP26),
            (lambda: erlang_py.binary_to_term(ENVELOPE_OTP26)) if erlang_py else None,
            TARGET_DECODE_US,
        ),
        ("encode {:ok, 1, 3}", lambda: etf.encode(ok_tuple), None, TARGET_ENCODE_US),
        ("decode result map (~1 KB)", lambda: etf.decode(result_bytes), None, None),
        ("encode result map (~1 KB)", lambda: etf.encode(result), None, None),
        # What a worker actually runs per call: the envelope's fast path (its
        # opts seen before) and the terminal frame's, in pure Python and, when
        # it is built, with the C accelerator (docs/runtime.md).
        ("decode_message, OTP 25 (pure Python)",
         lambda: _etf_message.decode_message(ENVELOPE_OTP25), None, TARGET_DECODE_US),
        ("encode_ok(1, 3) (pure Python)", lambda: etf._python_encode_ok(1, 3), None,
         TARGET_ENCODE_US),
    ]  # fmt: skip
    c = etf._accelerator
    if c is not None:
        cases += [
            ("decode_message, OTP 25 (C)", lambda: c.decode_message(ENVELOPE_OTP25),
             None, TARGET_DECODE_US),
            ("call_fields, OTP 25 (C)", lambda: c.call_fields(ENVELOPE_OTP25), None,
             TARGET_DECODE_US),
            ("encode_ok(1, 3) (C)", lambda: c.encode_ok(1, 3), None, TARGET_ENCODE_US),
        ]  # fmt: skip
    if erlang_py is not None:
        baseline_tuple = (erlang_py.OtpErlangAtom(b"ok"), 1, 3)
        cases[2] = (
            cases[2][0],
            cases[2][1],
            lambda: erlang_py.term_to_binary(baseline_tuple),
            cases[2][3],
        )
        # erlang-py has no str type: give it the binary-keyed map it would decode.
        baseline_result = erlang_py.binary_to_term(result_bytes)
        cases[3] = (cases[3][0], cases[3][1], lambda: erlang_py.binary_to_term(result_bytes), None)
        cases[4] = (
            cases[4][0],
            cases[4][1],
            lambda: erlang_py.term_to_binary(baseline_result),
            None,
        )

    rows = []
    for name, ours, baseline, target in cases:
        ours_us, base_us = best_us([ours, baseline], repeat)
        assert ours_us is not None
        rows.append(
            {
                "case": name,
                "snakepit_us": round(ours_us, 3),
                "erlang_py_us": round(base_us, 3) if base_us is not None else None,
                "speedup": round(base_us / ours_us, 2) if base_us is not None else None,
                "target_us": target,
                "meets_target": (ours_us <= target) if target is not None else None,
            }
        )
    if msgpack_codec is not None:
        packed = msgpack_codec.encode(etf.decode(ENVELOPE_OTP26))
        rows.append(
            {
                "case": "msgpack codec: decode call envelope",
                "snakepit_us": round(
                    best_us([lambda: msgpack_codec.decode(packed)], repeat)[0] or 0, 3
                ),
                "erlang_py_us": None,
                "speedup": None,
                "target_us": None,
                "meets_target": None,
            }
        )
    return rows


def environment() -> dict[str, Any]:
    """Describe where the numbers come from."""
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_affinity": affinity,
        "erlang_py": getattr(erlang_py, "__version__", "present") if erlang_py else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--repeat", type=int, default=40, help="timing rounds per case")
    args = parser.parse_args(argv)

    rows = run(args.repeat)
    if args.json:
        print(json.dumps({"environment": environment(), "results": rows}, indent=2))
        return 0

    env = environment()
    print(f"Python {env['python']} on {env['machine']}, CPUs {env['cpu_affinity']}")
    if erlang_py is None:
        print("erlang-py not installed: no baseline (pip install erlang-py)")
    header = f"{'case':40} {'snakepit':>10} {'erlang-py':>10} {'speedup':>8} {'target':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        base = f"{row['erlang_py_us']:.2f}" if row["erlang_py_us"] is not None else "-"
        speedup = f"{row['speedup']:.2f}x" if row["speedup"] is not None else "-"
        target = "-"
        if row["target_us"] is not None:
            verdict = "ok" if row["meets_target"] else "MISS"
            target = f"{row['target_us']:.1f} {verdict}"
        print(f"{row['case']:40} {row['snakepit_us']:>8.2f}us {base:>8}us {speedup:>8} {target:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
