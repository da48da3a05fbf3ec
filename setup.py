"""Only the C part of the build; everything else is in pyproject.toml.

The ETF codec's C accelerator (``snakepit_py/codec/_cetf.c``, see
docs/runtime.md) is optional: where it cannot be compiled (no C compiler, no
Python headers) the install goes on and the codec stays pure Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("snakepit_py.codec._cetf", ["snakepit_py/codec/_cetf.c"], optional=True),
    ]
)
