"""The generated API reference (docs/api/) is up to date, complete, and its examples run.

docs/api/python.md comes from the docstrings (scripts/gen_api_docs.py),
docs/api/elixir.md from the harness's @moduledoc/@doc/@spec
(scripts/gen_api_docs.exs); `make docs` writes both. Each is regenerated here
into a temporary directory and compared with the committed page, so a changed
docstring without `make docs` fails. The examples the pages show as ```pycon
run here as doctests; the ```iex ones run in the harness's
test/snakepit/doctest_test.exs (checked here to list every such module).
"""

from __future__ import annotations

import doctest
import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

API = ROOT / "docs" / "api"
HARNESS = ROOT / "elixir_harness"
# The modules whose every public function must have a @doc.
CORE_ELIXIR = ("Snakepit", "Snakepit.Pool", "Snakepit.Worker", "Snakepit.Stream")

needs_mix = [
    pytest.mark.beam,
    pytest.mark.skipif(shutil.which("mix") is None, reason="needs mix on PATH"),
]


def _generator() -> Any:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        return importlib.import_module("gen_api_docs")
    finally:
        sys.path.remove(str(ROOT / "scripts"))


def _same(page: str, fresh: Path) -> None:
    committed = (API / page).read_text()
    assert fresh.read_text() == committed, (
        f"docs/api/{page} is out of date with the source's documentation: run `make docs` "
        "and commit the result"
    )


def test_python_page_is_current(tmp_path: Path) -> None:
    # In a fresh interpreter, as `make docs` runs it; it must not import Ray or numpy
    # (grpc only because snakepit_py.client imports it).
    check = (
        "import runpy, sys; sys.argv = ['gen_api_docs.py', sys.argv[1]]; "
        "runpy.run_path('scripts/gen_api_docs.py', run_name='__main__'); "
        "bad = sorted({'ray', 'numpy'} & set(sys.modules)); "
        "assert not bad, f'the generator imported {bad}'"
    )
    subprocess.run([sys.executable, "-c", check, str(tmp_path)], cwd=ROOT, check=True, timeout=120)
    _same("python.md", tmp_path / "python.md")


def test_every_public_python_name_has_a_docstring() -> None:
    gen = _generator()
    missing = []
    for name, _ in gen.MODULES:
        module = importlib.import_module(name)
        if not gen._own_doc(module):
            missing.append(name)
        for export in gen.EXPORTS.get(name) or module.__all__:
            obj = getattr(module, export)
            if export.startswith("__") or not (callable(obj) or isinstance(obj, type)):
                continue  # __version__, constants
            if not gen._own_doc(obj):
                missing.append(f"{name}.{export}")
            if isinstance(obj, type):
                skip = gen.INTERNAL.get(f"{name}.{export}", ())
                for member, value in gen._members(obj, skip=skip):
                    if not gen._own_doc(value):
                        missing.append(f"{name}.{export}.{member}")
    assert not missing, f"public names without a docstring: {missing}"


def test_python_docstring_examples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `>>>` example of a documented name (the page's ```pycon blocks) passes,
    run from the repository's root (FakeSupervisor's starts examples/hello_worker.py)."""
    monkeypatch.chdir(ROOT)
    gen = _generator()
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests: dict[tuple[str | None, int | None], doctest.DocTest] = {}  # one per docstring
    for name, _ in gen.MODULES:
        module = importlib.import_module(name)
        for test in finder.find(module, name):
            tests.setdefault((test.filename, test.lineno), test)
        for export in gen.EXPORTS.get(name) or module.__all__:
            obj = getattr(module, export)
            if callable(obj) or isinstance(obj, type):
                # run in the globals of the module that defines it, as --doctest-modules would
                globs = dict(vars(sys.modules[getattr(obj, "__module__", name)]))
                for test in finder.find(obj, f"{name}.{export}", module=False, globs=globs):
                    tests.setdefault((test.filename, test.lineno), test)
    examples = sum(len(t.examples) for t in tests.values())
    for test in tests.values():
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed (output above)"
    shown = re.findall(r"^>>> ", (API / "python.md").read_text(), re.M)
    assert examples == len(shown), f"ran {examples} examples, the page shows {len(shown)}"


@pytest.mark.parametrize("page", ["python.md", "elixir.md"])
def test_pages_are_linked_from_the_landing_page(page: str) -> None:
    assert f"(api/{page})" in (ROOT / "docs" / "api_reference.md").read_text()


def _mix(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MIX_ENV": "dev"}
    return subprocess.run(
        ["mix", *args], cwd=HARNESS, env=env, capture_output=True, text=True, timeout=300
    )


class TestElixir:
    pytestmark = needs_mix

    def test_elixir_page_is_current(self, tmp_path: Path) -> None:
        run = _mix("run", "--no-start", "../scripts/gen_api_docs.exs", str(tmp_path))
        assert run.returncode == 0, run.stdout + run.stderr
        _same("elixir.md", tmp_path / "elixir.md")

    def test_core_modules_document_every_public_function(self) -> None:
        page = (API / "elixir.md").read_text()
        sections = dict(
            (m.group(1), m.group(2))
            for m in re.finditer(r"^## (\S+)\n(.*?)(?=^## |\Z)", page, re.M | re.S)
        )
        for module in CORE_ELIXIR:
            assert module in sections, f"{module} is not in docs/api/elixir.md (@moduledoc?)"
            body = sections[module]
            assert f"### `{module}." in body, f"{module}: no public function documented"
            entries = re.split(r"^### ", body, flags=re.M)[1:]
            undocumented = [e.split("\n", 1)[0] for e in entries if "*(no @doc)*" in e]
            assert not undocumented, f"public functions without a @doc: {undocumented}"

    def test_every_module_with_iex_examples_is_doctested(self) -> None:
        page = (API / "elixir.md").read_text()
        with_iex = [
            m.group(1)
            for m in re.finditer(r"^## (\S+)\n(.*?)(?=^## |\Z)", page, re.M | re.S)
            if "```iex" in m.group(2)
        ]
        tested = set(
            re.findall(
                r"^\s*doctest (\S+)",
                "\n".join(p.read_text() for p in (HARNESS / "test").rglob("*_test.exs")),
                re.M,
            )
        )
        assert with_iex, "docs/api/elixir.md shows no iex> example"
        missing = [m for m in with_iex if m not in tested]
        assert not missing, (
            f"modules with iex> examples but no `doctest` in elixir_harness/test: {missing}"
        )
