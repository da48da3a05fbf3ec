"""Only the C part of the build; everything else is in pyproject.toml.

The ETF codec's C accelerator (``snakepit_py/codec/_cetf.c``, see
docs/runtime.md) and the guard's process controls (``snakepit_py/_cproc.c``)
are optional: where they cannot be compiled (no C compiler, no Python
headers) the install goes on, the codec stays pure Python and the guard uses
ctypes.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("snakepit_py.codec._cetf", ["snakepit_py/codec/_cetf.c"], optional=True),
        # the guard's prctl calls without ctypes (snakepit_py/_guard.py); optional too
        Extension("snakepit_py._cproc", ["snakepit_py/_cproc.c"], optional=True),
        # a call's duration observed in C (snakepit_py/_metrics.py); optional too
        Extension("snakepit_py._cmetrics", ["snakepit_py/_cmetrics.c"], optional=True),
    ]
)
