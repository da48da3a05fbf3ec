"""Line coverage by package area, from the combined coverage data of a test run.

    .venv/bin/python -m coverage run -m pytest && .venv/bin/python -m coverage combine -q
    .venv/bin/python scripts/coverage_report.py [--check]

The core runtime (the codec, the dispatcher and what runs calls, the
registry, the call context, the transports) must be covered at 95 % or more,
the rest of the package at 80 % or more; ``--check`` exits 1 when either is
not (docs/testing.md).
"""

from __future__ import annotations

import argparse
import os
import sys

import coverage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "snakepit_py")
# Files of the core runtime, by their path under snakepit_py/ (a folder ends in /).
CORE = (
    "codec/", "transport/", "_dispatcher.py", "_calls.py", "_context.py", "_health.py",
    "_registry.py", "_target.py", "_wire.py", "_timers.py", "_server.py",
)  # fmt: skip
TARGETS = {"core runtime": 95.0, "the rest": 80.0}


def _area(rel: str) -> str:
    """The package area of a file: its folder, or the module for top-level files."""
    head, _, tail = rel.partition("/")
    return head + "/" if tail else rel


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 below the targets")
    args = ap.parse_args()
    cov = coverage.Coverage(config_file=os.path.join(ROOT, "pyproject.toml"))
    cov.load()
    areas: dict[str, list[int]] = {}
    groups = {name: [0, 0] for name in TARGETS}
    for path in sorted(cov.get_data().measured_files()):
        rel = os.path.relpath(path, PACKAGE).replace(os.sep, "/")
        if rel.startswith("..") or rel.startswith("_proto/"):
            continue
        _, statements, _, missing, _ = cov.analysis2(path)
        counts = areas.setdefault(_area(rel), [0, 0])
        group = groups["core runtime" if rel.startswith(CORE) else "the rest"]
        for target in (counts, group):
            target[0] += len(statements)
            target[1] += len(statements) - len(missing)
    print(f"{'area':<28} {'lines':>7} {'covered':>8}")
    for name, (lines, hit) in sorted(areas.items()):
        print(f"{name:<28} {lines:>7} {100.0 * hit / max(lines, 1):>7.1f}%")
    failed = False
    print()
    for name, (lines, hit) in groups.items():
        pct = 100.0 * hit / max(lines, 1)
        ok = pct >= TARGETS[name]
        failed |= not ok
        print(f"{name:<28} {lines:>7} {pct:>7.1f}%  target >= {TARGETS[name]:.0f}%"
              f"  {'ok' if ok else 'BELOW'}")  # fmt: skip
    return 1 if failed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
