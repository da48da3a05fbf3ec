"""Which optional C accelerators this install uses, and why not when it doesn't."""

from __future__ import annotations

import importlib
import os

# (module, what it speeds up); each is optional (setup.py), with a Python fallback
ACCELERATORS = (
    ("snakepit_py.codec._cetf", "ETF codec"),
    ("snakepit_py._cproc", "guard process controls (else ctypes)"),
    ("snakepit_py._cmetrics", "call-duration metrics"),
)


def build_note() -> str | None:
    """What the build said when it left the accelerators out (setup.py), or None."""
    path = os.path.join(os.path.dirname(__file__), "_build_note.txt")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


def status() -> dict[str, str | None]:
    """Each accelerator's module name -> None when it imports, else why not (the error text)."""
    out: dict[str, str | None] = {}
    for name, _ in ACCELERATORS:
        try:
            importlib.import_module(name)
        except ImportError as err:
            out[name] = f"{type(err).__name__}: {err}"
        else:
            out[name] = None
    if os.environ.get("SNAKEPIT_PY_PURE") and out["snakepit_py.codec._cetf"] is None:
        out["snakepit_py.codec._cetf"] = "SNAKEPIT_PY_PURE is set: the codec runs in pure Python"
    return out


def summary() -> str:
    """One line: whether the C accelerators are in use, and if not, why."""
    st = status()
    missing = {n: why for n, why in st.items() if why is not None}
    if not missing:
        return "C accelerators: in use"
    names = ", ".join(n.rsplit(".", 1)[1] for n in missing)
    why = build_note() or next(iter(missing.values()))
    if len(missing) == len(st):
        return f"C accelerators: not in use ({why})"
    return f"C accelerators: {names} not in use ({why})"


def report() -> str:
    """Several lines for ``snakepit-py doctor``: each accelerator, the build's note."""
    import platform
    import sys

    from ._version import __version__

    lines = [
        f"snakepit_py {__version__} at {os.path.dirname(os.path.abspath(__file__))}",
        f"Python {platform.python_version()} ({sys.executable})",
        summary(),
    ]
    for (name, what), why in zip(ACCELERATORS, status().values(), strict=True):
        state = "in use" if why is None else f"not in use: {why}"
        lines.append(f"  {name:<24} {what}: {state}")
    note = build_note()
    if note:
        lines.append(f"  build: {note}")
    return "\n".join(lines)
