"""Every snippet in docs/ (and the README) runs.

One test per document: its ``python``, ``elixir`` and ``sh`` blocks run in
order in a scratch directory of its own, against the real package and the real
BEAM. The directory holds ``examples/`` and ``elixir_harness/`` (links to the
repository's) and, at its top, a copy of each example worker (so a snippet may
name ``ml_worker.py``), and the files the document writes. ``promql`` blocks
are queries for a Prometheus server, which this machine doesn't run: the
metrics they name are checked to exist.
tests/snippets.py says how a block is read and what the ``<!-- snippet: -->``
comments before a block change.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from snippets import DOCTEST, NOT_CODE, RUN, Block, blocks, indented_blocks, is_excerpt_of

DOCS = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
HARNESS = ROOT / "elixir_harness"
KNOWN = {"file", "continues", "pytest", "excerpt", "checked-by", "skip", "setup"}

pytestmark = [pytest.mark.beam, pytest.mark.slow]


def _env(scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    env["SNAKEPIT_PYTHON"] = sys.executable
    env.pop("PYTEST_ADDOPTS", None)
    return env


@pytest.fixture(scope="session")
def ebin() -> list[str]:
    """The compiled harness (and Elixir's own apps): code paths for `elixir -pa`."""
    if shutil.which("mix") is None:
        pytest.skip("needs mix on PATH")
    env = dict(os.environ, MIX_ENV="dev")
    done = subprocess.run(
        ["mix", "compile"], cwd=HARNESS, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [str(HARNESS / "_build/dev/lib/snakepit_py/ebin")]


def _programs(doc: Path) -> list[tuple[Block, str]]:
    """The document's runnable programs: (first block, code), continued blocks joined."""
    out: list[tuple[Block, str]] = []
    for block in blocks(doc):
        unknown = set(block.directives) - KNOWN
        assert not unknown, f"{block.where}: unknown snippet directive(s) {sorted(unknown)}"
        assert block.lang in RUN | NOT_CODE | DOCTEST, (
            f"{block.where}: a ```{block.lang} block: tag it python, elixir or sh (run), "
            "text (not code), or pycon/iex (a doctest)"
        )
        if block.lang not in RUN:
            continue
        code = block.directives.get("setup", "")
        code = code + "\n" + block.code if code else block.code
        if "continues" in block.directives:
            assert out and out[-1][0].lang == block.lang, f"{block.where}: continues nothing"
            first, before = out[-1]
            out[-1] = (first, before + code)
        else:
            out.append((block, code))
    return out


def _run(block: Block, code: str, scratch: Path, ebin: list[str]) -> None:
    env = _env(scratch)
    d = block.directives
    if "file" in d:
        (scratch / d["file"]).write_text(code)
        return
    if "excerpt" in d:
        source = (ROOT / d["excerpt"]).read_text()
        assert is_excerpt_of(code, source), f"{block.where}: not an excerpt of {d['excerpt']}"
        return
    if "checked-by" in d:
        test = (ROOT / d["checked-by"]).read_text()
        assert block.path.name in test, f"{block.where}: {d['checked-by']} doesn't read it"
        return
    name = f"snippet_{block.line}"
    if block.lang == "python":
        script = scratch / f"{name}.py"
        if "pytest" in d:
            script = scratch / f"test_{name}.py"
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", script.name]
        else:
            cmd = [sys.executable, script.name]
        script.write_text(code)
    elif block.lang == "elixir":
        script = scratch / f"{name}.exs"
        script.write_text("{:ok, _} = Application.ensure_all_started(:snakepit_py)\n" + code)
        cmd = ["elixir", *(x for p in ebin for x in ("-pa", p)), script.name]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(
        cmd, cwd=scratch, env=env, capture_output=True, text=True, timeout=300
    )  # fmt: skip
    assert done.returncode == 0, (
        f"{block.where}: the ```{block.lang} snippet failed "
        f"(exit {done.returncode}):\n{code}\n--- stdout\n{done.stdout[-4000:]}"
        f"\n--- stderr\n{done.stderr[-4000:]}"
    )


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_snippet_in_the_document_runs(doc, tmp_path, ebin):
    scratch = tmp_path / doc.stem
    scratch.mkdir()
    (scratch / "examples").symlink_to(ROOT / "examples")
    (scratch / "elixir_harness").symlink_to(HARNESS)
    for example in (ROOT / "examples").glob("*.py"):
        shutil.copy(example, scratch / example.name)
    for block, code in _programs(doc):
        if "skip" in block.directives:
            assert block.directives["skip"], f"{block.where}: a skip says why"
            continue
        _run(block, code, scratch, ebin)


def test_skipped_snippets_are_few_and_say_why():
    skipped = [
        (b.where, b.directives["skip"])
        for doc in DOCS
        for b in blocks(doc)
        if "skip" in b.directives and b.lang in RUN
    ]
    ran = sum(1 for doc in DOCS for b in blocks(doc) if b.lang in RUN)
    assert all(len(reason) > 20 for _, reason in skipped), skipped
    assert len(skipped) <= 10 and ran >= 40, (len(skipped), ran, skipped)


def test_the_metrics_promql_names_exist():
    sources = "".join(p.read_text() for p in (HARNESS / "lib").rglob("*.ex"))
    sources += "".join(p.read_text() for p in (ROOT / "snakepit_py").rglob("*.py"))
    queries = [b for doc in DOCS for b in blocks(doc) if b.lang == "promql"]
    names = {m for b in queries for m in re.findall(r"\bsnakepit_\w+", b.code)}
    assert queries and names
    for name in sorted(names):
        base = re.sub(r"_(bucket|sum|count|total)$", "", name)
        assert base.removeprefix("snakepit_") in sources, f"{name}: no such metric"


def test_no_indented_code_blocks():
    found = [f"{doc.name}:{n}" for doc in DOCS for n in indented_blocks(doc)]
    assert not found, f"fence these blocks (```python, ```elixir, ```sh or ```text): {found}"


def test_the_directive_grammar_is_read_as_documented(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text(
        "<!-- snippet: file w.py -->\n```python\nx = 1\n```\n\ntext\n"
        "<!-- snippet: setup\nimport os\n-->\n<!-- snippet: continues -->\n"
        "```python\nprint(os.sep)\n```\n"
        "<!-- snippet: skip a reason -->\n\nprose between\n```sh\necho\n```\n"
        "  ```text\n  indented\n  ```\n"
    )
    got = blocks(doc)
    assert [(b.lang, b.directives) for b in got] == [
        ("python", {"file": "w.py"}),
        ("python", {"setup": "import os", "continues": ""}),
        ("sh", {}),  # prose in between: the skip was for nothing
        ("text", {}),
    ]
    assert got[3].code == "indented\n" and got[0].line == 2
    assert is_excerpt_of("a = 1\n  ...\nc()\n", "a = 1\nb = 2\n    c()\n")
    assert not is_excerpt_of("c()\na = 1\n", "a = 1\nc()\n")
