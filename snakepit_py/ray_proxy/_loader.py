"""Importing the task modules named by ``--tasks`` at launch (never by a frame)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

from .errors import ProxyConfigError

__all__ = ["load_task_modules"]


def load_task_modules(entries: list[str]) -> tuple[list[ModuleType], list[ModuleType]]:
    """Import each ``--tasks`` entry (a dotted module or a ``.py`` file).

    Returns:
        (modules, by_value): all the modules, and those loaded from a file, whose
        functions Ray must pickle by value (a Ray worker cannot import them by name).

    Raises:
        ProxyConfigError: an entry cannot be found or imported.
    """
    modules, by_value = [], []
    for entry in entries:
        try:
            if entry.endswith(".py") or os.sep in entry:
                module = _from_file(entry)
                by_value.append(module)
            else:
                module = importlib.import_module(entry)
        except ProxyConfigError:
            raise
        except Exception as exc:
            raise ProxyConfigError(f"--tasks {entry!r}: {type(exc).__name__}: {exc}") from exc
        modules.append(module)
    return modules, by_value


def _from_file(path: str) -> ModuleType:
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ProxyConfigError(f"--tasks file not found: {path}")
    folder = os.path.dirname(path)
    if folder not in sys.path:  # so the file may import its siblings
        sys.path.insert(0, folder)
    name = os.path.splitext(os.path.basename(path))[0]
    existing = sys.modules.get(name)
    if existing is not None and os.path.abspath(getattr(existing, "__file__", "") or "") == path:
        return existing
    if not name.isidentifier() or existing is not None:
        name = "snakepit_ray_tasks_" + "".join(c if c.isalnum() else "_" for c in name)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ProxyConfigError(f"--tasks {path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
