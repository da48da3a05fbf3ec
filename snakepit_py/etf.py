"""Erlang External Term Format on its own: ``encode``, ``decode``, ``Atom``, ``ImproperList``.

This is the public name of :mod:`snakepit_py.codec.etf`.
"""

from .codec.etf import *  # noqa: F403
from .codec.etf import __all__  # noqa: F401
