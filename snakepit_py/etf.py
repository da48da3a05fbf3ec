"""Erlang External Term Format on its own: ``encode``, ``decode`` and the term types.

The public name of the codec :mod:`snakepit_py.codec.etf`, without the hooks
the runtime uses (those stay on the codec: see :mod:`snakepit_py.codec`).

>>> from snakepit_py import etf
>>> data = etf.encode({"ok": (1, 2.5, [b"raw", None])})
>>> data[0]  # the version byte, as term_to_binary/1 writes it
131
>>> etf.decode(data)  # a binary that is valid UTF-8 comes back as str
{'ok': (1, 2.5, ['raw', None])}
>>> etf.decode(etf.encode(etf.Atom("error")))
Atom('error')
"""

from .codec.etf import *  # noqa: F403
from .codec.etf import __all__  # noqa: F401
