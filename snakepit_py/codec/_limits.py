"""The limits every codec applies by default to what it decodes and encodes."""

from __future__ import annotations

DEFAULT_MAX_SIZE = 64 * 2**20
"""Largest input (and largest inflated compressed term) ``decode`` accepts, in bytes."""

# Every nesting level costs one Python frame, in the decoder and the encoder
# alike; 512 leaves ample room under CPython's default recursion limit (1000)
# even for a caller that is already a few hundred frames deep.
DEFAULT_MAX_DEPTH = 512
"""Deepest nesting of lists, tuples, maps (and funs) ``decode`` and ``encode`` accept."""
