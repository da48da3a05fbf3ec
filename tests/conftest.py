"""Shared fixtures: workers started once per module over the real protocol."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from snakepit_py.testing import FakeSupervisor

ROOT = Path(__file__).resolve().parent.parent
WORKERS = Path(__file__).resolve().parent / "workers"
sys.path.insert(0, str(ROOT))


# What a package build reads: the package and the files its metadata names.
PACKAGE_SOURCES = [
    "pyproject.toml",
    "setup.py",
    "README.md",
    "LICENSE",
    "MANIFEST.in",
    "snakepit_py",
]


def copy_package_sources(dest: Path) -> None:
    """Copy what a package build reads into ``dest`` (made here), without built artefacts."""
    dest.mkdir()
    ignore = shutil.ignore_patterns("*.so", "__pycache__", "*.pyc", "_build_note.txt")
    for name in PACKAGE_SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, dest / name, ignore=ignore)
        else:
            shutil.copy2(path, dest / name)


def worker_path(name: str) -> str:
    """Path of a test worker file under tests/workers."""
    return str(WORKERS / name)


@pytest.fixture(scope="module")
def basic() -> Iterator[FakeSupervisor]:
    """The all-purpose test worker, one process for the whole module."""
    with FakeSupervisor(worker_path("basic.py"), record=False) as sup:
        yield sup


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"


@pytest.fixture
def reap_pids() -> Iterator[list[int]]:
    """Pids a test starts; any still alive afterwards are killed (and the test already failed)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
