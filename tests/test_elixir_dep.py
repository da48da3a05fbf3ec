"""The Elixir half as a dependency: a scratch mix project depends on the harness by path.

What docs/elixir.md tells a user to write, done for real: a new mix project
with the dependency tuples of docs/elixir.md's snippets in its deps (no hex;
the path or URL made this repository's), compiled, starting a pool of real
Python workers from its own code and calling them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT
from snippets import blocks

pytestmark = [
    pytest.mark.beam,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("mix") is None, reason="needs mix on PATH"),
]

MIX_EXS = """
defmodule MyApp.MixProject do
  use Mix.Project

  def project do
    [app: :my_app, version: "0.1.0", elixir: "~> 1.14", deps: deps()]
  end

  def application, do: [extra_applications: [:logger]]

  defp deps do
    [DEP]
  end
end
"""

APP = """
defmodule MyApp do
  def run(worker) do
    {:ok, _} = Snakepit.Pool.start_link(name: :my_pool, target: worker, size: 2)
    {:ok, 42} = Snakepit.call(:my_pool, %{method: "add", args: [40, 2]})

    {:error, %Snakepit.Error{kind: :exception, type: "ValueError"}} =
      Snakepit.call(:my_pool, %{method: "fail", args: []})

    loaded = for {app, _, _} <- Application.loaded_applications(), do: app
    IO.puts("loaded: #{:snakepit_py in loaded} #{:snakepit in loaded}")
    IO.puts("stats: #{Snakepit.Pool.stats(:my_pool).workers}")
    IO.puts("answered")
  end
end
"""

WORKER = """
import snakepit_py as snakepit

@snakepit.method
def add(a: int, b: int) -> int:
    return a + b

@snakepit.method
def fail():
    raise ValueError("on purpose")
"""


def _doc_dep(key: str) -> str:
    """The `{:snakepit_py, ...}` tuple of the docs/elixir.md snippet that uses ``key``."""
    for block in blocks(ROOT / "docs" / "elixir.md"):
        found = re.search(r"\{:snakepit_py,[^{}]*\}", block.code)
        if found and f"{key}:" in found.group(0):
            assert block.directives.get("checked-by") == "tests/test_elixir_dep.py"
            return found.group(0)
    raise AssertionError(f"docs/elixir.md has no {key}: dependency")


def _scratch_project(tmp_path, dep: str):
    app = tmp_path / "my_app"
    (app / "lib").mkdir(parents=True)
    (app / "mix.exs").write_text(MIX_EXS.replace("DEP", dep))
    (app / "lib" / "my_app.ex").write_text(APP)
    (app / "worker.py").write_text(WORKER)
    env = {
        "PATH": f"{sys.exec_prefix}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),  # no ~/.mix, no ~/.hex: nothing fetched or cached
        "MIX_ENV": "dev",
        "SNAKEPIT_PYTHON": sys.executable,
        "LANG": "C.UTF-8",
    }
    return app, env


def _compile_and_call(app, env):
    compiled = subprocess.run(
        ["mix", "compile"], cwd=app, env=env, capture_output=True, text=True, timeout=300
    )
    assert compiled.returncode == 0, compiled.stdout[-3000:] + compiled.stderr[-3000:]
    assert "warning" not in compiled.stdout + compiled.stderr
    assert (app / "_build/dev/lib/snakepit_py/ebin/snakepit_py.app").exists()
    run = subprocess.run(
        ["mix", "run", "-e", 'MyApp.run("worker.py")'],
        cwd=app, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip

    # its code called a real Python worker; the OTP app is :snakepit_py, not :snakepit
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "loaded: true false" in run.stdout
    assert "stats: 2" in run.stdout
    assert "answered" in run.stdout


def test_a_new_mix_project_depends_on_the_harness_by_path(tmp_path):
    # Given a new mix project whose only dependency is the harness, by path
    harness = ROOT / "elixir_harness"
    dep = re.sub(r'path: "[^"]*"', f'path: "{harness}"', _doc_dep("path"))
    app, env = _scratch_project(tmp_path, dep)
    # When it compiles (the harness as a dep, then the app) and runs, then
    _compile_and_call(app, env)


def test_a_new_mix_project_depends_on_the_harness_by_git_sparse(tmp_path):
    # Given the repository as a git remote (this clone's committed main) and a
    # project taking only its elixir_harness directory
    url = f"file://{ROOT}"
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dep = re.sub(r'git: "[^"]*"', f'git: "{url}"', _doc_dep("git"))
    dep = re.sub(r'tag: "[^"]*"', f'ref: "{head}"', dep)
    assert 'sparse: "elixir_harness"' in dep
    app, env = _scratch_project(tmp_path, dep)
    env["PATH"] += ":" + os.path.dirname(shutil.which("git") or "/usr/bin/git")
    fetched = subprocess.run(
        ["mix", "deps.get"], cwd=app, env=env, capture_output=True, text=True, timeout=300
    )
    assert fetched.returncode == 0, fetched.stdout[-3000:] + fetched.stderr[-3000:]
    # the checkout holds the harness alone, and Mix finds the project inside it
    assert sorted(p.name for p in (app / "deps/snakepit_py").iterdir() if p.name != ".git") == [
        "elixir_harness"
    ]
    # When it compiles and runs, then
    _compile_and_call(app, env)
