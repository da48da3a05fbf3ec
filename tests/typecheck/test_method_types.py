"""What users' type checkers see of the public API: ``@snakepit.method`` keeps each
function's own type (bare, with options, on functions, methods, static- and
classmethods), so a call with wrong arguments is an error where it is written."""

from __future__ import annotations

import re
from pathlib import Path

import mypy.api

CASES = Path(__file__).parent / "cases"
ROOT = Path(__file__).resolve().parents[2]


def _mypy(case: Path, cache: Path) -> dict[int, list[str]]:
    """Run ``mypy --strict`` on ``case`` alone: {line: its notes and errors}."""
    stdout, stderr, _ = mypy.api.run(
        [
            "--strict",
            "--config-file", str(ROOT / "pyproject.toml"),
            "--follow-imports", "silent",  # the package is checked by `make typecheck`
            "--cache-dir", str(cache),
            "--no-error-summary",
            "--hide-error-context",
            str(case),
        ]
    )  # fmt: skip
    assert not stderr, stderr
    found: dict[int, list[str]] = {}
    for line in stdout.splitlines():
        m = re.match(rf"(?:.*/)?{re.escape(case.name)}:(\d+): (.*)", line)  # (mypy shortens it)
        assert m, f"mypy said something about another file: {line}"
        found.setdefault(int(m[1]), []).append(m[2])
    return found


def test_method_keeps_the_decorated_functions_type(tmp_path):
    case = CASES / "method_types.py"
    found = _mypy(case, tmp_path / "mypy_cache")
    lines = case.read_text().splitlines()
    checked = 0
    for number, text in enumerate(lines, start=1):
        said = found.pop(number, [])
        if text.startswith("reveal_type("):
            wanted = text.split("  # ", 1)[1]
            assert said == [f'note: Revealed type is "{wanted}"'], (number, text, said)
            checked += 1
        elif "  # E: " in text:
            code = text.rsplit("  # E: ", 1)[1]
            errors = [s for s in said if s.startswith("error:")]
            assert any(s.endswith(f"[{code}]") for s in errors), (number, text, said)
            checked += 1
        else:
            assert not [s for s in said if s.startswith("error:")], (number, text, said)
    assert not found, found  # nothing said about lines that are not in the file
    assert checked >= 14
