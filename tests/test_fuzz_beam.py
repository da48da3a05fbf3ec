"""A real BEAM sends a worker 50 000 mutated frames: it keeps answering, in bounded memory.

tests/beam/fuzz_worker.exs builds the frames from protocol envelopes and
random terms with a fixed seed and mutates most of them (bit flips,
truncations, splices, random bytes, lying sizes inside the term, compressed
terms, damaged or not, frames over --max-frame, compression bombs). Every 50
frames a probe must get its exact answer, every frame the worker sends must
decode with ``binary_to_term(_, [:safe])``, the worker's RSS must stay within
64 MiB of its RSS after a warm-up, and ``{:shutdown, _}`` must end it cleanly.
About 5 s on an idle 2-core machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, worker_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.beam,
    pytest.mark.skipif(shutil.which("elixir") is None, reason="needs elixir on PATH"),
]

SCRIPT = Path(__file__).resolve().parent / "beam" / "fuzz_worker.exs"
FRAMES = 50_000
PROBE_EVERY = 50
SEED = 1
WARM_UP_PROBES = 10  # the script's 500 valid frames before the RSS baseline


def _summary(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("FUZZ_SUMMARY ")]
    assert len(lines) == 1, stdout[-4000:]
    return json.loads(lines[0].removeprefix("FUZZ_SUMMARY "))


def test_worker_keeps_answering_through_50000_mutated_frames(tmp_path: Path) -> None:
    # Given a worker behind a real Port, sent 50 000 mutated frames with a probe every 50,
    run = subprocess.run(
        [
            "elixir",
            str(SCRIPT),
            *("--frames", str(FRAMES), "--seed", str(SEED), "--probe-every", str(PROBE_EVERY)),
            *("--python", sys.executable, "--worker", worker_path("fuzz.py")),
            *("--dump", str(tmp_path / "failure.bin")),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    summary = _summary(run.stdout)
    report = json.dumps(summary, indent=1) + "\n" + run.stderr[-4000:]

    # then it answered every probe, stayed in bounds and stopped cleanly when asked,
    assert summary["frames_sent"] >= FRAMES, report
    assert summary["probes_answered"] == WARM_UP_PROBES + FRAMES // PROBE_EVERY + 1, report
    rss = summary["rss_kib"]
    assert rss["final"] <= rss["bound"], report
    # and everything it sent decoded with [:safe] into a protocol message.
    assert summary["undecodable"] == [] and summary["unexpected"] == [], report
    assert run.returncode == 0 and summary["result"] == "pass", report
