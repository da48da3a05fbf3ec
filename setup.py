"""Only the C part of the build; everything else is in pyproject.toml.

The ETF codec's C accelerator (``snakepit_py/codec/_cetf.c``, see
docs/runtime.md) and the guard's process controls (``snakepit_py/_cproc.c``)
are optional: where they cannot be compiled (no C compiler, no Python
headers) the install goes on, the codec stays pure Python and the guard uses
ctypes.

``SNAKEPIT_PY_PURE_BUILD=1`` leaves them out on purpose: the result is the
pure-Python ``py3-none-any`` wheel. A build without them says why once, in
its log and in ``snakepit_py/_build_note.txt``, which ``snakepit-py doctor``
quotes (pip hides a build's log unless asked with ``-v``).
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

PURE = os.environ.get("SNAKEPIT_PY_PURE_BUILD", "") not in ("", "0")
NOTE = "_build_note.txt"  # in the package: why a build left the accelerators out

EXTENSIONS = [
    Extension("snakepit_py.codec._cetf", ["snakepit_py/codec/_cetf.c"], optional=True),
    # the guard's prctl calls without ctypes (snakepit_py/_guard.py); optional too
    Extension("snakepit_py._cproc", ["snakepit_py/_cproc.c"], optional=True),
    # a call's duration observed in C (snakepit_py/_metrics.py); optional too
    Extension("snakepit_py._cmetrics", ["snakepit_py/_cmetrics.c"], optional=True),
]


def _note_path(cmd, inplace: bool) -> str:
    if inplace:  # an editable install imports the package from the source tree
        return os.path.join(
            cmd.get_finalized_command("build_py").get_package_dir("snakepit_py"), NOTE
        )
    return os.path.join(cmd.build_lib, "snakepit_py", NOTE)


def _write_note(path: str, text: str | None) -> None:
    if text is None:
        if os.path.exists(path):  # a stale note from an earlier build without them
            os.remove(path)
        return
    print(f"snakepit_py: {text}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")


class BuildExt(build_ext):
    """Builds each optional extension, and reports the ones that failed once, with the reason."""

    def run(self):
        self._failed = []
        inplace = self.inplace or getattr(self, "editable_mode", False)
        super().run()
        if self._failed:
            names = ", ".join(name.rsplit(".", 1)[1] for name, _ in self._failed)
            reason = self._failed[0][1].strip().splitlines()[-1] if self._failed[0][1] else "?"
            text = (
                f"built without the C accelerators ({names}): {reason}; "
                "the package works in pure Python (docs/runtime.md)"
            )
        else:
            text = None
        _write_note(_note_path(self, inplace), text)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as err:  # CCompilerError, CompileError, LinkError, DistutilsError
            self._failed.append((ext.name, str(err)))


class BuildPy(build_py):
    """In a pure build, leaves the note that says so."""

    def run(self):
        super().run()
        if PURE:
            _write_note(
                _note_path(self, getattr(self, "editable_mode", False)),
                "built without the C accelerators on purpose (SNAKEPIT_PY_PURE_BUILD=1): "
                "pure-Python wheel",
            )


setup(
    ext_modules=[] if PURE else EXTENSIONS,
    cmdclass={"build_ext": BuildExt, "build_py": BuildPy},
)
