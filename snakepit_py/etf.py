"""Erlang External Term Format on its own: ``encode``, ``decode`` and the term types.

The public name of the codec :mod:`snakepit_py.codec.etf`, without the hooks
the runtime uses (those stay on the codec: see :mod:`snakepit_py.codec`).
"""

from .codec.etf import *  # noqa: F403
from .codec.etf import __all__  # noqa: F401
